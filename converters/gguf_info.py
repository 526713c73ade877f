"""GGUF metadata without the tensor data: what ``/api/create`` records and ``/api/show`` reports.

Owns reading a GGUF header (magic, version, key/values, tensor table) and the Ollama views of it: the
``FileType`` and tensor-type names, the ``model_info`` map, the ``tensors`` list and the classic
weight-side capabilities. Imports only the standard library and numpy (never torch, transformers or the
``gguf`` package), and never reads tensor data, so the HTTP layer can call it on every ``/api/show``.

The header is parsed here rather than with ``gguf.GGUFReader``, which builds a numpy view per string of a
vocabulary and takes seconds on a 49k-token file; this reader walks the mapped header once.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"GGUF"
NOT_GGUF = "supplied file was not in GGUF format"

# GGUF metadata value types (the spec's ``gguf_type``): fixed-size scalars, string (8), array (9).
_STRING, _ARRAY, _FLOAT32 = 8, 9, 6
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4), 6: ("f", 4),
    7: ("?", 1), 10: ("Q", 8), 11: ("q", 8), 12: ("d", 8),
}  # fmt: skip
_NUMPY = {0: "u1", 1: "i1", 2: "u2", 3: "i2", 4: "u4", 5: "i4", 6: "f4", 7: "?", 10: "u8", 11: "i8", 12: "f8"}

# Ollama's fs/ggml/type.go, FileType.String(): llama_ftype ids as Ollama names them.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}  # fmt: skip

# Ollama's fs/ggml/type.go, TensorType.String(): ggml_type ids as Ollama names them.
TENSOR_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
    11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS",
    18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8",
    25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0",
    39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}  # fmt: skip

PROJECTOR_TYPES = ("projector", "mmproj")


def file_type_name(file_type: int | None) -> str:
    """Ollama's name for a ``general.file_type`` value, ``"unknown"`` when absent or unlisted.

    Ollama's ``KV.FileType()`` also says ``"unknown"`` for 0 (all-F32 files); we say ``"F32"``.
    """
    return FILE_TYPES.get(file_type, "unknown") if isinstance(file_type, int) else "unknown"


def tensor_type_name(ggml_type: int) -> str:
    return TENSOR_TYPES.get(ggml_type, "unknown")


@dataclass
class GGUFTensor:
    """One entry of the tensor table. ``shape`` is in GGUF order (fastest-moving dimension first),
    as Ollama prints it: SmolLM2's ``token_embd.weight`` is ``[576, 49152]``."""

    name: str
    type: str
    shape: list[int]
    ggml_type: int = -1  # the numeric ``ggml_type``; ``type`` is its name
    offset: int = 0  # of the data, from the start of the data section (``GGUFInfo.data_start``)

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class GGUFInfo:
    """A GGUF file's header, plus the fields Ollama derives from it.

    ``metadata`` holds every key/value in file order as plain Python values: strings decoded (invalid
    UTF-8 replaced), arrays as lists, float32 scalars as the shortest decimal that reads back as the same
    float32 (``1e-05``), float32 array elements widened exactly.
    """

    architecture: str
    metadata: dict[str, Any]
    tensors: list[GGUFTensor]
    parameter_count: int
    file_type: str
    context_length: int = 0
    embedding_length: int = 0
    chat_template: str | None = None
    general_type: str = "model"
    capabilities: list[str] = field(default_factory=list)
    data_start: int = 0  # file offset of the data section (after the tensor table, aligned)
    big_endian: bool = False


class _Header:
    """A cursor over the mapped file; every read is bounds-checked, so a truncated file is a ValueError."""

    def __init__(self, buf: mmap.mmap, endian: str) -> None:
        self.buf = buf
        self.end = len(buf)
        self.pos = 4
        self.endian = endian

    def scalar(self, fmt: str, size: int) -> Any:
        if self.pos + size > self.end:
            raise ValueError("invalid GGUF file: header is truncated")
        (value,) = struct.unpack_from(self.endian + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.scalar("Q", 8)
        if self.pos + n > self.end:
            raise ValueError("invalid GGUF file: string runs past the end of the file")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")  # Go strings hold bytes; JSON shows U+FFFD for bad ones

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        if vtype not in _SCALARS:
            raise ValueError(f"invalid GGUF file: unknown value type {vtype}")
        v = self.scalar(*_SCALARS[vtype])
        return _short_float32(v) if vtype == _FLOAT32 else v

    def array(self) -> list[Any]:
        etype = self.scalar("I", 4)
        count = self.scalar("Q", 8)
        if etype in _NUMPY:
            size = _SCALARS[etype][1]
            if self.pos + count * size > self.end:
                raise ValueError("invalid GGUF file: array runs past the end of the file")
            dtype = np.dtype(_NUMPY[etype]).newbyteorder("<" if self.endian == "<" else ">")
            values: list[Any] = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).tolist()
            self.pos += count * size
            return values
        if etype == _STRING:
            if self.pos + count * 8 > self.end:
                raise ValueError("invalid GGUF file: array runs past the end of the file")
            return [self.string() for _ in range(count)]
        if etype == _ARRAY:  # neither llama.cpp nor Ollama reads these
            raise ValueError("invalid GGUF file: nested arrays are not supported")
        raise ValueError(f"invalid GGUF file: unknown array element type {etype}")


