"""A CPU model's weights in memory of their own, backed by transparent huge pages where Linux gives them.

A decode step reads every weight once, front to back, and a small model's step is bound by how fast memory gives
them: each 4 KiB page costs the core a walk of the page tables and the hardware prefetcher a fresh start, where a
2 MiB page costs one. Linux backs anonymous memory with 2 MiB pages where a program asks for them (``madvise``:
the default setting of ``/sys/kernel/mm/transparent_hugepage/enabled`` on most distributions) or everywhere
(``always``); Transformers leaves most weights in the memory map of their Safetensors file, which gets neither.
SmolLM2's compiled one-row steps on a 2-core AMD EPYC (Zen 5), the same model's weights swapped between the two
homes and the steps alternated in one process (the same logits to the bit): float32 11.16 -> 10.34 ms and
9.91 -> 9.29 (two runs), q8_0 4.40 -> 4.14, q4_K_M 3.41 -> 3.37; copies of the weights in ordinary anonymous
memory gave about half of that.

``relocate`` copies every weight storage of a model into such memory, once, at load, before anything runs the
model (a step running on another thread would read a storage that is being freed); ``empty`` makes a new tensor
there (the fused weights of ``fused.py``, made while the model serves). Only whole 2 MiB pages are asked for: the
last part of each storage stays in 4 KiB pages, so no page holds memory past the weights. Elsewhere (not Linux, or
Python without ``MADV_HUGEPAGE``) ``relocate`` does nothing and ``empty`` is ``torch.empty``.
"""

from __future__ import annotations

import mmap
import sys

import torch
from torch import nn

HUGE_PAGE = 2 << 20


def available() -> bool:
    return sys.platform == "linux" and hasattr(mmap, "MADV_HUGEPAGE")


def _region(nbytes: int) -> torch.Tensor:
    """``nbytes`` of fresh anonymous memory (zeros) as a uint8 tensor starting on a 2 MiB boundary, its whole 2 MiB
    pages advised to be huge pages. The tensor keeps the mapping alive."""
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = -torch.frombuffer(region, dtype=torch.uint8, count=1).data_ptr() % HUGE_PAGE
    whole = nbytes // HUGE_PAGE * HUGE_PAGE
    if whole:
        try:
            region.madvise(mmap.MADV_HUGEPAGE, start, whole)
        except OSError:  # a kernel without transparent huge pages: ordinary pages
            pass
    return torch.frombuffer(region, dtype=torch.uint8, count=nbytes, offset=start)  # keeps ``region`` alive


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized CPU tensor, in huge pages where it takes at least one."""
    nbytes = int(torch.Size(shape).numel()) * dtype.itemsize
    if not available() or nbytes < HUGE_PAGE:
        return torch.empty(shape, dtype=dtype)
    return _region(nbytes).view(dtype).view(shape)


def relocate(model: nn.Module) -> int:
    """Copy each CPU storage of the model's parameters, buffers and other tensor attributes into fresh memory, in
    huge pages where it takes at least one; returns the bytes moved. Tensors that shared a storage (tied
    embeddings, views of fused weights) share the new one. Nothing may run the model meanwhile."""
    if not available():
        return 0
    tensors: dict[int, torch.Tensor] = {}  # id -> tensor, each tensor object once
    for module in model.modules():
        for value in (*module._parameters.values(), *module._buffers.values(), *vars(module).values()):
            if (isinstance(value, torch.Tensor) and value.device.type == "cpu" and value.layout == torch.strided
                    and not value.is_mkldnn and value.numel()):
                tensors[id(value)] = value
    homes: dict[int, torch.UntypedStorage] = {}  # old storage's address -> the new one
    moved = 0
    with torch.no_grad():
        for t in tensors.values():
            old = t.untyped_storage()
            key = old.data_ptr()
            if key not in homes:
                nbytes = old.nbytes()
                if nbytes >= HUGE_PAGE:
                    new = _region(nbytes)
                    new.copy_(torch.empty(0, dtype=torch.uint8).set_(old))
                    homes[key] = new.untyped_storage()
                else:
                    homes[key] = old.clone()
                moved += nbytes
            t.set_(homes[key], t.storage_offset(), t.size(), t.stride())
    return moved
