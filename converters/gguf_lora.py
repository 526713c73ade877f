"""GGUF LoRA adapter -> PEFT adapter directory, converted once when a model is created.

Ollama takes LoRA adapters as GGUF files (llama.cpp's ``convert_lora_to_gguf.py`` writes them); our engine
serves PEFT adapters. ``gguf_lora_to_peft`` turns the one into the other for a given Hugging Face base, so
the PEFT checks (``lora.check_against_base``) and the serving path take it unchanged and the product each
module adds is the one llama.cpp adds:

- names: ``blk.N.<kind>.weight.lora_a``/``.lora_b`` map back to the base's module through the GGUF export's
  tensor plan (``gguf_export.lora.lora_targets``), which also undoes the q/k row permutation llama.cpp's
  Llama-family conversion applies (to ``lora_b`` only: it permutes output rows);
- shapes: ggml lists dimensions fastest first, so a ``lora_a`` of ``ne = {in, r}`` is PEFT's ``lora_A``
  ``[r, in]`` and ``lora_b`` ``{r, out}`` is ``lora_B`` ``[out, r]``; the rank is each pair's own;
- scale: llama.cpp multiplies by ``alpha / rank`` (1 when ``adapter.lora.alpha`` is 0 or missing), which
  is PEFT's ``lora_alpha / r`` with ``rank_pattern``/``alpha_pattern`` where ranks differ;
- types: every tensor is dequantized with the ``gguf`` package (what llama.cpp multiplies by) to float32.

Norm vectors some tools add (``*_norm.weight``) are skipped, as llama.cpp skips them. Everything else that
cannot be represented (another adapter type, another architecture than the base's, a tensor with no base
module, mismatched shapes, an activated LoRA) is an :class:`~converters.lora.UnsupportedAdapter` naming it,
raised before anything is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .gguf_info import read_gguf_info
from .lora import CONFIG, WEIGHTS, UnsupportedAdapter

_PAIR = re.compile(r"^(?P<tensor>.+)\.lora_(?P<part>[ab])$")


def gguf_lora_to_peft(gguf_path: Path, base_dir: Path, out_dir: Path) -> Path:
    """Write the PEFT form of the GGUF LoRA at ``gguf_path`` for the base whose config.json is in
    ``base_dir`` into ``out_dir`` (created; renamed into place at the end); returns ``out_dir``."""
    from gguf import GGUFReader

    from .gguf_export import UnsupportedExport
    from .gguf_export.lora import lora_targets

    metadata = _metadata(Path(gguf_path))
    try:
        arch, targets = lora_targets(Path(base_dir))
    except UnsupportedExport as exc:
        raise UnsupportedAdapter(f"GGUF LoRA adapters need a base model the GGUF export covers: {exc}") from None
    adapter_arch = str(metadata.get("general.architecture") or "unknown")
    if adapter_arch != arch:
        raise UnsupportedAdapter(f'the GGUF adapter is for a "{adapter_arch}" model, but the base model is "{arch}" in llama.cpp')
    try:
        reader = GGUFReader(gguf_path)
    except Exception as exc:  # the gguf package raises ValueError, KeyError or struct errors on a bad file
        raise UnsupportedAdapter(f"the GGUF adapter cannot be read: {exc}") from None
    by_tensor = {t.tensor: t for t in targets.values()}
    pairs = _pairs(reader, by_tensor)
    tensors: dict[str, np.ndarray] = {}
    ranks: dict[str, int] = {}
    for tensor, (a_info, b_info) in sorted(pairs.items()):
        target = by_tensor[tensor]
        a, b = _read(a_info), _read(b_info)
        out_f, in_f = target.shape
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != in_f or b.shape[0] != out_f or a.shape[0] != b.shape[1] or a.shape[0] == 0:
            raise UnsupportedAdapter(
                f"{tensor}: lora_a {list(a.shape)} and lora_b {list(b.shape)} (numpy order) do not fit the base's "
                f"{target.module} [{out_f}, {in_f}] as [r, {in_f}] and [{out_f}, r]"
            )
        key = f"base_model.model.{target.module}"
        tensors[f"{key}.lora_A.weight"] = np.ascontiguousarray(a)
        tensors[f"{key}.lora_B.weight"] = target.from_gguf(b)
        ranks[target.module] = int(a.shape[0])
    alpha = float(metadata.get("adapter.lora.alpha") or 0.0)
    return _write(Path(out_dir), _peft_config(ranks, alpha), tensors)


def _metadata(path: Path) -> dict[str, Any]:
    try:
        info = read_gguf_info(path)
    except Exception as exc:  # a hostile header: ValueError, struct.error, UnicodeDecodeError...
        raise UnsupportedAdapter(f"the adapter is not a readable GGUF file: {exc}") from None
    meta = info.metadata
    if info.general_type != "adapter":
        raise UnsupportedAdapter(f'the GGUF file is not an adapter (general.type is "{info.general_type or "model"}")')
    kind = str(meta.get("adapter.type") or "")
    if kind != "lora":
        raise UnsupportedAdapter(f'unsupported GGUF adapter type "{kind or "unknown"}": only LoRA adapters are supported')
    if meta.get("adapter.alora_invocation_tokens") is not None:
        raise UnsupportedAdapter("activated LoRA adapters (adapter.alora_invocation_tokens) are not supported")
    return meta


def _pairs(reader: Any, by_tensor: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Base tensor name -> (its lora_a, its lora_b) reader tensors; every other tensor refused but the
    norms llama.cpp itself skips."""
    found: dict[str, dict[str, Any]] = {}
    for t in reader.tensors:
        match = _PAIR.match(t.name)
        if match is None:
            if t.name.endswith("_norm.weight"):
                continue  # llama.cpp ignores these (mergekit-extract-lora adds them)
            raise UnsupportedAdapter(f'unexpected tensor "{t.name}" in the GGUF adapter: only .lora_a/.lora_b pairs are supported')
        tensor = match["tensor"]
        if tensor.startswith("token_embd."):
            raise UnsupportedAdapter("LoRA on the token embedding (token_embd.weight) is not supported")
        if tensor not in by_tensor:
            raise UnsupportedAdapter(f'the GGUF adapter adapts "{tensor}", which the base model has no linear layer for')
        found.setdefault(tensor, {})[match["part"]] = t
    if not found:
        raise UnsupportedAdapter("the GGUF adapter holds no LoRA tensors")
    for tensor, parts in found.items():
        if set(parts) != {"a", "b"}:
            raise UnsupportedAdapter(f'"{tensor}" has only its lora_{next(iter(parts))} in the GGUF adapter')
    return {tensor: (parts["a"], parts["b"]) for tensor, parts in found.items()}


def _read(t: Any) -> np.ndarray:
    """A reader tensor as float32 in numpy order (ggml's shape reversed), dequantized if need be."""
    from gguf import dequantize

    shape = tuple(int(n) for n in reversed(list(t.shape)))
    try:
        data = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
    except (NotImplementedError, ValueError) as exc:
        raise UnsupportedAdapter(f'tensor "{t.name}" ({t.tensor_type.name}, {list(t.shape)}) cannot be read: {exc}') from None
    return np.ascontiguousarray(data)


def _peft_config(ranks: dict[str, int], alpha: float) -> dict[str, Any]:
    """adapter_config.json for these ranks: ``r``/``lora_alpha`` for the most common rank, patterns for the
    others, so each module's scaling is llama.cpp's ``alpha / rank`` (1 without an alpha)."""
    r = Counter(ranks.values()).most_common(1)[0][0]
    other = {re.escape(module): rank for module, rank in ranks.items() if rank != r}
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": alpha if alpha else r,
        "rank_pattern": other,
        "alpha_pattern": {} if alpha else dict(other),
        "target_modules": sorted(ranks),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
        "base_model_name_or_path": None,
    }


def _write(out_dir: Path, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
