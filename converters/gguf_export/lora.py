"""LoRA adapters in GGUF, as llama.cpp's ``convert_lora_to_gguf.py`` writes them and ``llama-adapter.cpp``
loads them, mapped onto a Hugging Face base through the export's own tensor plan.

A GGUF LoRA names each pair after the base tensor it adapts (``blk.0.attn_q.weight.lora_a`` /
``.lora_b``), with ``general.type = "adapter"``, ``adapter.type = "lora"`` and one ``adapter.lora.alpha``:
llama.cpp scales each product by ``alpha / rank`` (by 1 when alpha is 0), the rank being the pair's own.
In numpy order ``lora_a`` is PEFT's ``lora_A`` ``[r, in]`` and ``lora_b`` its ``lora_B`` ``[out, r]``; the
base tensor's transform applies to the rows of ``lora_b`` (llama.cpp's q/k row permutation for
Llama-family models), never to ``lora_a``. ``lora_targets`` gives that mapping per base module, from the
same ``plan`` the model export writes with, so a base and its adapters are named and permuted alike.

``write_gguf_lora`` turns a PEFT LoRA directory into such a file. What llama.cpp would apply differently
from PEFT (per-module alphas it cannot express, biases, fan-in-fan-out layers) is an ``UnsupportedExport``.
``merge_loras`` instead folds PEFT LoRAs into a loaded source's weights (an export of a model with
adapters: one file, the adapters' outputs, in any llama.cpp).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnsupportedExport
from .writer import Source, load_source, plan


@dataclass(frozen=True)
class LoraTarget:
    """One base Linear a GGUF LoRA can adapt: its Hugging Face module and GGUF tensor names, its
    ``[out, in]`` shape, and the row transform of ``lora_b`` each way."""

    module: str  # model.layers.0.self_attn.q_proj
    tensor: str  # blk.0.attn_q.weight
    shape: tuple[int, int]
    to_gguf: Callable[[np.ndarray], np.ndarray]
    from_gguf: Callable[[np.ndarray], np.ndarray]


def lora_targets(base_dir: Path) -> tuple[str, dict[str, LoraTarget]]:
    """llama.cpp's architecture for the base in ``base_dir`` (its config.json is enough) and the targets
    keyed by Hugging Face module name. ``UnsupportedExport`` for a base the GGUF export does not cover."""
    import gguf

    src = load_source(base_dir, weights=False)
    embeddings = (gguf.MODEL_TENSOR.TOKEN_EMBD, gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)
    targets: dict[str, LoraTarget] = {}
    for group in plan(src):
        if len(group.hf_names) != 1 or len(group.outputs) != 1:
            continue  # split experts, computed tensors: no single Linear behind them
        hf_name, out = group.hf_names[0], group.outputs[0]
        if not hf_name.endswith(".weight") or len(out.shape) != 2 or out.kind in embeddings:
            continue
        module = hf_name.removesuffix(".weight")
        targets[module] = LoraTarget(module, out.name, (out.shape[0], out.shape[1]), _rows(group.forward), _rows(group.inverse))
    return src.family.arch, targets


def _rows(transform: Callable[[list[np.ndarray]], list[np.ndarray]]) -> Callable[[np.ndarray], np.ndarray]:
    """A group's weight transform applied to ``lora_b`` alone: the permutations only move rows, and
    ``(P B) A = P (B A)``."""

    def apply(b: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(transform([b])[0], dtype=np.float32)

    return apply


def write_gguf_lora(adapter_dir: Path, base_dir: Path, out_path: Path) -> Path:
    """Write the PEFT LoRA in ``adapter_dir`` (trained on the base in ``base_dir``) as a float32 GGUF LoRA at
    ``out_path``, the file ``convert_lora_to_gguf.py --outtype f32`` writes; returns ``out_path``."""
    import gguf
    from safetensors.numpy import load_file

    from ..lora import WEIGHTS, UnsupportedAdapter, read_adapter

    try:
        adapter = read_adapter(Path(adapter_dir))
    except UnsupportedAdapter as exc:
        raise UnsupportedExport(str(exc)) from None
    if adapter.fan_in_fan_out or any(m.bias for m in adapter.modules):
        raise UnsupportedExport("LoRA biases and fan-in-fan-out (Conv1D) adapters have no GGUF LoRA form")
    alpha = _one_alpha([(m.module, m.rank, m.scaling) for m in adapter.modules])
    arch, targets = lora_targets(Path(base_dir))
    tensors = load_file(str(Path(adapter_dir) / WEIGHTS))
    pairs: list[tuple[str, np.ndarray]] = []
    for m in adapter.modules:
        target = targets.get(m.module)
        if target is None:
            raise UnsupportedExport(f'target module "{m.module}" has no tensor in llama.cpp\'s "{arch}" model')
        if target.shape != (m.out_features, m.in_features):
            raise UnsupportedExport(f'"{m.module}" is {list(target.shape)} in the base, the adapter is for [{m.out_features}, {m.in_features}]')
        a, b = (_tensor(tensors, m.module, part).astype(np.float32) for part in ("lora_A", "lora_B"))
        pairs += [(f"{target.tensor}.lora_a", np.ascontiguousarray(a)), (f"{target.tensor}.lora_b", target.to_gguf(b))]

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.partial-", dir=out_path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        for name, data in pairs:
            writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path


def _tensor(tensors: dict[str, Any], module: str, part: str, kind: str = "weight") -> Any:
    """PEFT's key for a module's ``lora_A``/``lora_B``, with or without the ``base_model.model.`` prefix."""
    key = f"{module}.{part}.{kind}"
    return tensors[f"base_model.model.{key}"] if f"base_model.model.{key}" in tensors else tensors[key]


def _one_alpha(modules: list[tuple[str, int, float]]) -> float:
    """The single alpha llama.cpp scales every pair by (``alpha / rank``): PEFT's per-module scaling times
    the rank must agree across modules (rsLoRA with one rank and rank patterns fold in; alpha patterns that
    differ cannot)."""
    alphas = {module: scaling * rank for module, rank, scaling in modules}
    first = next(iter(alphas.values()))
    for module, value in alphas.items():
        if not math.isclose(value, first, rel_tol=1e-6):
            raise UnsupportedExport(
                f"llama.cpp applies one LoRA alpha to every module; this adapter scales {module} by {value:g}/rank "
                f"and others by {first:g}/rank"
            )
    return float(first)


def merge_loras(source: Source, adapter_dirs: list[Path], *, keep_dtype: bool) -> list[str]:
    """Merge the PEFT LoRAs in ``adapter_dirs`` into ``source``'s weights, in place, as PEFT's
    ``merge_and_unload`` does: ``W + scaling * B @ A`` (transposed for fan-in-fan-out layers, the
    ``lora_B`` bias times scaling added to the layer's bias), computed in float32. ``keep_dtype``: the merged
    weight is cast back to the base's type (an export in the weights' own type); otherwise it stays float32
    for the quantizer. Returns the modules changed. ``UnsupportedExport`` for a module or bias the base lacks."""
    import torch
    from safetensors.torch import load_file

    from ..lora import WEIGHTS, UnsupportedAdapter, read_adapter

    changed: list[str] = []
    for adapter_dir in adapter_dirs:
        try:
            adapter = read_adapter(Path(adapter_dir))
        except UnsupportedAdapter as exc:
            raise UnsupportedExport(str(exc)) from None
        tensors = load_file(str(Path(adapter_dir) / WEIGHTS))
        for m in adapter.modules:
            weight = source.state.get(f"{m.module}.weight")
            if weight is None:
                raise UnsupportedExport(f'the adapter targets "{m.module}", which the base model has no weight for')
            a, b = (_tensor(tensors, m.module, part).to(torch.float32) for part in ("lora_A", "lora_B"))
            delta = (b @ a) * m.scaling
            if adapter.fan_in_fan_out:
                delta = delta.T
            source.state[f"{m.module}.weight"] = _merged(weight, delta, keep_dtype)
            if m.bias:
                bias = source.state.get(f"{m.module}.bias")
                if bias is None:
                    raise UnsupportedExport(f'the adapter adds a bias to "{m.module}", which has none in the base model')
                lora_bias = _tensor(tensors, m.module, "lora_B", "bias").to(torch.float32)
                source.state[f"{m.module}.bias"] = _merged(bias, lora_bias * m.scaling, keep_dtype)
            changed.append(m.module)
    return changed


def _merged(base: Any, delta: Any, keep_dtype: bool) -> Any:
    if tuple(base.shape) != tuple(delta.shape):
        raise UnsupportedExport(f"an adapter update of shape {list(delta.shape)} does not fit a weight of {list(base.shape)}")
    import torch

    merged = base.detach().to(torch.float32) + delta
    return merged.to(base.dtype) if keep_dtype else merged
