"""Asymmetric int4 (``Q4_K_M`` / ``Q4_K_S``): exact on llama.cpp's type-1 grid, the CPU kernel against
plain dequantization, and loading through Transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from converters.int4 import Int4Linear, dequantize, quantize_int4, register, unpack
from converters.quantize import quantize_directory
from converters.quantize_schemes import SCHEMES
from ollama_torch.engine.quantized import resident_bytes


def type1_weight(out_f: int, in_f: int, group: int = 32) -> torch.Tensor:
    """Weights as a Q4_1 block stores them: ``d * q + m`` with float16 d and m and codes spanning 0..15."""
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (out_f, in_f // group, group), generator=g)
    q[..., 0], q[..., 1] = 0, 15
    d = (torch.rand(out_f, in_f // group, 1, generator=g) * 0.02 + 1e-3).half().float()
    m = (-torch.rand(out_f, in_f // group, 1, generator=g) * 0.1).half().float()
    return (q * d + m).reshape(out_f, in_f)


def test_type1_weights_are_reproduced_exactly() -> None:
    w = type1_weight(48, 128)
    parts = quantize_int4(w, 32)
    assert parts["qweight"].shape == (48, 64) and parts["qweight"].dtype == torch.uint8
    assert parts["scales"].shape == parts["mins"].shape == (48, 4)
    torch.testing.assert_close(dequantize(parts["qweight"], parts["scales"], parts["mins"], torch.float32), w, atol=2e-4, rtol=0)


def test_nibble_order() -> None:
    codes = torch.arange(16, dtype=torch.uint8).repeat(3, 2)  # [3, 32]
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    assert torch.equal(unpack(packed), codes)


def _linear(w: torch.Tensor, bias: torch.Tensor | None) -> Int4Linear:
    layer = Int4Linear(w.shape[1], w.shape[0], bias is not None, 32)
    parts = quantize_int4(w, 32)
    for name, value in parts.items():
        getattr(layer, name).data = value
    if bias is not None:
        layer.bias.data = bias  # type: ignore[union-attr]
    return layer


@pytest.mark.parametrize("rows", [1, 7])
def test_cpu_kernel_matches_dequantization(rows: int) -> None:
    w = torch.randn(96, 192)
    bias = torch.randn(96)
    reference = _linear(w, bias)
    kernel = _linear(w, bias)
    kernel.prepare()
    if not kernel.packed_for_cpu:
        pytest.skip("this torch build has no int4 CPU kernel")
    x = torch.randn(2, rows, 192, dtype=torch.bfloat16)
    expected = reference(x.float())  # dequantized float32 weights
    got = kernel(x)
    assert got.shape == (2, rows, 96) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.15, rtol=0.02)


def test_cpu_kernel_takes_a_strided_input() -> None:
    """BERT's pooler feeds its dense layer ``hidden[:, 0]``, a view that is not contiguous; the kernel refuses
    such an input (a 500 on reranking or embedding with a q4_K_M encoder), so the layer lays it out first."""
    w = torch.randn(96, 192)
    reference, kernel = _linear(w, None), _linear(w, None)
    kernel.prepare()
    if not kernel.packed_for_cpu:
        pytest.skip("this torch build has no int4 CPU kernel")
    hidden = torch.randn(5, 7, 192, dtype=torch.bfloat16)
    first = hidden[:, 0]  # [5, 192], stride (7 * 192, 1)
    assert not first.is_contiguous()
    torch.testing.assert_close(kernel(first).float(), reference(first.float()), atol=0.15, rtol=0.02)


def test_loads_through_transformers_as_int4(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    quantize_directory(tiny_llama_dir, tmp_path / "q", SCHEMES["Q4_K_M"], device="cpu")
    register()
    register()  # idempotent
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "q"), dtype=torch.bfloat16)
    layers = [m for m in model.modules() if isinstance(m, Int4Linear)]
    assert len(layers) == 14 and isinstance(model.lm_head, torch.nn.Linear)
    source = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    assert resident_bytes(model) < 0.5 * resident_bytes(source)
    ids = torch.tensor([[1, 5, 9, 30]])
    with torch.inference_mode():
        assert torch.isfinite(model(ids).logits.float()).all()
        # Greedy next tokens agree with the float32 model on most positions of a random-weight model.
        agree = (model(ids).logits.argmax(-1) == source(ids).logits.argmax(-1)).float().mean()
    assert agree >= 0.5
