"""Float32 Linear layers on CPU: pre-packed weights for batched decode (MKL's on Intel, oneDNN's elsewhere:
``packing_backend``), and one-row compiled steps.

A batched decode step multiplies a few rows (the batch) by every weight matrix. For small row counts MKL's
sgemm repacks the whole weight matrix on every call, so a step of 8 rows cost about twice one of 1 row
(measured on SmolLM2: 65 ms vs 34 ms). With the weights packed once for 8 rows (``mkl._mkl_linear``, what
torch.compile's CPU freezing uses), the 8-row step takes 47 ms: 169 tok/s instead of 123.

``pack_linears`` swaps every plain ``nn.Linear`` of a float32 CPU model for a ``PackedLinear`` that keeps
the original weight (steps of up to half the batch and long prefills use it: there plain sgemm is already
as fast) plus a packed copy used when more rows go through. The copy costs memory, so models whose packed
copies would not fit comfortably in RAM, single-row workers and torch builds with neither MKL nor oneDNN get no
copy.
Generic: no per-architecture code.

A compiled step (``compiled.py``) of up to ``NATIVE_ROWS`` rows multiplies with our own kernel where it is built
(``ollama_torch::f32_mm``, ``native.py``: x86-64 with AVX2), which reads each weight once for all the rows, in
memory order. SmolLM2's 210 layers on a 2-core AMD EPYC (AVX2): 13.4 ms at 1 row, 14.1 at 2, 16.9 at 4, against
MKL's sgemm (what a compiled step calls otherwise) 26, 42 and 49, and oneDNN's packed weights 23, 21 and 25; four
compiled streams of SmolLM2 in float32 went from 50 to 115 tok/s through the server. Without the kernel, one row
multiplies as products and a sum, which inductor turns into one vectorized loop that reads each weight once
(15-21 ms for those layers, as fast as the kernel through the server: 44 tok/s either way), and more rows keep
sgemm. Eager steps keep the packed copies at every row count: their rows must come out the same bits as a
prefill's.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from .cpuinfo import cpuinfo
from .native import f32_mm_available

log = logging.getLogger(__name__)

# Rows up to which a compiled step multiplies float32 weights with our kernel (``ollama_torch::f32_mm``)
NATIVE_ROWS = 8


def mkl_packing_available() -> bool:
    return hasattr(torch.ops, "mkl") and hasattr(torch.ops.mkl, "_mkl_linear") and torch.backends.mkl.is_available()


def onednn_packing_available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _intel_cpu() -> bool:
    info = cpuinfo()
    return info is None or "GenuineIntel" in info  # not Linux: what this module did before it knew the vendor


def packing_backend() -> str:
    """Whose packed sgemm the batched steps take: MKL's on an Intel CPU (measured on a Xeon: see the module's
    docstring), oneDNN's elsewhere. MKL is Intel's library, and on an AMD EPYC (AVX2) its sgemm of a few rows
    was the slowest there was: SmolLM2's 210 layers at 8 rows took 90 ms with MKL's packed weights, 51 with plain
    sgemm and 38 with oneDNN's packed weights (4 rows: 57, 54 and 28 ms; 1 row: 34, 37 and 28 ms; a prefill of
    512 tokens through 30 of the layers: 367 ms with oneDNN's, 417 with sgemm). oneDNN's takes every row count, so
    a row's result does not depend on the rows beside it (sgemm's does: a prompt scored alone and in a batch
    differed by 1.3e-5 in a logprob when one went through oneDNN and the other through sgemm). "" without
    either."""
    if mkl_packing_available() and (_intel_cpu() or not onednn_packing_available()):
        return "mkl"
    return "onednn" if onednn_packing_available() else ""


class PackedLinear(nn.Module):
    def __init__(self, linear: nn.Linear, rows: int, backend: str = "", native: bool | None = None) -> None:
        """``backend``: "mkl" or "onednn" (``packing_backend``) keeps a copy of the weights packed for ``rows``
        rows; "" none. ``native``: compiled steps of up to ``NATIVE_ROWS`` rows call our kernel where it is built
        (``None``), or never (``False``)."""
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # shared with the model (tied embeddings stay tied)
        self.bias = linear.bias
        self.backend = backend
        self.rows = rows if backend else 0
        weight = linear.weight.detach()
        packed = (torch.ops.mkl._mkl_reorder_linear_weight(weight, rows) if backend == "mkl"
                  else torch.ops.mkldnn._reorder_linear_weight(weight, rows) if backend == "onednn" else None)
        self.register_buffer("packed", packed, persistent=False)
        # compiled steps of up to ``NATIVE_ROWS`` rows call our kernel (``native.py``) where it is built
        self.native = (native is not False and weight.device.type == "cpu" and weight.dtype == torch.float32
                       and weight.is_contiguous() and f32_mm_available())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # [n, in]
        n = flat.shape[0]
        if flat.device.type == "cpu" and torch.compiler.is_compiling():
            # A compiled step (of at most half the batch) never reads the packed copy: its layout cannot be traced
            # ahead of time, and the step could not be saved.
            if self.native and n <= NATIVE_ROWS:
                out = torch.ops.ollama_torch.f32_mm(flat.contiguous(), self.weight)
                if self.bias is not None:
                    out = out + self.bias
                return out.reshape(*x.shape[:-1], self.out_features)
            if n > 1:
                return F.linear(x, self.weight, self.bias)
            out = (flat.unsqueeze(1) * self.weight).sum(-1)  # one row: inductor's loop (see the module's docstring)
            if self.bias is not None:
                out = out + self.bias
            return out.reshape(*x.shape[:-1], self.out_features)
        if self.backend == "onednn":  # every row count: its rows come out the same whatever else is in the batch
            out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
            return out.reshape(*x.shape[:-1], self.out_features)
        if self.backend != "mkl" or n <= self.rows // 2 or n > self.rows:
            # No packed copy, or few rows: plain sgemm is as fast as MKL's padded packed call (measured on a Xeon:
            # 2 rows 32 vs 46 ms a step, 4 rows 49 vs 49); many rows (prefill): large-M sgemm is efficient already.
            return F.linear(x, self.weight, self.bias)
        if n < self.rows:  # MKL's packed layout is for exactly ``rows`` rows: pad, then drop the padding
            flat = torch.cat([flat, flat.new_zeros(self.rows - n, flat.shape[1])])
        out = torch.ops.mkl._mkl_linear(flat, self.packed, self.weight, self.bias, self.rows)[:n]
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed_rows={self.rows} ({self.backend or 'none'})"


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def pack_linears(model: nn.Module, rows: int, memory_fraction: float = 0.25, native: bool | None = None) -> int:
    """Replace the model's plain float32 CPU ``nn.Linear`` layers by ``PackedLinear``; returns the bytes the
    packed copies take (0 when nothing was packed). ``native``: as ``PackedLinear``'s (``False`` where no step
    is compiled: the kernel is then not built or loaded). The layers get no packed copy for a single-row batch,
    without MKL or oneDNN (``packing_backend``), or when the copies would take more than ``memory_fraction`` of
    physical memory."""
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear and child.weight.dtype == torch.float32 and child.weight.device.type == "cpu"
    ]
    extra = sum(child.weight.numel() * 4 for _, _, child in targets)
    memory = _physical_memory()
    backend = packing_backend() if rows >= 2 else ""
    if targets and backend and memory and extra > memory_fraction * memory:
        log.info("not packing weights for batched decode: %.0f MiB of copies", extra / 2**20)
        backend = ""
    for parent, name, child in targets:
        setattr(parent, name, PackedLinear(child, rows, backend, native=native))
    if not (targets and backend):
        return 0
    log.info("packed %d linear layers for %d-row decode steps (%s, %.0f MiB)", len(targets), rows, backend, extra / 2**20)
    return extra
