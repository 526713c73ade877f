"""Our own C++ operators (``engine/native.py``): ``ollama_torch::int8_mm`` and ``ollama_torch::int4_mm``, the
decode-step kernels of 8-bit and 4-bit layers, ``ollama_torch::f32_mm`` and ``ollama_torch::decode_attention``, those
of float32 compiled steps."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from converters.int4 import Int4Linear, dequantize, quantize_int4, unpack
from ollama_torch.engine import native
from ollama_torch.engine.cpuinfo import cpu_flags
from ollama_torch.engine.native import cpp_compiler
from ollama_torch.engine.quantized import (
    INT4_NATIVE_ROWS,
    NATIVE_ROWS,
    Int4WeightLinear,
    Int8WeightLinear,
    block_order,
    int4_checkpoint,
    swap_int4_for_cpu,
)
from tests.traced import traced_ops

CAN_BUILD = platform.machine() == "x86_64" and {"avx2", "fma", "f16c"} <= cpu_flags() and cpp_compiler() is not None
needs_kernel = pytest.mark.skipif(not CAN_BUILD, reason="the native kernels are built on x86-64 CPUs with AVX2 and FMA only")


@pytest.fixture(autouse=True, scope="module")
def _kernels_loaded() -> None:
    """Every kernel loaded (built if need be) before any test calls it, whichever tests run."""
    if CAN_BUILD:
        for available in (native.int8_mm_available, native.int4_mm_available, native.f32_mm_available,
                          native.decode_attention_available):
            assert available()


AVX2_BUILD = "x86-64-v3"  # AVX2, FMA and F16C: the CPUs the kernels' 256-bit code is for


@pytest.fixture(scope="module", params=["native", AVX2_BUILD])
def ops(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The kernels' operators as built for this CPU, and, where it has AVX-512, as built for an AVX2 CPU: copies
    registered as ``ollama_torch_avx2::*``, so that the code CI would run on an AVX2 machine runs here too (the
    kernels have AVX-512 branches of their own, and the compiler vectorizes the rest differently)."""
    if request.param == "native":
        return torch.ops.ollama_torch
    if not CAN_BUILD or "avx512f" not in cpu_flags():
        pytest.skip("the native build is already the AVX2 one (or there is none)")
    compiler = cpp_compiler()
    assert compiler is not None
    sources = tmp_path_factory.mktemp("avx2-kernels")
    for path in native.KERNELS.iterdir():
        if path.suffix in (".cpp", ".h"):
            (sources / path.name).write_text(path.read_text().replace("(ollama_torch,", "(ollama_torch_avx2,"))
    with ThreadPoolExecutor(2) as pool:  # a compiler each (8-12 s a kernel)
        built = list(pool.map(lambda path: native._build(path, compiler, march=AVX2_BUILD), sorted(sources.glob("*.cpp"))))
    for path in built:
        torch.ops.load_library(str(path))
    return torch.ops.ollama_torch_avx2


def test_the_kernel_is_built_wherever_it_can_be() -> None:
    """Where the CPU has AVX2 and FMA and a compiler is installed (CI's machines), the kernel builds and loads; an
    8-bit layer made there uses it."""
    assert native.int8_mm_available() == CAN_BUILD
    assert native.int4_mm_available() == native.f32_mm_available() == native.decode_attention_available() == CAN_BUILD
    layer = Int8WeightLinear(torch.randint(-127, 128, (8, 64), dtype=torch.int8), torch.ones(8), None)
    assert layer.native == CAN_BUILD and layer.interleaved == (not CAN_BUILD)


