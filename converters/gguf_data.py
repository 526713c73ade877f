"""A GGUF file's tensors as memory-mapped numpy arrays, in the layout ``gguf.dequantize`` takes.

``gguf.GGUFReader`` gives the same arrays, but builds a numpy view for every string of the vocabulary first:
3 s on SmolLM2's 49k-token file before any tensor is read. Here the header comes from ``read_gguf_info``
(a single walk over it) and only the tensor data is mapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .gguf_info import read_gguf_info

if TYPE_CHECKING:
    from gguf import GGMLQuantizationType

    from .gguf_info import GGUFInfo

# Unquantized ggml types, read as their numpy type (what GGUFReader does); all others are read as bytes.
_PLAIN = {0: np.float32, 1: np.float16, 24: np.int8, 25: np.int16, 26: np.int32, 27: np.int64, 28: np.float64}


@dataclass
class TensorData:
    name: str
    tensor_type: GGMLQuantizationType
    data: np.ndarray[Any, Any]  # numpy order (slowest-moving dimension first); quantized rows as bytes


def gguf_tensors(path: Path | str, info: GGUFInfo | None = None) -> list[TensorData]:
    """The tensors of the GGUF file at ``path`` (whose header is ``info``, read here when not given), in file
    order. ``ValueError`` for a tensor whose type gguf-py does not know or whose data runs past the end."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    info = info or read_gguf_info(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    out: list[TensorData] = []
    for t in info.tensors:
        try:
            qtype = GGMLQuantizationType(t.ggml_type)
        except ValueError:
            raise ValueError(f"GGUF tensor {t.name!r} has an unknown type {t.ggml_type}") from None
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        shape = tuple(reversed(t.shape))
        n_bytes = t.n_elements * type_size // block_size
        start = info.data_start + t.offset
        if start + n_bytes > len(mapped):
            raise ValueError(f"GGUF tensor {t.name!r} runs past the end of the file")
        raw = mapped[start : start + n_bytes]
        if t.ggml_type in _PLAIN:
            dtype = np.dtype(_PLAIN[t.ggml_type])
            data = raw.view(dtype.newbyteorder(">") if info.big_endian else dtype.newbyteorder("<")).reshape(shape)
        else:
            data = raw.reshape(quant_shape_to_byte_shape(shape, qtype))
        out.append(TensorData(t.name, qtype, data))
    return out
