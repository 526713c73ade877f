"""Hugging Face directory -> one GGUF file that llama.cpp (and so Ollama) loads and runs as Transformers does.

``export_hf`` loads the model with Transformers (so checkpoint formats and key renames are Transformers'
concern, and the weights are exactly the ones our engine runs), plans every tensor (``tensors.py``),
reads the tokenizer (``vocab.py``), then streams the file: header and metadata first, then one tensor at a
time, transformed and quantized as it is written. K-quants are llama.cpp's own: the model is written as
F32 to a temp file beside the output and ``llama_model_quantize`` writes the result.

The file is written next to ``out_path`` and renamed into place at the end; an exception (including one
raised by ``progress``, how a cancelled request stops) leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnsupportedExport
from .families import Family, Hparams, family_for, hparams_of, write_hparams
from .tensors import Group, head_names, plan_tensors, tensor_qtype
from .types import TYPES, GGUFType
from .vocab import read_vocab

log = logging.getLogger(__name__)

# stage ("writing" / "quantizing"), done, total; total 0 means no measure (llama.cpp's quantizer)
Progress = Callable[[str, int, int], None]
_POOLING = {"mean": 1, "cls": 2, "lasttoken": 3}


@dataclass(frozen=True)
class Source:
    """A loaded Hugging Face model, ready to export or to recover from a GGUF (``inverse.py``)."""

    model_dir: Path
    config: Any
    family: Family
    hp: Hparams
    state: dict[str, Any]  # name -> torch.Tensor
    tied: bool
    dtype: str  # "F32" / "F16" / "BF16": the weights' type as loaded

    @property
    def vocab_rows(self) -> int:
        embed = next(t for n, t in self.state.items() if n.endswith(("embed_tokens.weight", "word_embeddings.weight")))
        return int(embed.shape[0])


def load_source(model_dir: Path, *, weights: bool = True) -> Source:
    """Load a Hugging Face directory for export; ``UnsupportedExport`` when it cannot be exported. Without
    ``weights`` the model is built on the meta device: names and shapes only, for ``check_exportable``."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    model_dir = Path(model_dir)
    try:
        config = AutoConfig.from_pretrained(str(model_dir))
    except Exception as exc:
        raise UnsupportedExport(f"cannot read the model's config.json: {exc}") from None
    family = family_for(config)
    hp = hparams_of(config)
    auto = AutoModel if family.encoder else AutoModelForCausalLM
    if weights:
        model = auto.from_pretrained(str(model_dir), dtype="auto")
    else:
        with torch.device("meta"):
            model = auto.from_config(config)
    state = dict(model.state_dict())
    first = next(t for t in state.values() if t.is_floating_point())
    dtype = {torch.float16: "F16", torch.bfloat16: "BF16"}.get(first.dtype, "F32")
    tied = bool(getattr(model.config, "tie_word_embeddings", False)) or not family.has_output
    return Source(model_dir, config, family, hp, state, tied, dtype)


def check_exportable(model_dir: Path) -> None:
    """Everything ``export_hf`` would refuse (architecture, configuration, tensors, tokenizer), decided
    without loading the weights, so a server can answer 400 before it starts streaming."""
    src = load_source(model_dir, weights=False)
    from .families import write_hparams

    write_hparams(_NullWriter(), src.family, src.config, src.hp)  # runs the family's checks
    plan(src)
    read_vocab(src.model_dir, src.vocab_rows, src.config)