def _reference(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return ((x.double() @ w.double().T) * scale.double()).float()


@needs_kernel
@pytest.mark.parametrize("k", [576, 100, 7, 1536])
def test_the_kernel_multiplies_rows_by_int8_columns(ops: Any, k: int) -> None:
    """Against a float64 product, for widths that are and are not multiples of its 32- and 8-weight chunks (64 and
    16 with AVX-512), column counts off its blocks, and 1 to 9 rows."""
    torch.manual_seed(0)
    n = 37
    w = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    scale = torch.rand(n) / 50
    for rows in range(1, 10):
        x = torch.randn(rows, k)
        got = ops.int8_mm(x, w, scale)
        expected = _reference(x, w, scale)
        assert got.shape == (rows, n) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def _int8_op(ops: Any, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    return ops.int8_mm(x, torch.randint(-127, 128, (200, x.shape[1]), dtype=torch.int8), torch.rand(200))


def _f32_op(ops: Any, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    return ops.f32_mm(x, torch.randn(200, x.shape[1]))


@needs_kernel
@pytest.mark.parametrize("op", [_int8_op, _f32_op])
@pytest.mark.parametrize("k", [576, 100])
def test_a_rows_result_does_not_depend_on_the_batch_or_the_threads(ops: Any, op: Any, k: int) -> None:
    """Each (row, column) has its own accumulators, the same operations in the same order whatever the rows beside it
    (the int8 kernel's four at a time with AVX-512, then two, then a last one; the float32 kernel's tiles of 8, 4, 2
    and 1) and the threads: a prompt scored alone and in a batch gets the same bits (as the float32 path's, see
    ``test_packed.py``), also where the width leaves a tail past the 8-weight chunks."""
    x = torch.randn(15, k)
    alone = torch.cat([op(ops, x[i : i + 1]) for i in range(15)])
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            for rows in range(1, 16):
                assert torch.equal(op(ops, x[:rows]), alone[:rows]), (count, rows)
    finally:
        torch.set_num_threads(threads)


@needs_kernel
@pytest.mark.parametrize("k", [576, 100, 7])
def test_the_f32_kernel_multiplies_rows_by_columns(ops: Any, k: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(37, k)
    for rows in range(1, 10):
        x = torch.randn(rows, k)
        got, expected = ops.f32_mm(x, w), (x.double() @ w.double().T).float()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    with pytest.raises(RuntimeError, match="w must be a contiguous float32"):
        torch.ops.ollama_torch.f32_mm(x, w.t())
    with pytest.raises(RuntimeError, match="x is \\[M, 3\\] but w is"):
        torch.ops.ollama_torch.f32_mm(torch.zeros(1, 3), w)


@needs_kernel
@pytest.mark.parametrize(("rows", "kv_heads", "groups", "dim", "window"), [
    (1, 3, 3, 64, 37), (8, 3, 3, 64, 256), (2, 4, 1, 128, 5), (3, 2, 4, 72, 300), (1, 1, 2, 96, 8), (2, 2, 2, 8, 1),
])
def test_the_attention_kernel_is_sdpa_over_a_window(ops: Any, rows: int, kv_heads: int, groups: int, dim: int, window: int) -> None:
    """One token's attention over a window of wider cache buffers (the step's strides), against PyTorch's SDPA in
    float64: head sizes that are and are not multiples of its 8- and 64-column chunks, windows that are and are not
    multiples of its 8 keys, masked columns (-inf and float32's lowest), a mask with a stride of its own, a row
    whose every column is masked (zeros, as no column to attend to), and the same result whatever the threads."""
    torch.manual_seed(0)
    q = torch.randn(rows, kv_heads, groups, dim) * 2
    keys, values = torch.randn(rows + 1, kv_heads, window + 9, dim), torch.randn(rows + 1, kv_heads, window + 9, dim)
    k, v = keys[:rows].narrow(2, 0, window), values[:rows].narrow(2, 0, window)
    wide = torch.zeros(rows, 1, 1, 2 * window)
    mask = wide[..., ::2]  # stride 2
    mask[..., : window // 3] = float("-inf")
    mask[0, ..., -1] = torch.finfo(torch.float32).min
    if rows > 1:
        mask[-1] = float("-inf")
    scale = dim ** -0.5
    got = ops.decode_attention(q, k, v, mask, scale)
    expected = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask.double(),
                                                                scale=scale)
    if rows > 1:  # SDPA's softmax of no column is NaN
        assert bool((got[-1] == 0).all())
        got, expected = got[:-1], expected[:-1]
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=2e-6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = ops.decode_attention(q, k, v, mask, scale)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(alone[: got.shape[0]], got)


@needs_kernel
def test_the_attention_kernel_reads_only_the_columns_a_row_leaves_open(ops: Any) -> None:
    """Rows open on columns of their own inside the window, as the step's cache leaves them (right-aligned: closed
    before a row's first column and past the written one, here a closed column among them too): the keys and values
    of the closed columns around a row's span (rounded out to the kernel's blocks of 8) are never read, so garbage
    there (NaN) changes nothing, and the result is the same, bit for bit, over a wider window whose added columns
    are closed."""
    torch.manual_seed(0)
    rows, kv_heads, groups, dim, window = 5, 3, 3, 64, 256
    lowest = torch.finfo(torch.float32).min
    q = torch.randn(rows, kv_heads, groups, dim)
    k, v = torch.randn(rows, kv_heads, 2 * window, dim), torch.randn(rows, kv_heads, 2 * window, dim)
    mask = torch.full((rows, 1, 1, 2 * window), lowest)
    for r in range(rows):
        first, last = 64 + 8 * r, 199 + 8 * (r % 2)  # [first, last]: blocks of 8
        mask[r, ..., first : last + 1] = 0.0
        mask[r, ..., first + 5] = float("-inf") if r % 2 else lowest
        k[r, :, :first] = v[r, :, :first] = k[r, :, last + 1 :] = v[r, :, last + 1 :] = float("nan")
    attention = ops.decode_attention
    got = attention(q, k[:, :, :window], v[:, :, :window], mask[..., :window], dim ** -0.5)
    assert bool(torch.isfinite(got).all())
    assert torch.equal(attention(q, k, v, mask, dim ** -0.5), got)
    clean = mask[..., :window] == 0
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.double(), k[:, :, :window].nan_to_num().double(), v[:, :, :window].nan_to_num().double(),
        attn_mask=mask[..., :window].double().masked_fill(~clean, float("-inf")), scale=dim ** -0.5)
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=2e-6)


@needs_kernel
def test_bad_attention_operands_are_errors_not_crashes() -> None:
    q, kv, mask = torch.zeros(1, 2, 2, 16), torch.zeros(1, 2, 4, 16), torch.zeros(1, 1, 1, 4)
    attention = torch.ops.ollama_torch.decode_attention
    with pytest.raises(RuntimeError, match="q must be a contiguous float32"):
        attention(q.double(), kv, kv, mask, 0.25)
    with pytest.raises(RuntimeError, match="but k is"):
        attention(q, torch.zeros(1, 3, 4, 16), kv, mask, 0.25)
    with pytest.raises(RuntimeError, match="contiguous in their last dimension"):
        attention(q, kv.transpose(2, 3).contiguous().transpose(2, 3)[..., :16], kv, mask, 0.25)
    with pytest.raises(RuntimeError, match="mask must be a float32"):
        attention(q, kv, kv, torch.zeros(1, 1, 1, 5), 0.25)
    with pytest.raises(RuntimeError, match="an empty window"):
        attention(q, kv[:, :, :0], kv[:, :, :0], mask[..., :0], 0.25)


@needs_kernel
def test_bad_operands_are_errors_not_crashes() -> None:
    w = torch.zeros(4, 64, dtype=torch.int8)
    op = torch.ops.ollama_torch.int8_mm
    with pytest.raises(RuntimeError, match="x must be a contiguous float32"):
        op(torch.zeros(1, 64, dtype=torch.bfloat16), w, torch.ones(4))
    with pytest.raises(RuntimeError, match="x is \\[M, 32\\] but w is \\[N, 64\\]"):
        op(torch.zeros(1, 32), w, torch.ones(4))
    with pytest.raises(RuntimeError, match="w must be a contiguous int8"):
        op(torch.zeros(1, 64), w.float(), torch.ones(4))
    with pytest.raises(RuntimeError, match="scale must be"):
        op(torch.zeros(1, 64), w, torch.ones(3))
    assert op(torch.zeros(0, 64), w, torch.ones(4)).shape == (0, 4)


@needs_kernel
@pytest.mark.parametrize("rows", [1, 4, NATIVE_ROWS + 1])
def test_an_8bit_layer_runs_it_for_decode_rows_eager_and_compiled(rows: int) -> None:
    """Up to ``NATIVE_ROWS`` rows (decode steps) take the kernel, eager and under ``torch.compile`` (inductor calls
    it as an extern kernel; its Meta kernel gives the shapes), in float32 from end to end; more rows (a prefill) take
    PyTorch's kernel in bfloat16."""
    torch.manual_seed(0)
    w = torch.randn(96, 64)
    absmax = w.abs().amax(1)
    int8 = torch.round(w / absmax[:, None] * 127).to(torch.int8)
    layer = Int8WeightLinear(int8, absmax, torch.randn(96))
    assert layer.native and not layer.interleaved and layer.fused_rows == 0
    x = torch.randn(rows, 1, 64)
    ops = traced_ops(layer, x)
    assert ("ollama_torch.int8_mm" in ops) == (rows <= NATIVE_ROWS), ops
    assert ("aten._weight_int8pack_mm" in ops) == (rows > NATIVE_ROWS), ops
    with torch.inference_mode():
        eager = layer(x)
        torch._dynamo.reset()
        compiled = torch.compile(layer, fullgraph=True)(x)
    expected = (x.double() @ int8.double().T * layer.scales.double() + layer.bias.double()).float()
    assert eager.shape == compiled.shape == (rows, 1, 96) and eager.dtype == torch.float32
    if rows <= NATIVE_ROWS:  # float32 sums of exact products: no bfloat16 rounding anywhere
        torch.testing.assert_close(eager, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    else:
        torch.testing.assert_close(eager, expected, rtol=0.02, atol=0.02 * float(expected.abs().max()))


@needs_kernel
def test_a_build_is_kept_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared library is built once into the cache directory (no temporary file left) and found there after."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    compiler = cpp_compiler()
    assert compiler is not None
    path = native._build(native.KERNELS / "int8_mm.cpp", compiler)
    assert path.parent == tmp_path / "ollama-torch" / "kernels" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    built = path.stat().st_mtime_ns
    assert native._build(native.KERNELS / "int8_mm.cpp", compiler) == path and path.stat().st_mtime_ns == built


def test_asking_for_the_kernel_loads_it_or_says_it_cannot() -> None:
    """``native=True`` gets the kernel (loaded if nothing loaded it yet) or an error, never a layer that fails at
    its first step."""
    int8 = torch.randint(-127, 128, (8, 64), dtype=torch.int8)
    if CAN_BUILD:  # in a process of its own, where nothing else has loaded the kernel
        script = ("import torch\nfrom ollama_torch.engine.quantized import Int8WeightLinear\n"
                  "layer = Int8WeightLinear(torch.ones(8, 64, dtype=torch.int8), torch.ones(8) * 127, None, native=True)\n"
                  "print(layer.native, layer(torch.ones(1, 64)).sum().item())\n")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.split() == ["True", "512.0"], done.stderr[-2000:]
    else:
        with pytest.raises(RuntimeError, match="not available"):
            Int8WeightLinear(int8, torch.ones(8), None, native=True)
    assert not Int8WeightLinear(int8, torch.ones(8), None, native=False).native


# -- int4 -------------------------------------------------------------------------------------------------------
def _int4(n: int, k: int, group: int) -> dict[str, torch.Tensor]:
    return quantize_int4(torch.randn(n, k), group)


def _int4_mm(x: torch.Tensor, parts: dict[str, torch.Tensor], group: int, ops: Any = torch.ops.ollama_torch) -> torch.Tensor:
    layer = Int4WeightLinear(parts["qweight"], parts["scales"], parts["mins"], None, group)
    return ops.int4_mm(x, layer.weight, layer.scales, layer.mins, group)


def _int4_reference(x: torch.Tensor, parts: dict[str, torch.Tensor], group: int) -> torch.Tensor:
    """What the kernel computes, in float64: each row quantized per group to int8 (scale ``max |x| / 127``, rounded
    to nearest, ties to even), times the codes, times the two scales; plus the mins times the float rows' group sums."""
    codes = unpack(parts["qweight"])
    n, k = codes.shape
    codes = codes.reshape(n, k // group, group).double()
    rows = x.reshape(x.shape[0], k // group, group)
    scale = rows.abs().amax(-1, keepdim=True) / 127.0  # float32, as the kernel's
    inverse = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
    quantized = torch.round((rows * inverse).clamp(-127, 127)).double()
    dots = torch.einsum("mgk,ngk->mng", quantized, codes)
    return ((dots * parts["scales"].double() * scale.squeeze(-1).double()[:, None]).sum(-1)
            + (rows.double().sum(-1)[:, None] * parts["mins"].double()).sum(-1)).float()


def test_block_order_puts_columns_16b_plus_i_and_16b_plus_8_plus_i_in_one_byte() -> None:
    codes = torch.arange(32, dtype=torch.uint8).remainder(16).view(1, 32)  # columns 0..15, 0..15
    stored = codes[:, 0::2] | (codes[:, 1::2] << 4)
    ordered = block_order(stored)
    assert ordered.tolist() == [[i | ((i + 8) << 4) for i in range(8)] * 2]


@needs_kernel
@pytest.mark.parametrize(("k", "group"), [(576, 32), (1536, 32), (96, 32), (64, 64), (192, 96), (320, 64)])
def test_the_int4_kernel_multiplies_rows_by_int4_columns(ops: Any, k: int, group: int) -> None:
    """Against ``_int4_reference`` (the rows quantized per group, as llama.cpp quantizes them for its 4-bit types),
    for groups of 32 (the stored formats', whose loop is unrolled) and others, group counts that are and are not
    multiples of the 8 the scales are widened by, column counts off its blocks of 2 and 4, 1 to 9 rows, and rows
    with a group of zeros (a scale of 0). Against the float64 product with the dequantized weights, what the
    quantized rows cost: within 4% of the largest output (1-2% for these random rows)."""
    torch.manual_seed(0)
    n = 37
    parts = _int4(n, k, group)
    w = dequantize(parts["qweight"], parts["scales"], parts["mins"], torch.float64)
    for rows in range(1, 10):
        x = torch.randn(rows, k)
        x[rows // 2, :group] = 0.0
        got = _int4_mm(x, parts, group, ops)
        expected = _int4_reference(x, parts, group)
        assert got.shape == (rows, n) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        exact = (x.double() @ w.T).float()
        torch.testing.assert_close(got, exact, rtol=0, atol=0.04 * float(exact.abs().max()))


@needs_kernel
def test_an_int4_rows_result_does_not_depend_on_the_batch_or_the_threads(ops: Any) -> None:
    torch.manual_seed(0)
    parts = _int4(203, 576, 32)
    x = torch.randn(9, 576)
    alone = torch.cat([_int4_mm(x[i : i + 1], parts, 32, ops) for i in range(9)])
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            for rows in range(1, 10):
                assert torch.equal(_int4_mm(x[:rows], parts, 32, ops), alone[:rows]), (count, rows)
    finally:
        torch.set_num_threads(threads)


@needs_kernel
def test_bad_int4_operands_are_errors_not_crashes() -> None:
    parts = _int4(4, 64, 32)
    layer = Int4WeightLinear(parts["qweight"], parts["scales"], parts["mins"], None, 32)
    q, scales, mins = layer.weight, layer.scales, layer.mins
    op = torch.ops.ollama_torch.int4_mm
    with pytest.raises(RuntimeError, match="x must be a contiguous float32"):
        op(torch.zeros(1, 64, dtype=torch.bfloat16), q, scales, mins, 32)
    with pytest.raises(RuntimeError, match="x is \\[M, 32\\] but q is \\[N, 32\\]"):
        op(torch.zeros(1, 32), q, scales, mins, 32)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        op(torch.zeros(1, 64), q, scales, mins, 16)
    with pytest.raises(RuntimeError, match="q must be a contiguous uint8"):
        op(torch.zeros(1, 64), q.float(), scales, mins, 32)
    with pytest.raises(RuntimeError, match="scales and mins must be"):
        op(torch.zeros(1, 64), q, scales[:, :2].contiguous(), mins, 32)
    with pytest.raises(RuntimeError, match="scales and mins must be"):
        op(torch.zeros(1, 64), q, scales, mins.float(), 32)
    assert op(torch.zeros(0, 64), q, scales, mins, 32).shape == (0, 4)


@needs_kernel
@pytest.mark.parametrize("rows", [1, 4, INT4_NATIVE_ROWS + 1])
def test_a_4bit_layer_runs_it_eager_and_compiled(rows: int) -> None:
    """Up to ``INT4_NATIVE_ROWS`` rows take the kernel, eager and under ``torch.compile`` (an extern kernel, shaped
    by its Meta kernel), against ``_int4_reference``; more take the dequantized float32 weights, against the stored
    layer's dequantized product. Both in float32; the layer keeps bfloat16 inputs in bfloat16."""
    torch.manual_seed(0)
    parts, bias = _int4(96, 128, 32), torch.randn(96)
    layer = Int4WeightLinear(parts["qweight"], parts["scales"], parts["mins"], bias, 32)
    x = torch.randn(rows, 1, 128)
    ops = traced_ops(layer, x)
    assert ("ollama_torch.int4_mm" in ops) == (rows <= INT4_NATIVE_ROWS), ops
    with torch.inference_mode():
        eager = layer(x)
        torch._dynamo.reset()
        compiled = torch.compile(layer, fullgraph=True)(x)
        half = layer(x.bfloat16())
    w = dequantize(parts["qweight"], parts["scales"], parts["mins"], torch.float64)
    if rows <= INT4_NATIVE_ROWS:
        expected = (_int4_reference(x.reshape(rows, 128), parts, 32) + bias).reshape(rows, 1, 96)
    else:
        expected = (x.double() @ w.T + bias.double()).float()
    assert eager.shape == compiled.shape == (rows, 1, 96) and eager.dtype == torch.float32 and half.dtype == torch.bfloat16
    torch.testing.assert_close(eager, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    torch.testing.assert_close(layer.dequantized(), w.float())


@needs_kernel
def test_int4_layers_loaded_in_the_stored_layout_are_swapped_or_prepared() -> None:
    """``swap_int4_for_cpu`` swaps the layers the kernel takes and prepares the others for PyTorch's kernels."""

    def stored(k: int, group: int) -> Int4Linear:
        layer = Int4Linear(k, 32, False, group)
        for name, value in _int4(32, k, group).items():
            getattr(layer, name).data = value
        return layer

    model = torch.nn.Sequential(stored(64, 32), stored(72, 24))
    assert swap_int4_for_cpu(model) == 1
    assert isinstance(model[0], Int4WeightLinear) and isinstance(model[1], Int4Linear) and model[1].packed_for_cpu


def test_only_an_int4_checkpoint_loads_the_int4_kernel(tmp_path: Path) -> None:
    """The loader builds or loads the int4 kernel for checkpoints that hold int4 layers, not for every model."""
    assert not int4_checkpoint(tmp_path)  # no config.json
    for config, expected in [({"quantization_config": {"quant_method": "ollama_int4", "group_size": 32}}, True),
                             ({"quantization_config": {"quant_method": "bitsandbytes"}}, False), ({}, False), ([], False)]:
        (tmp_path / "config.json").write_text(json.dumps(config))
        assert int4_checkpoint(tmp_path) == expected, config
    (tmp_path / "config.json").write_text("{not json")
    assert not int4_checkpoint(tmp_path)
