"""Sibling layers multiplied as one in compiled CPU steps (``engine/fused.py``): q/k/v and gate/up of each kind our
kernels take (float32 ``PackedLinear``, ``Int8WeightLinear``, ``Int4WeightLinear``), one kernel call for the set
under ``torch.compile``, each member's columns the same bits as its own kernel call; eager, the layers themselves;
the weights shared, not copied; and a tiny Llama's compiled step equal to its eager one after the fusion."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from converters.int4 import quantize_int4
from ollama_torch.engine import native
from ollama_torch.engine.cpuinfo import cpu_flags
from ollama_torch.engine.fused import FusedGroup, FusedMember, fuse_siblings
from ollama_torch.engine.native import cpp_compiler
from ollama_torch.engine.packed import PackedLinear, pack_linears
from ollama_torch.engine.quantized import Int4WeightLinear, Int8WeightLinear
from tests.traced import traced_ops

CAN_BUILD = platform.machine() == "x86_64" and {"avx2", "fma", "f16c"} <= cpu_flags() and cpp_compiler() is not None
needs_kernels = pytest.mark.skipif(not CAN_BUILD, reason="the native kernels are built on x86-64 CPUs with AVX2 and FMA only")



@pytest.fixture(autouse=True, scope="module")
def _kernels_loaded() -> None:
    """The kernels loaded (built if need be) before a layer calls one, as the loader's checks do for a model."""
    if CAN_BUILD:
        assert native.f32_mm_available() and native.int8_mm_available() and native.int4_mm_available()


WIDTHS = (64, 32, 32)  # q, k, v (grouped-query: narrower keys and values)
K = 96


def _layer(kind: str, width: int, bias: bool) -> nn.Module:
    w = torch.randn(width, K)
    b = torch.randn(width) if bias else None
    if kind == "f32":
        linear = nn.Linear(K, width, bias=bias)
        with torch.no_grad():
            linear.weight.copy_(w)
            if b is not None:
                linear.bias.copy_(b)
        return PackedLinear(linear, rows=8)
    if kind == "int8":
        absmax = w.abs().amax(1)
        return Int8WeightLinear(torch.round(w / absmax[:, None] * 127).to(torch.int8), absmax, b)
    parts = quantize_int4(w, 32)
    return Int4WeightLinear(parts["qweight"], parts["scales"], parts["mins"], b, 32)


class Attention(nn.Module):
    def __init__(self, kind: str, bias: bool = False) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = (_layer(kind, w, bias) for w in WIDTHS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q_proj(x), self.k_proj(x) * 2, self.v_proj(x) - 1], dim=-1)


@needs_kernels
@pytest.mark.parametrize(("kind", "op", "bias"), [("f32", "f32_mm", False), ("f32", "f32_mm", True),
                                                  ("int8", "int8_mm", False), ("int4", "int4_mm", False)])
def test_a_compiled_step_multiplies_the_siblings_once_with_the_same_bits(kind: str, op: str, bias: bool) -> None:
    torch.manual_seed(0)
    block = Attention(kind, bias)
    x = torch.randn(3, 1, K)
    with torch.inference_mode():
        torch._dynamo.reset()
        before = torch.compile(block, fullgraph=True)(x)  # each layer its own kernel call
    own = [getattr(block, n).weight for n in ("q_proj", "k_proj", "v_proj")]
    assert fuse_siblings(block) == 1 and fuse_siblings(block) == 0  # once
    group = block.fused_q_k_v
    assert isinstance(group, FusedGroup) and all(isinstance(getattr(block, n), FusedMember) for n in ("q_proj", "k_proj", "v_proj"))
    start = group.weight.data_ptr()  # the layers' weights are views of the concatenation: nothing copied
    sizes = [w.numel() * w.element_size() for w in own]
    assert [block.q_proj.sibling.weight.data_ptr(), block.k_proj.sibling.weight.data_ptr(),
            block.v_proj.sibling.weight.data_ptr()] == [start, start + sizes[0], start + sizes[0] + sizes[1]]
    assert all(torch.equal(a, b.sibling.weight) for a, b in zip(own, (block.q_proj, block.k_proj, block.v_proj), strict=True))
    assert traced_ops(block, x).count(f"ollama_torch.{op}") == 1
    with torch.inference_mode():
        torch._dynamo.reset()
        after = torch.compile(block, fullgraph=True)(x)
        eager = block(x)  # the layers themselves
    assert torch.equal(after, before)
    assert block.fused_q_k_v.pending is None  # nothing kept past the step
    torch.testing.assert_close(eager, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))


@needs_kernels
def test_what_the_kernels_do_not_take_is_left_alone() -> None:
    torch.manual_seed(0)
    block = Attention("f32")
    block.k_proj = nn.Linear(K, 32)  # another kind among the siblings
    assert fuse_siblings(block) == 0 and isinstance(block.q_proj, PackedLinear)
    mixed = Attention("int8", bias=True)  # quantized layers with a bias (kept in bfloat16)
    assert fuse_siblings(mixed) == 0


@needs_kernels
@pytest.mark.slow
def test_a_tiny_llamas_compiled_step_after_the_fusion_gives_the_eager_logits(tiny_llama_dir: Path) -> None:
    """As the worker prepares a float32 CPU model (its linear layers packed, our kernel for compiled steps):
    ``CompiledDecode`` fuses q/k/v and gate/up, and its step gives the eager step's logits, step after step."""
    from transformers import AutoModelForCausalLM

    from ollama_torch.engine.cache import BatchKVCache
    from ollama_torch.engine.compiled import CompiledDecode

    model: Any = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    pack_linears(model, 4, native=None)
    compiled = CompiledDecode(model, torch.device("cpu"), (1,))
    layers = model.config.num_hidden_layers
    assert sum(isinstance(m, FusedGroup) for m in model.modules()) == 2 * layers

    def cache() -> BatchKVCache:
        c = model.config
        return BatchKVCache(layers, 4, c.num_key_value_heads, c.hidden_size // c.num_attention_heads, torch.float32,
                            torch.device("cpu"), capacity=64)

    with torch.inference_mode():
        eager_cache, compiled_cache = cache(), cache()
        for c in (eager_cache, compiled_cache):
            row = c.reserve_rows([5])
            positions, mask, cache_position = c.begin_prefill(row, [5])
            model(input_ids=torch.tensor([[5, 17, 42, 99, 7]]), position_ids=positions, attention_mask=mask,
                  past_key_values=c, cache_position=cache_position, use_cache=True, logits_to_keep=1)
            c.end_step(advance=False)
        ids = torch.tensor([[3]])
        for _ in range(20):
            positions, mask, cache_position = eager_cache.begin_decode()
            expected = model(input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=eager_cache,
                             cache_position=cache_position, use_cache=True).logits[:, -1]
            eager_cache.end_step(advance=True)
            got = compiled.step(compiled_cache, ids)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
            ids = expected.argmax(-1, keepdim=True)
