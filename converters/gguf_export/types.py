"""The GGUF file types an export can write, and who writes each: the ``gguf`` package or llama.cpp.

A type is named as Ollama and llama.cpp name ``general.file_type`` values (``F16``, ``Q8_0``, ``Q4_K_M``...),
matched case-insensitively. Two writers:

- ``gguf`` (numpy, always available): F32, F16, BF16 and the block types the ``gguf`` package quantizes
  exactly as ggml's reference code does (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1). Every 2-D weight gets the type;
  1-D tensors, norms, biases and the few tensors llama.cpp keeps in float32 stay F32.
- ``llama.cpp`` (its own quantizer, ``llama_model_quantize`` through llama-cpp-python): the K-quants, whose
  per-tensor mixtures (Q4_K_M keeps some tensors in Q6_K) only llama.cpp defines. Used when llama-cpp-python
  is importable; otherwise asking for one is an ``UnsupportedGGUFType`` that lists what is available.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


class UnsupportedGGUFType(ValueError):
    """A GGUF type outside the table, or one whose writer is not installed (a 400)."""


@dataclass(frozen=True)
class GGUFType:
    name: str  # what details.quantization_level reports: "Q4_K_M"
    file_type: int  # general.file_type (llama_ftype)
    writer: str  # "gguf" | "llama.cpp"
    qtype: str = ""  # gguf: the GGMLQuantizationType of the 2-D weights ("Q8_0")

    @property
    def quantized(self) -> bool:
        return self.name not in ("F32", "F16", "BF16")


_NUMPY = [("F32", 0), ("F16", 1), ("BF16", 32), ("Q8_0", 7), ("Q4_0", 2), ("Q4_1", 3), ("Q5_0", 8), ("Q5_1", 9)]
_LLAMA_CPP = [
    ("Q2_K", 10), ("Q3_K_S", 11), ("Q3_K_M", 12), ("Q3_K_L", 13), ("Q4_K_S", 14), ("Q4_K_M", 15),
    ("Q5_K_S", 16), ("Q5_K_M", 17), ("Q6_K", 18),
]  # fmt: skip
TYPES: dict[str, GGUFType] = {
    **{name: GGUFType(name, ft, "gguf", name) for name, ft in _NUMPY},
    **{name: GGUFType(name, ft, "llama.cpp") for name, ft in _LLAMA_CPP},
}
ALIASES = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M"}
FLOAT_TYPES = ("F32", "F16", "BF16")


def llama_cpp_available() -> bool:
    """Whether llama.cpp's quantizer can be used (llama-cpp-python is importable)."""
    return importlib.util.find_spec("llama_cpp") is not None


def available_types() -> list[str]:
    """The names this machine can write, in table order."""
    return [name for name, t in TYPES.items() if t.writer == "gguf" or llama_cpp_available()]


def parse_gguf_type(name: str) -> GGUFType:
    """The type for a ``quantize`` value (case-insensitive, ``Q4_K`` = ``Q4_K_M``); ``UnsupportedGGUFType``
    for an unknown name or a K-quant without llama.cpp, listing what is available here."""
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    t = TYPES.get(key)
    listed = ", ".join(available_types())
    if t is None:
        raise UnsupportedGGUFType(f"unsupported GGUF type {key} - supported types are {listed}")
    if t.writer == "llama.cpp" and not llama_cpp_available():
        raise UnsupportedGGUFType(
            f"GGUF type {key} needs llama.cpp's quantizer (pip install llama-cpp-python), which is not "
            f"installed - available types are {listed}"
        )
    return t


def type_for_file_type(file_type: str) -> GGUFType | None:
    """The table entry named by a source's ``file_type`` (``"F16"``), if any."""
    return TYPES.get(file_type.upper())
