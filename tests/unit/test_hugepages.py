"""``engine/hugepages.py``: a CPU model's weights moved into memory of their own, in transparent huge pages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from ollama_torch.engine import hugepages

needs_linux = pytest.mark.skipif(not hugepages.available(), reason="huge pages are asked for on Linux only")
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
THP_ON = THP.exists() and "[never]" not in THP.read_text()


def _huge_kib(tensor: torch.Tensor) -> int:
    """The AnonHugePages of the mapping that holds ``tensor``'s first byte, in KiB (from /proc/self/smaps)."""
    address = tensor.data_ptr()
    inside = False
    for line in Path(f"/proc/{os.getpid()}/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    raise AssertionError("no mapping holds the tensor")


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(3000, 512)  # 6 MB: huge pages
        self.head = nn.Linear(512, 3000, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.small = nn.Linear(16, 8)  # kilobytes: an ordinary copy
        self.register_buffer("table", torch.arange(1_000_000, dtype=torch.float32).view(1000, 1000), persistent=False)
        self.rows = self.table[10:20]  # a plain attribute, a view of the buffer
        self.empty = nn.Parameter(torch.zeros(0), requires_grad=False)


@needs_linux
def test_relocate_moves_every_storage_and_keeps_values_ties_and_views() -> None:
    torch.manual_seed(0)
    model = _Model().requires_grad_(False)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    old = {name: t.data_ptr() for name, t in model.state_dict().items() if t.numel()}
    moved = model.embed.weight.untyped_storage().nbytes() + model.table.untyped_storage().nbytes() + sum(
        p.untyped_storage().nbytes() for p in model.small.parameters())
    assert hugepages.relocate(model) == moved
    for name, t in model.state_dict().items():
        assert torch.equal(t, before[name]), name
        if t.numel():
            assert t.data_ptr() != old[name], name
    assert model.head.weight is model.embed.weight
    assert model.rows.untyped_storage().data_ptr() == model.table.untyped_storage().data_ptr()
    assert model.rows.data_ptr() == model.table[10].data_ptr()
    model.table[10, 0] = -1.0  # still a view of it
    assert model.rows[0, 0] == -1.0
    assert model.embed.weight.data_ptr() % hugepages.HUGE_PAGE == 0 and model.table.data_ptr() % hugepages.HUGE_PAGE == 0
    x = torch.randn(2, 16)
    torch.testing.assert_close(model.small(x), x @ before["small.weight"].T + before["small.bias"])


@needs_linux
@pytest.mark.skipif(not THP_ON, reason="transparent huge pages are off on this machine")
def test_relocated_weights_sit_in_huge_pages_but_their_tails_do_not() -> None:
    model = _Model()
    hugepages.relocate(model)
    embed = model.embed.weight
    assert embed.untyped_storage().nbytes() == 3000 * 512 * 4  # 5.9 MiB: two whole huge pages and a tail
    assert _huge_kib(embed) == 2 * 2048


def test_empty_is_a_tensor_of_the_shape_asked_for() -> None:
    for shape, dtype in (((3, 5), torch.float32), ((1024, 1024), torch.float32), ((700, 3000), torch.int8),
                         ((4096, 1024), torch.uint8), ((0, 4), torch.float16)):
        t = hugepages.empty(shape, dtype)
        assert t.shape == shape and t.dtype == dtype and t.is_contiguous()
        t.fill_(1)
        assert int(t.sum()) == t.numel()
