"""An exported GGUF -> the Hugging Face directory our engine loads for it, exactly.

A model created with ``--gguf`` is stored as the GGUF alone; our engine runs Transformers, so it needs the
Hugging Face form of that file. Transformers' own GGUF reader covers a few architectures and rebuilds the
tokenizer from the GGUF; for a file we exported ourselves nothing needs rebuilding: the source's config and
tokenizer files are copied as they are, and each weight is read back from the GGUF (dequantized, so a
quantized file gives the values llama.cpp computes with) with the export's transform undone (``Group.inverse``).
Tensors the GGUF does not carry (a tied head, BERT's unused pooler) are taken from the source.

Every planned GGUF tensor must be in the file with its planned shape, or this raises ``UnsupportedExport``.
The directory is built beside ``out_dir`` and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..gguf_data import TensorData, gguf_tensors
from .errors import UnsupportedExport
from .writer import Progress, Source, plan

_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth")


def derive_hf(gguf_path: Path, src: Source, out_dir: Path, progress: Progress | None = None) -> Path:
    """Write the Hugging Face form of ``gguf_path`` (exported from ``src``) to ``out_dir``; returns it."""
    import torch
    from gguf import dequantize

    from ..gguf_to_hf import _ShardWriter

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        tensors = gguf_tensors(gguf_path)
        by_name = {t.name: t for t in tensors}
        quantized = any(t.tensor_type.name not in ("F32", "F16", "BF16") for t in tensors if t.data.ndim > 1)
        dtype = torch.float32 if quantized else {"F16": torch.float16, "BF16": torch.bfloat16}.get(_main_type(tensors), torch.float32)
        writer = _ShardWriter(tmp, 1 << 30)
        groups = plan(src)
        written: set[str] = set()
        for done, group in enumerate(groups, 1):
            arrays = []
            for out in group.outputs:
                t = by_name.get(out.name)
                if t is None:
                    raise UnsupportedExport(f"{gguf_path.name} has no tensor {out.name}")
                data = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(out.shape)
                arrays.append(data)
            for name, array in zip(group.hf_names, group.inverse(arrays), strict=True):
                writer.add(name, torch.from_numpy(np.array(array, dtype=np.float32)).to(dtype))
                written.add(name)
            if progress is not None:
                progress("deriving", done, len(groups))
        for name, tensor in src.state.items():  # what the GGUF does not carry
            if name not in written and not (src.tied and name == "lm_head.weight"):
                writer.add(name, tensor.detach().to(dtype).contiguous())
        writer.finish()
        _copy_files(src.model_dir, tmp, dtype)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _main_type(tensors: list[TensorData]) -> str:
    types = [t.tensor_type.name for t in tensors if t.data.ndim > 1]
    return max(set(types), key=types.count) if types else "F32"


def _copy_files(src: Path, dst: Path, dtype: Any) -> None:
    """Every non-weight file of the source (config, tokenizer, sentence-transformers modules), config.json
    with the dtype the derived weights have."""
    import torch

    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if not path.is_file() or path.suffix in _WEIGHT_FILES or rel.name.endswith(".index.json"):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    config_path = dst / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    name = {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(dtype, "float32")
    config["dtype"] = name
    config.pop("torch_dtype", None)
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
