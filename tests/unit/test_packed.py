"""Float32 Linear layers on CPU (``engine/packed.py``): packed copies (MKL's or oneDNN's) for batched steps, and
compiled steps that read the weights once (our kernel, or inductor's own loop for one row)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ollama_torch.engine.cpuinfo import cpuinfo
from ollama_torch.engine.native import f32_mm_available
from ollama_torch.engine.packed import (
    PackedLinear,
    mkl_packing_available,
    onednn_packing_available,
    pack_linears,
    packing_backend,
)
from tests.traced import traced_ops


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32, bias=False)).eval()


BACKENDS = ["", *(["mkl"] if mkl_packing_available() else []), *(["onednn"] if onednn_packing_available() else [])]


@pytest.mark.parametrize("rows", [1, 8])
def test_every_float32_linear_is_wrapped_and_packed_only_for_batches(rows: int) -> None:
    model = _model()
    reference = _model()
    extra = pack_linears(model, rows)
    layers = [m for m in model.modules() if isinstance(m, PackedLinear)]
    assert len(layers) == 2 and layers[0].weight is model[0].weight
    backend = packing_backend() if rows > 1 else ""
    assert extra == (4 * (64 * 96 + 96 * 32) if backend else 0)
    assert all(m.backend == backend and (m.packed is not None) == bool(backend) for m in layers)
    with torch.inference_mode():
        for n in (1, 3, 8, 20):
            x = torch.randn(n, 64)
            torch.testing.assert_close(model(x), reference(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_gives_what_f_linear_gives(backend: str) -> None:
    """At every row count: one row, up to half the batch (MKL: plain sgemm), the packed call (MKL: with and
    without padding), and a prefill beyond the batch."""
    layer = PackedLinear(nn.Linear(64, 96), 8, backend)
    with torch.inference_mode():
        for n in (1, 3, 5, 8, 20):
            x = torch.randn(n, 64)
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not onednn_packing_available(), reason="no oneDNN")
def test_onednns_rows_do_not_depend_on_the_rows_beside_them() -> None:
    """A prompt's logprobs alone and in a batch, or a row decoded alone and among others, are the same bits."""
    layer = PackedLinear(nn.Linear(64, 96), 8, "onednn")
    x = torch.randn(40, 64)
    with torch.inference_mode():
        full = layer(x)
        for n in (1, 2, 5, 8, 13):
            assert torch.equal(layer(x[:n]), full[:n]), n


def test_the_packing_is_mkls_on_intel_and_onednns_elsewhere() -> None:
    """MKL's packed sgemm of a few rows was the slowest there was on an AMD EPYC (see ``packing_backend``)."""
    info = cpuinfo() or ""
    if "vendor_id" not in info:
        pytest.skip("no /proc/cpuinfo")
    if mkl_packing_available() and onednn_packing_available():
        assert packing_backend() == ("mkl" if "GenuineIntel" in info else "onednn")


def test_a_bfloat16_linear_is_left_alone() -> None:
    model = _model().to(torch.bfloat16)
    assert pack_linears(model, 8) == 0 and not any(isinstance(m, PackedLinear) for m in model.modules())


def _step(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = layer(x)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("native", [False, *([True] if f32_mm_available() else [])])
@pytest.mark.parametrize("rows", [1, 2, 4])
def test_a_compiled_step_reads_the_weights_once(rows: int, backend: str, native: bool) -> None:
    """A compiled step of up to ``NATIVE_ROWS`` rows calls our kernel where it is built (``native.py``: it reads the
    weights once for all the rows); without it, one row multiplies in inductor's loop (no matmul in its graph)
    and more rows keep the matmul. All give F.linear's result. Steps of up to half the batch compile ahead of
    time as the decode step does (``compiled.py``): none reads the packed copy, whose MKL layout dynamo cannot
    package."""
    layer = PackedLinear(nn.Linear(64, 96), 8, backend, native=None if native else False)
    assert layer.native == native
    x = torch.randn(rows, 1, 64)
    ops = traced_ops(layer, x)
    assert ("ollama_torch.f32_mm" in ops) == native, ops
    assert ("linear" in ops or "addmm" in ops) == (rows > 1 and not native), ops
    ahead: Any = torch.compile(_step, fullgraph=True, options={"guard_filter_fn": torch.compiler.keep_portable_guards_unsafe})
    with torch.inference_mode():
        got = ahead.aot_compile(((layer, x), {}))(layer, x)
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_an_eager_only_model_does_not_ask_for_the_kernel() -> None:
    """``native=False`` (a worker that compiles nothing) leaves every layer off our kernel; the default takes it
    where it is built."""
    eager, compiled = _model(), _model()
    pack_linears(eager, 8, native=False)
    pack_linears(compiled, 8)
    assert not any(m.native for m in eager.modules() if isinstance(m, PackedLinear))
    assert all(m.native == f32_mm_available() for m in compiled.modules() if isinstance(m, PackedLinear))
