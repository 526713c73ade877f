"""Float32 Linear layers on CPU (``engine/packed.py``): MKL-packed copies for batched steps, and one compiled row
multiplied in inductor's own loop."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ollama_torch.engine.packed import PackedLinear, mkl_packing_available, pack_linears


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32, bias=False)).eval()


def _ops(fn: Any, *args: torch.Tensor) -> str:
    """The ops of the graph dynamo traces ``fn`` into (what inductor would be handed)."""
    seen: list[str] = []

    def record(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=record, fullgraph=True)(*args)
    return " ".join(seen)


@pytest.mark.parametrize("rows", [1, 8])
def test_every_float32_linear_is_wrapped_and_packed_only_for_batches(rows: int) -> None:
    model = _model()
    reference = _model()
    extra = pack_linears(model, rows)
    layers = [m for m in model.modules() if isinstance(m, PackedLinear)]
    assert len(layers) == 2 and layers[0].weight is model[0].weight
    packs = rows > 1 and mkl_packing_available()
    assert extra == (4 * (64 * 96 + 96 * 32) if packs else 0)
    assert all((m.packed is not None) == packs for m in layers)
    with torch.inference_mode():
        for n in (1, 3, 8, 20):  # plain sgemm, the packed call (with and without padding), prefill
            x = torch.randn(n, 64)
            torch.testing.assert_close(model(x), reference(x))


def test_a_bfloat16_linear_is_left_alone() -> None:
    model = _model().to(torch.bfloat16)
    assert pack_linears(model, 8) == 0 and not any(isinstance(m, PackedLinear) for m in model.modules())


def _step(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = layer(x)
    return out


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_one_compiled_row_is_a_product_and_a_sum(rows: int) -> None:
    """A compiled step of one row multiplies in inductor's loop (no matmul in its graph), which reads the weights
    once; more rows keep the matmul. Both give F.linear's result. Steps of up to half the batch compile ahead of
    time as the decode step does (``compiled.py``): none reads the packed copy, whose MKL layout dynamo cannot
    package."""
    layer = PackedLinear(nn.Linear(64, 96), 8, pack=mkl_packing_available())
    x = torch.randn(rows, 1, 64)
    ops = _ops(layer, x)
    assert ("linear" in ops or "addmm" in ops) == (rows > 1), ops
    ahead: Any = torch.compile(_step, fullgraph=True, options={"guard_filter_fn": torch.compiler.keep_portable_guards_unsafe})
    with torch.inference_mode():
        got = ahead.aot_compile(((layer, x), {}))(layer, x)
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