def _short_float32(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (``1e-05``, not ``9.99999974e-06``),
    which is how Go's JSON encoder prints a float32 value."""
    if not math.isfinite(v):
        return v
    for digits in range(1, 10):
        short = float(f"{v:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", short))[0] == v:
            return short
    return v


def is_gguf(path: Path | str) -> bool:
    """Whether the file starts with the GGUF magic bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except (IsADirectoryError, FileNotFoundError):
        return False


def read_gguf_info(path: Path | str) -> GGUFInfo:
    """Parse a GGUF header; ``ValueError("supplied file was not in GGUF format")`` for anything else.

    Little- and big-endian files are both read (a big-endian file has a byte-swapped version field).
    """
    with open(path, "rb") as f:
        if f.read(4) != MAGIC:
            raise ValueError(NOT_GGUF)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(buf)


def _parse(buf: mmap.mmap) -> GGUFInfo:
    (version,) = struct.unpack_from("<I", buf, 4) if len(buf) >= 8 else (0,)
    endian = ">" if version and version & 0xFFFF == 0 else "<"
    h = _Header(buf, endian)
    version = h.scalar("I", 4)
    if version not in (2, 3):  # v1 (August 2023) counted everything in 32 bits; nothing writes it now
        raise ValueError(f"invalid GGUF file: unsupported version {version}")
    n_tensors, n_kv = h.scalar("Q", 8), h.scalar("Q", 8)

    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = h.string()
        metadata[key] = h.value(h.scalar("I", 4))

    tensors: list[GGUFTensor] = []
    for _ in range(n_tensors):
        name = h.string()
        n_dims = h.scalar("I", 4)
        if n_dims > 8:
            raise ValueError(f"invalid GGUF file: tensor {name!r} has {n_dims} dimensions")
        shape = [h.scalar("Q", 8) for _ in range(n_dims)]
        ggml_type = h.scalar("I", 4)
        offset = h.scalar("Q", 8)
        tensors.append(GGUFTensor(name, tensor_type_name(ggml_type), shape, ggml_type, offset))
    info = _derive(metadata, tensors)
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
        alignment = 32
    info.data_start = -(-h.pos // alignment) * alignment
    info.big_endian = endian == ">"
    return info


def _derive(metadata: dict[str, Any], tensors: list[GGUFTensor]) -> GGUFInfo:
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        arch = "unknown"  # Ollama's KV.Architecture() default

    def int_key(key: str) -> int:
        v = metadata.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    template = metadata.get("tokenizer.chat_template")
    general_type = metadata.get("general.type")
    info = GGUFInfo(
        architecture=arch,
        metadata=metadata,
        tensors=tensors,
        # Ollama's decoder overwrites general.parameter_count with the tensor total; we do the same.
        parameter_count=sum(t.n_elements for t in tensors),
        file_type=file_type_name(metadata.get("general.file_type")),
        context_length=int_key(f"{arch}.context_length"),
        embedding_length=int_key(f"{arch}.embedding_length"),
        chat_template=template if isinstance(template, str) else None,
        general_type=general_type if isinstance(general_type, str) and general_type else "model",
    )
    info.capabilities = _capabilities(info)
    return info


def _capabilities(info: GGUFInfo) -> list[str]:
    """Ollama's classic weight-side rule (server/images.go ``ggufCapabilities``).

    ``embedding`` if ``<arch>.pooling_type`` exists, else ``completion``; plus ``vision`` /
    ``audio`` if ``<arch>.vision.block_count`` / ``<arch>.audio.block_count`` exist. A projector file
    (``general.type`` projector/mmproj, or architecture ``clip``) is not a model on its own: it only
    gives the model it is attached to ``vision``, so that is all it reports. Template-side capabilities
    (tools, thinking, insert) are not decided here.
    """
    md, arch = info.metadata, info.architecture
    if info.general_type in PROJECTOR_TYPES or arch == "clip":
        return ["vision"]
    caps = ["embedding" if f"{arch}.pooling_type" in md else "completion"]
    if f"{arch}.vision.block_count" in md:
        caps.append("vision")
    if f"{arch}.audio.block_count" in md:
        caps.append("audio")
    return caps


def show_model_info(info: GGUFInfo, verbose: bool) -> dict[str, Any]:
    """``/api/show``'s ``model_info`` for a GGUF model, as Ollama's ``GetModelInfo`` builds it.

    Every key/value except ``general.name`` and ``tokenizer.chat_template``, with
    ``general.parameter_count`` set to the tensor total (Ollama's decoder patches it in), keys sorted as
    Go's JSON encoder sorts a map. Unless ``verbose``, Ollama decodes with ``maxArraySize = 0``: an array
    is kept only if it is empty, and every non-empty one marshals as ``null`` (since Ollama commit
    8d376acc "zero means zero", April 2025; the ``len > 5 -> []`` loop in ``getModelData`` no longer
    matches anything). ``verbose`` gives every array in full.
    """
    kv: dict[str, Any] = dict(info.metadata)
    kv["general.parameter_count"] = info.parameter_count
    kv.pop("general.name", None)
    kv.pop("tokenizer.chat_template", None)
    if not verbose:
        kv = {k: (None if isinstance(v, list) and v else v) for k, v in kv.items()}
    return dict(sorted(kv.items()))


def show_tensors(info: GGUFInfo) -> list[dict[str, Any]]:
    """``/api/show``'s ``tensors``: ``{name, type, shape}`` in file order (Ollama sends it for GGUF
    models whether or not ``verbose`` was asked)."""
    return [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in info.tensors]
