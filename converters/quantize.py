"""Rewrite a Hugging Face Safetensors directory's weights for a ``QuantScheme`` (see ``quantize_schemes``).

Owns producing, one tensor at a time, a checkpoint ``from_pretrained`` loads pre-quantized: no
re-quantization at load and no need for the original weights. For bitsandbytes schemes it is the exact
checkpoint a bitsandbytes-quantized Transformers model saves (``save_pretrained``), serialized by
bitsandbytes' own ``QuantState.as_dict(packed=True)`` and ``int8_vectorwise_quant``
(``tests/converters/test_quantize.py`` checks it key for key against Transformers' quantize-and-save); for
int4 it is the format of ``ollama_torch/engine/int4.py``. Which Linear layers are quantized is decided the
way Transformers' loader decides it (the model built on the meta device, ``get_keys_to_not_convert`` plus
the model's fp32-kept modules), and the kept list is written into the stored ``quantization_config`` so
load and quantize can never disagree. Every target Linear must have its weight in the checkpoint, or the
conversion fails naming it.

Only files that change are written to ``out_dir``: ``config.json``, every weight shard (same names) and the
shard index. The caller stores them as new layers and keeps the other files' layers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .quantize_schemes import QuantScheme, UnsupportedQuantization

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
INDEX = "model.safetensors.index.json"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _bnb() -> Any:
    # bitsandbytes logs a warning at import on CPUs with AVX512-BF16 when the optional ``kernels`` hub
    # package is absent (its own CPU kernel is used instead), and one on every int8 matmul whose input
    # is not float16: noise in a server log.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError as exc:
        raise UnsupportedQuantization(f"quantization needs bitsandbytes, which is not installed: {exc}") from None
    return bitsandbytes


def weight_files(src: Path) -> list[str]:
    """The directory's weight shards (relative names), from the index when there is one."""
    index = src / INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
        return sorted(set(weight_map.values()))
    return sorted(p.name for p in src.glob("*.safetensors"))


def bnb_config(scheme: QuantScheme, skip: list[str]) -> dict[str, Any]:
    """``quantization_config`` for config.json, as ``BitsAndBytesConfig.to_dict`` writes it."""
    from transformers import BitsAndBytesConfig

    dtype = _DTYPES[scheme.dtype]
    if scheme.method == "int8":
        cfg = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=scheme.int8_threshold, llm_int8_skip_modules=skip)
    else:
        cfg = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=scheme.method,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=scheme.double_quant,
            bnb_4bit_quant_storage=torch.uint8,
            llm_int8_skip_modules=skip,
        )
    return cfg.to_dict()


def quantization_targets(config: Any, group_size: int = 0) -> tuple[list[str], list[str]]:
    """(Linear modules to quantize, modules kept) for a model config, as Transformers' loader sees them.

    With ``group_size`` (int4), a Linear whose input width is not a multiple of it is kept too."""
    import transformers
    from torch import nn
    from transformers.quantizers.base import get_keys_to_not_convert
    from transformers.quantizers.quantizers_utils import should_convert_module

    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is None:
        raise UnsupportedQuantization(f'cannot quantize architecture "{archs[0] if archs else config.model_type}"')
    with torch.device("meta"):
        model = cls(config)
    skip = set(get_keys_to_not_convert(model))
    skip |= set(getattr(model, "_keep_in_fp32_modules", None) or [])
    # GPT-2 style Conv1D layers store their weight transposed; they are kept rather than special-cased.
    skip |= {name for name, m in model.named_modules() if type(m).__name__ == "Conv1D"}
    if group_size:
        skip |= {name for name, m in model.named_modules() if type(m) is nn.Linear and m.in_features % group_size}
    # A head of fewer than 16 outputs (a reranker's one relevance logit, a classifier's labels) is kept: PyTorch's
    # int4 kernel packs output rows by sixteen and bitsandbytes' 4-bit layers cannot hold one row, and such a
    # head is a negligible part of the weights.
    skip |= {name for name, m in model.named_modules() if type(m) is nn.Linear and m.out_features < 16}
    keep = sorted(skip)
    targets = [
        name for name, m in model.named_modules() if type(m) is nn.Linear and should_convert_module(name, keep)
    ]
    if not targets:
        raise UnsupportedQuantization(f'cannot quantize architecture "{archs[0]}": it has no Linear layers to quantize')
    return targets, keep


def _quantize_weight(w: torch.Tensor, key: str, scheme: QuantScheme, device: torch.device) -> dict[str, torch.Tensor]:
    """The state-dict entries bitsandbytes' Linear4bit / Linear8bitLt save for this weight."""
    prefix = key.removesuffix("weight")  # "model.layers.0.mlp.down_proj."
    if scheme.method == "int4":
        from converters.int4 import quantize_int4

        return {prefix + name: t.cpu() for name, t in quantize_int4(w.to(device), scheme.blocksize).items()}
    functional = _bnb().functional
    if scheme.method == "int8":
        # Int8Params._quantize: float16 rows -> int8 + one absmax per row (SCB).
        cb, scb, _ = functional.int8_vectorwise_quant(w.to(device=device, dtype=torch.float16).contiguous())
        return {key: cb.cpu(), prefix + "SCB": scb.cpu(), prefix + "weight_format": torch.tensor(0, dtype=torch.uint8)}
    w4, state = functional.quantize_4bit(
        w.to(device=device, dtype=_DTYPES[scheme.dtype]).contiguous(),
        blocksize=scheme.blocksize,
        compress_statistics=scheme.double_quant,
        quant_type=scheme.method,
        quant_storage=torch.uint8,
    )
    out = {key: w4.cpu()}
    for name, value in state.as_dict(packed=True).items():
        out[f"{key}.{name}"] = value.cpu()
    return out


