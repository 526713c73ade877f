"""Sibling layers that read the same input multiplied as one in compiled CPU steps: the query, key and value
projections of an attention block, the gate and up projections of an MLP (Transformers' names, which most
decoder architectures share).

A compiled one-token step reads every weight once, and SmolLM2's 211 small products of one row each paid a call,
a fork and join of the threads and a fresh start of the hardware prefetcher: its 30 layers' products alone, 4 a
layer instead of 7, took 16.0 instead of 18.5 ms in float32 and 5.9 instead of 7.0 ms in int8 (2-core AMD EPYC,
weights in memory), and the step's Python wrapper makes 90 fewer calls. The whole step (the fused and the plain one
alternated in one process): one row float32 22.9 -> 21.4 ms, q8_0 11.0 -> 9.6, q4_K_M 8.8 -> 7.9; eight rows
float32 35.4 -> 33.4; the same logits to the bit (each (row, column) of our kernels sees the same operations). ``fuse_siblings`` concatenates the siblings'
weights once (each sibling's own weights become a view of its rows: no memory is added) and puts a
``FusedMember`` in each one's place. In a compiled step the first member called multiplies the input by all
the weights with our kernel and keeps the product; the others, called with the same input, take their columns
of it. Anything else (eager steps, prefill, more rows than the kernel takes, another input) runs the sibling
itself, as before. A sibling's bias, if any, is added to its own columns.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from . import hugepages, packed, quantized
from .packed import PackedLinear
from .quantized import Int4WeightLinear, Int8WeightLinear, int4_native_available

log = logging.getLogger(__name__)

SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class FusedGroup(nn.Module):
    """The concatenated weights of siblings of one kind (``PackedLinear`` with our float32 kernel,
    ``Int8WeightLinear`` with our int8 kernel, or ``Int4WeightLinear``), and the product a compiled step's first
    member computed for the others."""

    def __init__(self, members: list[Any]) -> None:
        super().__init__()
        first = members[0]
        self.kind = type(first)
        self.size = len(members)
        self.widths = [int(m.out_features) for m in members]
        self.rows = {PackedLinear: packed.NATIVE_ROWS, Int8WeightLinear: quantized.NATIVE_ROWS,  # each layer's own limit
                     Int4WeightLinear: quantized.INT4_NATIVE_ROWS}[self.kind]
        names = {PackedLinear: ("weight",), Int8WeightLinear: ("weight", "scales32"),
                 Int4WeightLinear: ("weight", "scales", "mins")}[self.kind]
        self.group_size = int(first.group_size) if self.kind is Int4WeightLinear else 0
        for name in names:
            parts = [getattr(m, name).detach() for m in members]
            fused = hugepages.empty((sum(int(t.shape[0]) for t in parts), *parts[0].shape[1:]), parts[0].dtype)
            torch.cat(parts, out=fused)  # in huge pages, as the rest of the weights (``hugepages.relocate``)
            self.register_parameter(name, nn.Parameter(fused, requires_grad=False))
            start = 0
            for m, width in zip(members, self.widths, strict=True):  # each sibling's own rows: views, no copies
                view = fused[start : start + width]
                if isinstance(getattr(m, name), nn.Parameter):
                    setattr(m, name, nn.Parameter(view, requires_grad=False))
                else:
                    setattr(m, name, view)
                start += width
        biases = [m.bias for m in members]
        self.bias = (nn.Parameter(torch.cat([b.detach().float() for b in biases]), requires_grad=False)
                     if all(b is not None for b in biases) else None)
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.taken = 0

    def takes(self, flat: torch.Tensor) -> bool:
        return flat.device.type == "cpu" and flat.shape[0] <= self.rows and torch.compiler.is_compiling()

    def multiply(self, flat: torch.Tensor) -> torch.Tensor:
        """``flat`` [n, in] times every member's weights: [n, sum of their widths], float32."""
        x = flat.float().contiguous()
        if self.kind is PackedLinear:
            out = torch.ops.ollama_torch.f32_mm(x, self.weight)
        elif self.kind is Int8WeightLinear:
            out = torch.ops.ollama_torch.int8_mm(x, self.weight, self.scales32)
        else:
            out = torch.ops.ollama_torch.int4_mm(x, self.weight, self.scales, self.mins, self.group_size)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"{self.kind.__name__} x {self.size}, widths={self.widths}"


class FusedMember(nn.Module):
    """A sibling in its place: in a compiled step, its columns of the group's product; otherwise the sibling."""

    group: FusedGroup  # a plain attribute, not a child: the parent holds the group once

    def __init__(self, sibling: Any, group: FusedGroup, index: int) -> None:
        super().__init__()
        self.sibling = sibling
        self.in_features, self.out_features = sibling.in_features, sibling.out_features
        self.lo = sum(group.widths[:index])
        self.hi = self.lo + group.widths[index]
        object.__setattr__(self, "group", group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        group = self.group
        flat = x.reshape(-1, x.shape[-1])
        if not group.takes(flat):
            return self.sibling(x)
        pending = group.pending
        if pending is not None and pending[0] is x:
            out = pending[1]
        else:  # the first member called (or an input the others were not called with): the product of all
            out = group.multiply(flat)
            group.pending, group.taken = (x, out), 0
        group.taken += 1
        if group.taken >= group.size:
            group.pending = None  # nothing kept past the last member (the step's outputs stay as they were)
        return out[:, self.lo : self.hi].reshape(*x.shape[:-1], self.hi - self.lo).to(x.dtype)


def _fusible(members: list[Any]) -> bool:
    first = members[0]
    if type(first) not in (PackedLinear, Int8WeightLinear, Int4WeightLinear):
        return False
    if any(type(m) is not type(first) or m.in_features != first.in_features for m in members):
        return False
    if first.in_features % 16:  # every member's rows start on a 16-byte boundary in the concatenation (PyTorch's
        return False           # int8 kernel, which a prefill still runs on a member's view, needs it)
    if isinstance(first, PackedLinear):
        return all(m.native for m in members)  # our float32 kernel: float32 weights
    if any(m.bias is not None for m in members):  # quantized layers keep their bias in bfloat16: not fused
        return False
    if isinstance(first, Int8WeightLinear):
        return all(m.native for m in members)
    return int4_native_available() and all(m.group_size == first.group_size for m in members)


def fuse_siblings(model: nn.Module) -> int:
    """Put ``FusedMember``s in the place of each set of ``SIBLINGS`` our kernels multiply (see the module's
    docstring); returns how many sets. A model already fused is left as it is."""
    count = 0
    for parent in list(model.modules()):
        for names in SIBLINGS:
            members: list[Any] = [parent._modules.get(name) for name in names]
            if any(m is None for m in members) or not _fusible(members):
                continue
            group = FusedGroup(members)
            parent.add_module("fused_" + "_".join(n.split("_")[0] for n in names), group)
            for i, (name, member) in enumerate(zip(names, members, strict=True)):
                parent._modules[name] = FusedMember(member, group, i)
            count += 1
    if count:
        log.info("fused %d sets of sibling layers for compiled steps", count)
    return count
