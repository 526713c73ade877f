"""bitsandbytes 8-bit layers on CPU, run by PyTorch's weight-only int8 kernel (``engine/quantized.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ollama_torch.engine.cpuinfo import cpu_flags
from ollama_torch.engine.quantized import (
    Int8WeightLinear,
    bfloat16_is_native,
    default_fused_rows,
    interleave,
    prepare_for_cpu,
    quantize_head_for_cpu,
    quiet_bitsandbytes,
    resident_bytes,
)
from tests.traced import traced_ops

bnb = pytest.importorskip("bitsandbytes")


def test_the_kernel_multiplies_the_stored_rows() -> None:
    torch.manual_seed(0)
    w = torch.randn(48, 64)
    absmax = w.abs().amax(1)
    int8 = torch.round(w / absmax[:, None] * 127).to(torch.int8)
    bias = torch.randn(48)
    layer = Int8WeightLinear(int8, absmax, bias)
    x = torch.randn(2, 3, 64)
    expected = x @ (int8.float() * absmax[:, None] / 127).T + bias
    got = layer(x)
    assert got.shape == (2, 3, 48) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=0.05 * expected.abs().max().item())


def test_weights_memory_mapped_at_any_offset_are_realigned() -> None:
    """``_weight_int8pack_mm`` reads its weights with aligned vector loads and crashed the process (SIGSEGV) on
    rows that did not start on a 16-byte boundary, as weights loaded from a Safetensors file at an odd offset
    do (a quantized reranker's did). The layer keeps its own aligned copy."""
    torch.manual_seed(0)
    storage = torch.randint(-127, 127, (48 * 64 + 64,), dtype=torch.int8)
    start = (-storage.data_ptr()) % 64 + 46  # 46 bytes past a 64-byte boundary, as the reranker's were
    int8 = storage[start : start + 48 * 64].view(48, 64)
    assert int8.is_contiguous() and int8.data_ptr() % 16 != 0
    absmax = torch.rand(48) + 0.5
    layer = Int8WeightLinear(int8, absmax, None)
    assert layer.weight.data_ptr() % 64 == 0 and torch.equal(layer.int8_rows(), int8)
    x = torch.randn(5, 64)
    expected = x @ (int8.float() * absmax[:, None] / 127).T
    assert torch.allclose(layer(x), expected, atol=0.05 * expected.abs().max().item())


def test_a_bitsandbytes_8bit_model_swaps_and_stays_close(tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quiet_bitsandbytes()
    ids = torch.tensor([[1, 5, 9, 17, 33, 65]])
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.bfloat16).eval()
    model = AutoModelForCausalLM.from_pretrained(
        str(tiny_llama_dir), dtype=torch.bfloat16, device_map="cpu", quantization_config=BitsAndBytesConfig(load_in_8bit=True)
    ).eval()
    with torch.inference_mode():
        reference = plain(ids).logits.float()
        before = model(ids).logits.float()
        layers = sum(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
        size = resident_bytes(model)
        assert layers > 0 and prepare_for_cpu(model) == layers
        assert not any(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
        after = model(ids).logits.float()
    rows = sum(m.out_features for m in model.modules() if isinstance(m, Int8WeightLinear))
    # the same int8 rows, plus one bfloat16 scale per row and its float32 copy for the native kernel
    assert resident_bytes(model) <= size + 6 * rows
    # weight-only int8 is at least as close to the unquantized model as LLM.int8 (which also rounds activations)
    err_after = (after - reference).abs().mean().item()
    err_before = (before - reference).abs().mean().item()
    assert err_after <= err_before * 1.1 + 1e-3, (err_after, err_before)
    assert torch.equal(after.argmax(-1), reference.argmax(-1))


def test_the_weights_are_kept_interleaved_in_32_bit_words() -> None:
    """Each 32-bit word of a row holds the weights of columns i, i + k/4, i + k/2, i + 3k/4 (byte j: column
    j * k/4 + i), which the compiled loop multiplies by four contiguous slices of the input; ``int8_rows`` gives
    the input's order back. A width that is not a multiple of 4 keeps its order; one that is not a multiple of 16
    is multiplied by the weights dequantized for the call (PyTorch's kernel crashed the process on it on an AMD
    EPYC with AVX-512)."""
    int8 = torch.randint(-127, 128, (6, 16), dtype=torch.int8)
    layer = Int8WeightLinear(int8, torch.ones(6) * 127, None, native=False)
    words = layer.weight.view(torch.int32)  # little-endian: byte j is bits 8j..8j+7
    for j in range(4):
        assert torch.equal(((words << (24 - 8 * j)) >> 24).to(torch.int8), int8[:, j * 4 : (j + 1) * 4])
    assert torch.equal(layer.int8_rows(), int8) and torch.equal(interleave(torch.arange(8)), torch.tensor([0, 2, 4, 6, 1, 3, 5, 7]))
    odd = Int8WeightLinear(torch.randint(-127, 128, (6, 18), dtype=torch.int8), torch.ones(6), None, fused_rows=4, native=False)
    assert not odd.interleaved and odd.fused_rows == 0
    x = torch.randn(3, 18)
    assert "aten._weight_int8pack_mm" not in traced_ops(odd, x)
    expected = (x.bfloat16().double() @ (odd.weight.double() * odd.scales.double()[:, None]).T)
    torch.testing.assert_close(odd(x).double(), expected, rtol=0.02, atol=0.02 * float(expected.abs().max()))
    sixteen = Int8WeightLinear(torch.randint(-127, 128, (6, 32), dtype=torch.int8), torch.ones(6), None, fused_rows=0,
                               native=False)
    assert "aten._weight_int8pack_mm" in traced_ops(sixteen, torch.randn(1, 32))


def test_a_compiled_step_multiplies_few_rows_in_its_own_loop_on_avx512_one_row_elsewhere() -> None:
    """The rows up to which the compiled loop beats the kernel (measured: see ``default_fused_rows``)."""
    capability = torch.backends.cpu.get_cpu_capability()
    assert default_fused_rows() == (4 if capability.startswith("AVX512") else 1), capability


@pytest.mark.parametrize("rows", [1, 2, 4, 8])
def test_a_compiled_step_of_a_few_rows_multiplies_in_its_own_loop(rows: int) -> None:
    """Without the native kernel (``test_native.py``): under ``torch.compile`` on a CPU, up to ``fused_rows`` rows are multiplied as products and a sum over the
    weights' 32-bit words (which inductor fuses into one loop over the weights); more rows, and eager calls,
    take the kernel. Both give what the kernel gives, to bfloat16's rounding."""
    torch.manual_seed(0)
    w = torch.randn(96, 64)
    absmax = w.abs().amax(1)
    layer = Int8WeightLinear(torch.round(w / absmax[:, None] * 127).to(torch.int8), absmax, torch.randn(96), fused_rows=4,
                             native=False)
    x = torch.randn(rows, 1, 64)
    ops = traced_ops(layer, x)
    assert ("aten._weight_int8pack_mm" in ops) == (rows > 4), ops
    with torch.inference_mode():
        expected = layer(x)
        got = torch.compile(layer, fullgraph=True)(x)
        reference = x @ (w / absmax[:, None] * 127).round().T * (absmax / 127) + layer.bias.float()
    assert got.shape == expected.shape == (rows, 1, 96) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0.02, atol=0.02 * float(expected.abs().max()))
    torch.testing.assert_close(expected, reference, rtol=0.02, atol=0.02 * float(reference.abs().max()))


def test_a_float_layer_quantized_per_row_only_rounds_each_weight() -> None:
    """``from_float``: one bfloat16 scale per row, rounded up before the row is divided by it, so no weight is
    clipped and each comes back within half a step (a row's scale rounded to bfloat16 after the division
    would scale the whole row by up to 0.4%)."""
    torch.manual_seed(0)
    linear = nn.Linear(64, 96).to(torch.bfloat16)
    with torch.no_grad():
        linear.weight[3] *= 1000  # rows of very different ranges
        linear.weight[5] = 0  # and an empty one
    layer = Int8WeightLinear.from_float(linear, fused_rows=0)
    w, scales = linear.weight.float(), layer.scales.float()
    assert layer.weight.dtype == torch.int8 and layer.scales.dtype == torch.bfloat16 and layer.fused_rows == 0
    assert bool((scales * 127 >= w.abs().amax(1)).all())
    assert bool(((layer.int8_rows().float() * scales[:, None] - w).abs() <= scales[:, None] * 0.501).all())
    assert bool((layer.int8_rows().abs().amax(1)[torch.arange(96) != 5] >= 126).all())  # each row uses the range
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        expected = linear(x).float()
        torch.testing.assert_close(layer(x).float(), expected, rtol=0.02, atol=0.02 * float(expected.abs().max()))


def _random_llama(dtype: torch.dtype, tied: bool = True) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    return LlamaForCausalLM(config).to(dtype).eval()


@pytest.mark.parametrize("tied", [True, False])
def test_a_quantized_models_output_head_goes_8bit_on_cpu(tied: bool) -> None:
    """The 16-bit output head of a quantized model becomes an 8-bit layer that always takes a kernel, ours where
    it is built, else PyTorch's (at the head's width either beats both the bfloat16 matmul and the fused loop);
    tied input embeddings keep their 16-bit table."""
    model = _random_llama(torch.bfloat16, tied)
    old = model.lm_head.weight
    ids = torch.randint(0, 512, (2, 12))
    with torch.inference_mode():
        before = model(ids).logits.float()
        assert quantize_head_for_cpu(model)
        after = model(ids).logits.float()
    head = model.get_output_embeddings()
    assert isinstance(head, Int8WeightLinear) and head is model.lm_head and head.fused_rows == 0
    embeddings = model.get_input_embeddings().weight
    assert embeddings.dtype == torch.bfloat16 and (embeddings is old) == tied
    torch.testing.assert_close(after, before, rtol=0, atol=0.03 * float(before.abs().max()))
    assert float((after.argmax(-1) == before.argmax(-1)).float().mean()) >= 0.9
    kernel = "ollama_torch.int8_mm" if head.native else "aten._weight_int8pack_mm"
    assert kernel in traced_ops(head, torch.randn(1, 1, 64, dtype=torch.bfloat16))
    assert not quantize_head_for_cpu(model)  # once


def test_a_float32_head_stays() -> None:
    """``OLLAMA_TORCH_DTYPE=float32`` casts a quantized model's unquantized layers to float32: its head stays."""
    model = _random_llama(torch.float32)
    assert not quantize_head_for_cpu(model) and type(model.lm_head) is nn.Linear


def test_a_float32_head_the_loader_widened_goes_8bit() -> None:
    """On a CPU without native bfloat16 the loader widens a quantized model's unquantized layers to float32: its
    head (float32 by our doing, not by ``OLLAMA_TORCH_DTYPE``) is quantized all the same."""
    model = _random_llama(torch.float32)
    assert quantize_head_for_cpu(model, float32=True) and isinstance(model.lm_head, Int8WeightLinear)
    assert model.get_input_embeddings().weight.dtype == torch.float32


def test_native_bfloat16_is_amx_not_avx512_bf16_alone() -> None:
    """AMX, not AVX-512 BF16 alone (an AMD EPYC with it computes a quantized model faster in float32)."""
    flags = cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags")
    assert bfloat16_is_native() == ("amx_tile" in flags), sorted(flags & {"avx512_bf16", "amx_tile", "avx512f"})