def quantize_directory(
    src: Path,
    out_dir: Path,
    scheme: QuantScheme,
    *,
    progress: Progress | None = None,
    device: str | None = None,
) -> list[str]:
    """Write ``scheme``'s version of ``src``'s changed files into ``out_dir``; return their relative names.

    ``progress(done_bytes, total_bytes)`` is called per tensor over the source weights; an exception it
    raises (a cancelled request) stops the work. ``UnsupportedQuantization`` for a model that cannot be
    quantized this way.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import AutoConfig

    config_path = src / "config.json"
    raw_config = json.loads(config_path.read_text(encoding="utf-8"))
    if raw_config.get("quantization_config"):
        raise UnsupportedQuantization("the model's weights are already quantized")
    shards = weight_files(src)
    if not shards:
        raise UnsupportedQuantization("no .safetensors weight files to quantize")
    dtype = _DTYPES[scheme.dtype]
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    targets: set[str] = set()
    if scheme.quantized:
        config = AutoConfig.from_pretrained(str(src), local_files_only=True)
        names, keep = quantization_targets(config, scheme.blocksize if scheme.method == "int4" else 0)
        targets = {f"{name}.weight" for name in names}
        if scheme.method == "int4":
            from converters.int4 import config_dict

            raw_config["quantization_config"] = config_dict(scheme.blocksize, keep)
        else:
            raw_config["quantization_config"] = bnb_config(scheme, keep)
    total = sum((src / shard).stat().st_size for shard in shards)
    done = 0
    if progress is not None:
        progress(0, total)
    found: set[str] = set()
    weight_map: dict[str, str] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for shard in shards:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(src / shard), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open handles are not mappings
                t = f.get_tensor(key)
                if key in targets:
                    tensors.update(_quantize_weight(t, key, scheme, dev))
                    found.add(key)
                elif t.is_floating_point():
                    tensors[key] = t.to(dtype).contiguous()
                else:
                    tensors[key] = t
                done += t.numel() * t.element_size()
                if progress is not None:
                    progress(min(done, total), total)
        for key in tensors:
            weight_map[key] = shard
        (out_dir / shard).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(out_dir / shard), metadata={"format": "pt"})
        del tensors
    missing = sorted(targets - found)
    if missing:
        raise UnsupportedQuantization(
            f"cannot quantize: {len(missing)} Linear weights are not in the checkpoint under their module "
            f"names (first: {missing[0]})"
        )
    raw_config["dtype"] = scheme.dtype
    if "torch_dtype" in raw_config:
        raw_config["torch_dtype"] = scheme.dtype
    (out_dir / "config.json").write_text(json.dumps(raw_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written = ["config.json", *shards]
    if (src / INDEX).is_file():
        index = json.loads((src / INDEX).read_text(encoding="utf-8"))
        size = sum((out_dir / shard).stat().st_size for shard in shards)
        index["metadata"] = {**(index.get("metadata") or {}), "total_size": size}
        index["weight_map"] = dict(sorted(weight_map.items()))
        (out_dir / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        written.append(INDEX)
    if progress is not None:
        progress(total, total)
    return written


def verify_quantized(model_dir: Path, scheme: QuantScheme, device: str | None = None) -> None:
    """Load the quantized directory as the engine will and run one token: every tensor must load into its
    module (no missing, unexpected or mis-shaped key), every target Linear must come back quantized, and
    the logits must be finite. ``ValueError`` otherwise."""
    import warnings

    import transformers

    from converters.int4 import Int4Linear, register

    register()
    config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    cls = getattr(transformers, (config.architectures or [""])[0])
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = cls.from_pretrained(
            str(model_dir), dtype=_DTYPES[scheme.dtype], device_map=dev, local_files_only=True, output_loading_info=True
        )
        problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if problems:
            raise ValueError(f"quantized weights do not load cleanly: {problems}")
        if scheme.quantized:
            kinds: tuple[type, ...] = (Int4Linear,)
            if scheme.library == "bitsandbytes":
                bnb = _bnb()
                kinds = (bnb.nn.Linear8bitLt,) if scheme.method == "int8" else (bnb.nn.Linear4bit,)
            if not any(isinstance(m, kinds) for m in model.modules()):
                raise ValueError("quantized weights loaded as plain Linear layers")
        start = config.bos_token_id if isinstance(config.bos_token_id, int) else 1
        with torch.inference_mode():
            out = model(torch.tensor([[start]], device=model.device))
    # A causal LM gives logits [1, 1, V]; an encoder (embedding model) gives hidden states [1, 1, H].
    result = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    if not torch.isfinite(result.float()).all():
        raise ValueError("the quantized model's outputs are not finite")
