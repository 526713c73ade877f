"""Models stored quantized by ``quantize`` at create time: the dtype they load in and what they hold.

Transformers loads the weights pre-quantized from the stored ``quantization_config`` (bitsandbytes, or
our int4 once ``int4.register()`` has taught it the method); what the loader must add is the dtype of
everything left unquantized (embeddings, norms, output head), which is the one the weights were stored in
(the config blob's ``quantization.compute_dtype``), not the engine's float32 CPU default that would
double the embeddings' size. The resident size counts the quantization state (absmax scales) that
bitsandbytes keeps beside each weight, not only parameters and buffers.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..store import StoredModel

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def stored_dtype(stored: StoredModel) -> torch.dtype | None:
    """The dtype a model quantized at create time must load in, or ``None`` for any other model.

    Also teaches Transformers the int4 method, for any model: an uploaded directory may carry it too."""
    from .int4 import register

    register()
    quantization = stored.config.extra.get("quantization")
    if not isinstance(quantization, dict) or quantization.get("method") not in ("bitsandbytes", "ollama_int4"):
        return None
    quiet_bitsandbytes()
    return _DTYPES.get(str(quantization.get("compute_dtype")), torch.bfloat16)


def quiet_bitsandbytes() -> None:
    """bitsandbytes logs a warning on every int8 matmul whose input is not float16, and one at import when
    an optional hub-downloaded CPU kernel is missing; neither says anything actionable to a server log."""
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def resident_bytes(model: Any) -> int:
    """Bytes the loaded model holds: parameters, buffers and bitsandbytes quantization state."""
    seen: set[int] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if isinstance(t, torch.Tensor) and t.device.type != "meta" and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()

    for p in model.parameters():
        add(p)
        state = getattr(p, "quant_state", None)
        if state is not None:  # 4-bit: absmax (+ nested absmax and code when double-quantized)
            add(state.absmax)
            add(getattr(state, "code", None))
            nested = getattr(state, "state2", None)
            if nested is not None:
                add(nested.absmax)
                add(getattr(nested, "code", None))
        add(getattr(p, "SCB", None))  # 8-bit: one absmax per row
    for b in model.buffers():
        add(b)
    return total