class _NullWriter:
    """Takes any ``add_*`` call and keeps nothing (the metadata pass of ``check_exportable``)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def export_hf(
    model_dir: Path,
    out_path: Path,
    gguf_type: GGUFType | None = None,
    progress: Progress | None = None,
    *,
    name: str = "",
    source: Source | None = None,
) -> GGUFType:
    """Write ``model_dir`` as a GGUF at ``out_path``; returns the type written (the source's float type
    when ``gguf_type`` is None). Raises ``UnsupportedExport`` before writing anything it would refuse."""
    src = source or load_source(model_dir)
    target = gguf_type or TYPES[src.dtype]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = progress or _no_progress
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.partial-", dir=out_path.parent))
    try:
        if target.writer == "llama.cpp":
            f32 = tmp / "f32.gguf"
            _write(src, f32, TYPES["F32"], report, name)
            report("quantizing", 0, 0)
            llama_cpp_quantize(f32, tmp / "out.gguf", target)
            f32.unlink()
        else:
            _write(src, tmp / "out.gguf", target, report, name)
        os.replace(tmp / "out.gguf", out_path)
    finally:
        for p in tmp.glob("*"):
            p.unlink(missing_ok=True)
        tmp.rmdir()
    return target


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def plan(src: Source) -> list[Group]:
    shapes = {n: tuple(t.shape) for n, t in src.state.items()}
    return plan_tensors(src.family, src.config, src.hp, shapes, src.vocab_rows, src.tied)


def _write(src: Source, path: Path, target: GGUFType, report: Progress, name: str) -> None:
    import gguf

    groups = plan(src)  # refuses before anything is written
    vocab = read_vocab(src.model_dir, src.vocab_rows, src.config)
    writer = gguf.GGUFWriter(path, src.family.arch)
    writer.add_type(gguf.GGUFType.MODEL)
    if name:
        writer.add_name(name)
    writer.add_file_type(target.file_type)
    if target.quantized:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_hparams(writer, src.family, src.config, src.hp)
    if src.family.arch != "bert":
        writer.add_vocab_size(src.vocab_rows)
    if src.family.encoder:
        writer.add_pooling_type(gguf.PoolingType(_pooling(src.model_dir)))
    vocab.write(writer)

    qtarget = getattr(gguf.GGMLQuantizationType, target.qtype)
    head = head_names(groups) if not src.family.encoder else set()
    types = {out.name: tensor_qtype(out, qtarget, out.name in head) for g in groups for out in g.outputs}
    for g in groups:
        for out in g.outputs:
            qtype = types[out.name]
            dtype = np.dtype({qtype.F32: np.float32, qtype.F16: np.float16}.get(qtype, np.uint8))
            byte_shape = _byte_shape(out.shape, qtype)
            writer.add_tensor_info(out.name, byte_shape, dtype, int(np.prod(byte_shape)) * dtype.itemsize, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    total = sum(len(g.outputs) for g in groups)
    done = 0
    report("writing", 0, total)
    for g in groups:
        arrays = g.forward([_numpy(src.state[n]) for n in g.hf_names])
        for out, data in zip(g.outputs, arrays, strict=True):
            if tuple(data.shape) != out.shape:
                raise UnsupportedExport(f"{out.name} came out with shape {list(data.shape)}, planned {list(out.shape)}")
            encoded = gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), types[out.name])
            writer.write_tensor_data(np.ascontiguousarray(encoded))
            done += 1
            report("writing", done, total)
    writer.close()


def _byte_shape(shape: tuple[int, ...], qtype: Any) -> tuple[int, ...]:
    import gguf

    if qtype in (qtype.F32, qtype.F16):
        return tuple(shape)
    return tuple(gguf.quant_shape_to_byte_shape(shape, qtype))


def _numpy(tensor: Any) -> np.ndarray:
    import torch

    array: np.ndarray = tensor.detach().to(torch.float32).cpu().numpy()
    return array


def _pooling(model_dir: Path) -> int:
    """The sentence-transformers pooling (``modules.json`` -> ``1_Pooling``), as our engine applies it; mean
    pooling when the directory has none (our engine's default for encoders)."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return _POOLING["mean"]
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    kinds = [str(m.get("type", "")) for m in modules]
    extra = [k for k in kinds if not k.endswith(("Transformer", "Pooling", "Normalize"))]
    if extra:
        raise UnsupportedExport(f"sentence-transformers module {extra[0]} has no llama.cpp counterpart")
    pooling_dir = next((m.get("path") for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if pooling_dir is None:
        return _POOLING["mean"]
    cfg = json.loads((model_dir / pooling_dir / "config.json").read_text(encoding="utf-8"))
    modes = [mode for mode, key in (("mean", "pooling_mode_mean_tokens"), ("cls", "pooling_mode_cls_token"), ("lasttoken", "pooling_mode_lasttoken")) if cfg.get(key)]
    other = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and k not in ("pooling_mode_mean_tokens", "pooling_mode_cls_token", "pooling_mode_lasttoken")]
    if len(modes) != 1 or other:
        raise UnsupportedExport(f"sentence-transformers pooling {cfg} has no llama.cpp counterpart (one of mean, CLS, last token)")
    return _POOLING[modes[0]]


_LOG_CALLBACK: Any = None  # kept alive for as long as llama.cpp may call it


def _quiet(llama_cpp: Any) -> None:
    """llama.cpp's quantizer writes a line per tensor to stderr; route its log into ours, at debug level."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        def forward(level: int, text: bytes, data: Any) -> None:
            log.debug("llama.cpp: %s", text.decode("utf-8", errors="replace").rstrip())

        _LOG_CALLBACK = llama_cpp.llama_log_callback(forward)
        llama_cpp.llama_log_set(_LOG_CALLBACK, None)


def llama_cpp_quantize(src: Path, dst: Path, target: GGUFType) -> None:
    """llama.cpp's own quantizer (``llama_model_quantize``) from a float GGUF; the output keeps every
    metadata key and gets llama.cpp's per-tensor mixture for ``target``."""
    try:
        import llama_cpp
    except ImportError:
        raise UnsupportedExport(f"GGUF type {target.name} needs llama.cpp's quantizer (pip install llama-cpp-python)") from None
    _quiet(llama_cpp)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = target.file_type
    params.nthread = 0  # llama.cpp's default: the hardware threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        raise UnsupportedExport(f"llama.cpp could not quantize the model to {target.name} (error {rc})")
