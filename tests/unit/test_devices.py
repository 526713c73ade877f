"""Device placement decided without a GPU where it can be: which device each layer's KV cache takes under a
device map, where the logits (and so the sampler) live, which layers PyTorch's int4 kernels take, and the
CUDA paths themselves when CUDA is present."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from converters.int4 import CUDA_INNER_K_TILES, Int4Linear, _has_kernel, quantize_int4
from ollama_torch.engine.cache import BatchKVCache
from ollama_torch.engine.loader import layer_devices


class _Attention(nn.Module):
    def __init__(self, idx: int, device: str) -> None:
        super().__init__()
        self.layer_idx = idx
        self.proj = nn.Linear(2, 2, device=device)


def test_each_layer_cache_goes_where_its_attention_is() -> None:
    model = nn.Sequential(_Attention(0, "cpu"), _Attention(1, "meta"), _Attention(3, "cpu"))
    default = torch.device("cpu")
    # layer 1 is on the meta device (not placed) and layer 2 has no attention module: both take the default
    assert layer_devices(model, 4, default) == [torch.device("cpu"), default, default, torch.device("cpu")]


def test_batch_cache_allocates_each_layer_on_its_device() -> None:
    cache = BatchKVCache(3, 2, 1, 4, torch.float32, torch.device("cpu"), layer_devices=[torch.device("cpu")] * 3)
    assert [k.device.type for k in cache.keys] == ["cpu"] * 3
    with pytest.raises(ValueError, match="must name 3 devices"):
        BatchKVCache(3, 2, 1, 4, torch.float32, torch.device("cpu"), layer_devices=[torch.device("cpu")])


@pytest.mark.parametrize(
    ("device", "in_f", "out_f", "group", "expected"),
    [
        ("cuda", 16 * CUDA_INNER_K_TILES, 64, 32, True),
        ("cuda", 576, 64, 32, False),  # SmolLM2's hidden size is not a multiple of 128: dequantized per forward
        ("cuda", 256, 60, 32, False),
        ("cuda", 256, 64, 16, False),
        ("mps", 256, 64, 32, False),
    ],
)
def test_which_layers_the_int4_kernels_take(device: str, in_f: int, out_f: int, group: int, expected: bool) -> None:
    assert _has_kernel(device, in_f, out_f, group) is expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_int4_on_cuda_matches_the_dequantized_weight() -> None:
    torch.manual_seed(0)
    w = torch.randn(256, 512)
    layer = Int4Linear(512, 256, bias=False, group_size=32)
    for name, t in quantize_int4(w, 32).items():
        setattr(layer, name, nn.Parameter(t, requires_grad=False))
    reference = layer.to("cuda")(torch.randn(4, 512, device="cuda", dtype=torch.bfloat16).float())
    x = torch.randn(4, 512, device="cuda", dtype=torch.bfloat16)
    expected = layer(x)  # dequantized per forward
    layer.prepare()
    assert layer.packed_for == "cuda" and reference.shape == (4, 256)
    assert torch.allclose(layer(x).float(), expected.float(), atol=5e-2, rtol=5e-2)
