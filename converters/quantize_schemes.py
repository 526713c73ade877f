"""The ``quantize`` names ``/api/create`` accepts and the scheme each one means. Torch-free.

Ollama's names (``ggml.ParseFileType``: F32, F16, BF16, Q8_0, Q4_K_S, Q4_K_M and its alias Q4_K) are
matched case-insensitively, as Ollama upper-cases them; the torch-native names INT8, NF4 and FP4 name the
bitsandbytes schemes directly. GGUF block formats do not exist in Transformers, so each Ollama name maps to
the scheme nearest in form and bits per weight:

- ``F32`` / ``F16`` / ``BF16``: a dtype cast of every floating tensor (nothing quantized).
- ``Q8_0`` / ``INT8``: bitsandbytes LLM.int8 — int8 weights with one absmax scale per output row; input
  columns with an outlier above 3.0 are multiplied in float16, the rest in int8.
- ``Q4_K_M`` / ``Q4_K`` / ``Q4_K_S``: asymmetric int4 in groups of 32 (``w = q * scale + min``: the
  "type-1" form and the 32-weight sub-block of llama.cpp's Q4_1 and Q4_K), run by PyTorch's own int4
  kernel on CPU (``ollama_torch/engine/int4.py``). K_M's extra Q6_K tensors have no counterpart that
  fits the 4-bit memory budget, so K_S and K_M are one scheme, reported under the name asked for.
- ``NF4`` / ``FP4``: bitsandbytes 4-bit NormalFloat / float, blocks of 64 (Transformers' defaults).

Linear layers are quantized; embeddings, norms and the output head are kept and stored as bfloat16 (the
head stays unquantized as Transformers' bitsandbytes integration does, and as llama.cpp keeps
``output.weight`` at higher precision).
"""

from __future__ import annotations

from dataclasses import dataclass

# Source dtypes (``file_type``) that may be quantized, as Ollama allows.
QUANTIZABLE = ("F32", "F16", "BF16")
SOURCE_ERROR = "quantization is only supported for F16, BF16 and F32 models"


class UnsupportedQuantization(ValueError):
    """A ``quantize`` name outside the table, or a source that cannot be quantized (a 400)."""


@dataclass(frozen=True)
class QuantScheme:
    """One target of ``quantize``: ``name`` is what ``details.quantization_level`` reports."""

    name: str
    method: str  # "cast" | "int8" | "nf4" | "fp4" (bitsandbytes) | "int4" (ours, engine/int4.py)
    dtype: str  # dtype of every tensor that is not quantized: "float32" | "float16" | "bfloat16"
    blocksize: int = 0  # 4-bit only: weights per absmax (bitsandbytes) or per scale and min (int4)
    double_quant: bool = False  # 4-bit only: absmax themselves quantized to 8 bits
    int8_threshold: float = 0.0  # 8-bit only: LLM.int8 outlier threshold (0: every column in int8)
    description: str = ""

    @property
    def quantized(self) -> bool:
        return self.method != "cast"

    @property
    def bits(self) -> int:
        return {"int8": 8, "nf4": 4, "fp4": 4, "int4": 4}.get(self.method, {"float32": 32}.get(self.dtype, 16))

    @property
    def library(self) -> str:
        """The ``quant_method`` of the stored ``quantization_config`` (``cast``: none)."""
        return {"cast": "cast", "int4": "ollama_int4"}.get(self.method, "bitsandbytes")

    def to_json(self) -> dict[str, object]:
        """What the manifest's config blob records under ``quantization`` (never inferred from files)."""
        out: dict[str, object] = {"method": self.library, "scheme": self.method}
        if self.quantized:
            out["bits"] = self.bits
            out["compute_dtype"] = self.dtype
        else:
            out["dtype"] = self.dtype
        if self.blocksize:
            out["blocksize"] = self.blocksize
        if self.double_quant:
            out["double_quant"] = True
        return out


_LINEAR_NOTE = "Linear weights; embeddings, norms and output head in bfloat16"
# LLM.int8's outlier threshold. Its paper's 6.0 measured +3.1% perplexity on SmolLM2 (tests/data text),
# 3.0 measured +1.4%, 0.0 (no outliers, fastest) +3.2%: see BENCHMARKS.md.
INT8_THRESHOLD = 3.0
_INT8_NOTE = f"bitsandbytes LLM.int8: int8 rows with per-row absmax, fp16 outlier columns above {INT8_THRESHOLD}, {_LINEAR_NOTE}"
SCHEMES: dict[str, QuantScheme] = {
    "F32": QuantScheme("F32", "cast", "float32", description="float32 cast"),
    "F16": QuantScheme("F16", "cast", "float16", description="float16 cast"),
    "BF16": QuantScheme("BF16", "cast", "bfloat16", description="bfloat16 cast"),
    "Q8_0": QuantScheme("Q8_0", "int8", "bfloat16", int8_threshold=INT8_THRESHOLD, description=_INT8_NOTE),
    "Q4_K_M": QuantScheme("Q4_K_M", "int4", "bfloat16", 32, description=f"asymmetric int4, groups of 32, {_LINEAR_NOTE}"),
    "Q4_K_S": QuantScheme("Q4_K_S", "int4", "bfloat16", 32, description=f"asymmetric int4, groups of 32, {_LINEAR_NOTE}"),
    "INT8": QuantScheme("INT8", "int8", "bfloat16", int8_threshold=INT8_THRESHOLD, description=_INT8_NOTE),
    "NF4": QuantScheme("NF4", "nf4", "bfloat16", 64, description=f"bitsandbytes NF4, blocks of 64, {_LINEAR_NOTE}"),
    "FP4": QuantScheme("FP4", "fp4", "bfloat16", 64, description=f"bitsandbytes FP4, blocks of 64, {_LINEAR_NOTE}"),
}
ALIASES = {"Q4_K": "Q4_K_M"}
SUPPORTED_TEXT = "F32, F16, BF16, Q8_0, Q4_K_S, Q4_K_M (alias Q4_K), INT8, NF4, FP4"


def parse_quantize(name: str) -> QuantScheme:
    """The scheme for a ``quantize`` value, case-insensitively; ``UnsupportedQuantization`` otherwise."""
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    scheme = SCHEMES.get(key)
    if scheme is None:
        raise UnsupportedQuantization(f"unsupported quantization type {key} - supported types are {SUPPORTED_TEXT}")
    return scheme


def check_source(file_type: str) -> None:
    """Only unquantized models are quantized (Ollama's rule); anything else is an ``UnsupportedQuantization``."""
    if file_type.upper() not in QUANTIZABLE:
        raise UnsupportedQuantization(SOURCE_ERROR)
