"""A GGUF in another type: every metadata key kept (tokenizer, chat template, hyperparameters, as the file
had them), every tensor decoded and encoded again with the export's per-tensor rules, or handed to
llama.cpp's quantizer for K-quants. Used for a stored GGUF model exported or created in a type it is not in.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnsupportedExport
from .tensors import Output, tensor_qtype
from .types import GGUFType
from .writer import Progress, _byte_shape, llama_cpp_quantize

# Keys the writer sets itself, or that describe the old encoding.
_REWRITTEN = ("general.architecture", "general.file_type", "general.quantization_version")


def retype_gguf(src: Path, out_path: Path, target: GGUFType, progress: Progress | None = None) -> None:
    """Write ``src`` as ``target`` at ``out_path`` (written beside it and renamed into place)."""
    out_path = Path(out_path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.partial-", dir=out_path.parent))
    try:
        if target.writer == "llama.cpp":
            if progress is not None:
                progress("quantizing", 0, 0)
            llama_cpp_quantize(Path(src), tmp / "out.gguf", target)
        else:
            _reencode(Path(src), tmp / "out.gguf", target, progress)
        os.replace(tmp / "out.gguf", out_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _reencode(src: Path, path: Path, target: GGUFType, progress: Progress | None) -> None:
    import gguf

    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    arch_id = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch), None)
    if arch_id is None:
        raise UnsupportedExport(f'unsupported architecture "{arch}" in GGUF')
    n_blocks = int(reader.fields[f"{arch}.block_count"].contents()) if f"{arch}.block_count" in reader.fields else 0
    names = gguf.TensorNameMap(arch_id, n_blocks)
    writer = gguf.GGUFWriter(path, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in _REWRITTEN:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    writer.add_file_type(target.file_type)
    if target.quantized:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    qtarget = getattr(gguf.GGMLQuantizationType, target.qtype)
    plan: list[tuple[Any, Output, Any]] = []
    present = {t.name for t in reader.tensors}
    head = {"output.weight"} if "output.weight" in present else {"token_embd.weight"} & present
    if f"{arch}.pooling_type" in reader.fields:  # an embedding model has no head
        head = set()
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))
        kind = names.get_type(t.name, try_suffixes=(".weight", ".bias"))
        out = Output(t.name, kind, shape)
        qtype = tensor_qtype(out, qtarget, t.name in head)
        dtype = np.dtype({qtype.F32: np.float32, qtype.F16: np.float16}.get(qtype, np.uint8))
        byte_shape = _byte_shape(shape, qtype)
        writer.add_tensor_info(t.name, byte_shape, dtype, int(np.prod(byte_shape)) * dtype.itemsize, raw_dtype=qtype)
        plan.append((t, out, qtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for i, (t, out, qtype) in enumerate(plan):
        data = np.asarray(gguf.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(out.shape)
        writer.write_tensor_data(np.ascontiguousarray(gguf.quants.quantize(data, qtype)))
        if progress is not None:
            progress("writing", i + 1, len(plan))
    writer.close()
