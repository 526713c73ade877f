"""Float32 Linear layers on CPU: MKL pre-packed weights for batched decode, and one-row compiled steps.

A batched decode step multiplies a few rows (the batch) by every weight matrix. For small row counts MKL's
sgemm repacks the whole weight matrix on every call, so a step of 8 rows cost about twice one of 1 row
(measured on SmolLM2: 65 ms vs 34 ms). With the weights packed once for 8 rows (``mkl._mkl_linear``, what
torch.compile's CPU freezing uses), the 8-row step takes 47 ms: 169 tok/s instead of 123.

``pack_linears`` swaps every plain ``nn.Linear`` of a float32 CPU model for a ``PackedLinear`` that keeps
the original weight (steps of up to half the batch and long prefills use it: there plain sgemm is already
as fast) plus a packed copy used when more rows go through. The copy costs memory, so models whose packed
copies would not fit comfortably in RAM, single-row workers and torch builds without MKL get no copy.
Generic: no per-architecture code.

A compiled step of one row (``compiled.py``) multiplies by the weights as products and a sum instead, which
inductor turns into one vectorized loop that reads each weight once at the memory's speed. MKL's sgemm of one
row reads them at about half of it on an AMD EPYC (AVX2): SmolLM2's 210 layers took 31-40 ms with sgemm and
15-21 ms in inductor's loop, 28 and 21 GB/s against a memory that sums 30 GB/s. For more rows the loop reads
the weights once per row, so they keep sgemm.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


def mkl_packing_available() -> bool:
    return hasattr(torch.ops, "mkl") and hasattr(torch.ops.mkl, "_mkl_linear") and torch.backends.mkl.is_available()


class PackedLinear(nn.Module):
    def __init__(self, linear: nn.Linear, rows: int, pack: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # shared with the model (tied embeddings stay tied)
        self.bias = linear.bias
        self.rows = rows if pack else 0
        packed = torch.ops.mkl._mkl_reorder_linear_weight(linear.weight.detach(), rows) if pack else None
        self.register_buffer("packed", packed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # [n, in]
        n = flat.shape[0]
        if n == 1 and flat.device.type == "cpu" and torch.compiler.is_compiling():
            out = (flat.unsqueeze(1) * self.weight).sum(-1)  # one compiled row: inductor's loop (see the docstring)
            if self.bias is not None:
                out = out + self.bias
            return out.reshape(*x.shape[:-1], self.out_features)
        if n <= self.rows // 2 or n > self.rows:
            # No packed copy (``rows`` 0), or few rows: plain sgemm is as fast as the padded packed call (measured:
            # 2 rows 32 vs 46 ms a step, 4 rows 49 vs 49); many rows (prefill): large-M sgemm is efficient already.
            # (The copy itself is not looked at here: a compiled step that read it could not be saved.)
            return F.linear(x, self.weight, self.bias)
        if n < self.rows:  # the packed layout is for exactly ``rows`` rows: pad, then drop the padding
            flat = torch.cat([flat, flat.new_zeros(self.rows - n, flat.shape[1])])
        out = torch.ops.mkl._mkl_linear(flat, self.packed, self.weight, self.bias, self.rows)[:n]
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed_rows={self.rows}"


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def pack_linears(model: nn.Module, rows: int, memory_fraction: float = 0.25) -> int:
    """Replace the model's plain float32 CPU ``nn.Linear`` layers by ``PackedLinear``; returns the bytes the
    packed copies take (0 when nothing was packed). The layers get no packed copy for a single-row batch,
    without MKL, or when the copies would take more than ``memory_fraction`` of physical memory."""
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear and child.weight.dtype == torch.float32 and child.weight.device.type == "cpu"
    ]
    extra = sum(child.weight.numel() * 4 for _, _, child in targets)
    memory = _physical_memory()
    pack = rows >= 2 and mkl_packing_available()
    if targets and pack and memory and extra > memory_fraction * memory:
        log.info("not packing weights for batched decode: %.0f MiB of copies", extra / 2**20)
        pack = False
    for parent, name, child in targets:
        setattr(parent, name, PackedLinear(child, rows, pack))
    if not (targets and pack):
        return 0
    log.info("packed %d linear layers for %d-row decode steps (%.0f MiB)", len(targets), rows, extra / 2**20)
    return extra
