"""Group-wise asymmetric int4 weights (``Q4_K_M`` / ``Q4_K_S``): quantize, store, load, multiply.

The format is llama.cpp's "type-1" 4-bit form (Q4_1, and Q4_K's sub-blocks): per group of ``g`` input
columns, ``w = q * scale + min`` with ``q`` in 0..15, scale and min chosen min-max. In Safetensors, per
Linear ``x``: ``x.qweight`` uint8 [out, in/2] (column 2j in the low nibble, 2j+1 in the high one),
``x.scales`` and ``x.mins`` float16 [out, in/g]; config.json carries ``quantization_config``
``{"quant_method": "ollama_int4", "group_size": g, "modules_to_not_convert": [...]}``. The format is the
same whatever device quantized it.

Loading goes through Transformers' own quantizer machinery (``register_quantizer``): Linear layers are
replaced by ``Int4Linear`` before the weights load, which then repacks them, never re-quantizes, for
PyTorch's int4 kernels (bfloat16 activations): ``aten._weight_int4pack_mm_for_cpu`` on CPU, and on CUDA
``aten._weight_int4pack_mm`` (tinygemm, the kernel gpt-fast and torchao use), which needs the input width
to be a multiple of 128 and groups of 32..256 columns. Anywhere else (another device, a layer whose shape
the CUDA kernel does not take) the weight is dequantized per forward.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

METHOD = "ollama_int4"
_registered = threading.Lock()
_stored_layout = threading.local()  # .on: layers loaded in this thread keep the stored layout (``stored_layout``)


@contextlib.contextmanager
def stored_layout() -> Iterator[None]:
    """Within it, ``Int4Linear`` layers that Transformers loads in this thread are not ``prepare``d: they keep the
    stored layout, for a caller with a kernel of its own for it, who then repacks or prepares each layer."""
    before = getattr(_stored_layout, "on", False)
    _stored_layout.on = True
    try:
        yield
    finally:
        _stored_layout.on = before


# -- quantize (create time) ----------------------------------------------------------------------------
def quantize_int4(w: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """``{"qweight", "scales", "mins"}`` of a [out, in] weight, min-max per group of ``group_size``."""
    out_f, in_f = w.shape
    x = w.float().reshape(out_f, in_f // group_size, group_size)  # x: [out, groups, g]
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-8)
    # Round the stored scale and min first, so codes are chosen against what dequantization will use.
    scale16, lo16 = scale.half(), lo.half()
    q = ((x - lo16.float()) / scale16.float()).round().clamp(0, 15).to(torch.uint8).reshape(out_f, in_f)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)  # packed: [out, in/2]
    return {"qweight": packed.contiguous(), "scales": scale16.reshape(out_f, -1).contiguous(), "mins": lo16.reshape(out_f, -1).contiguous()}


def unpack(qweight: torch.Tensor) -> torch.Tensor:
    """The 0..15 codes of a packed [out, in/2] uint8 weight, as [out, in] uint8."""
    return torch.stack([qweight & 0xF, qweight >> 4], dim=-1).reshape(qweight.shape[0], -1)


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    q = unpack(qweight)
    out_f, in_f = q.shape
    g = in_f // scales.shape[1]
    w = q.reshape(out_f, -1, g).to(dtype) * scales.to(dtype).unsqueeze(-1) + mins.to(dtype).unsqueeze(-1)
    return w.reshape(out_f, in_f)


# -- the module ------------------------------------------------------------------------------------------
class Int4Linear(nn.Module):
    """A Linear layer holding int4 weights; ``prepare()`` (called once loaded) picks the kernel."""

    def __init__(self, in_features: int, out_features: int, bias: bool, group_size: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.qweight = nn.Parameter(torch.empty(out_features, in_features // 2, dtype=torch.uint8), requires_grad=False)
        self.scales = nn.Parameter(torch.empty(out_features, in_features // group_size, dtype=torch.float16), requires_grad=False)
        self.mins = nn.Parameter(torch.empty(out_features, in_features // group_size, dtype=torch.float16), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None
        self.packed_for = ""  # "cpu" / "cuda" once repacked for that device's kernel

    @property
    def packed_for_cpu(self) -> bool:
        return self.packed_for == "cpu"

    def prepare(self) -> None:
        """Repack for the device's int4 kernel: the packed codes replace ``qweight`` and one bfloat16
        [in/g, out, 2] scale-and-zero tensor replaces ``scales`` and ``mins`` (both kernels compute
        ``(q - 8) * scale + zero``, so ``zero = min + 8 * scale``). The CPU kernel takes the codes as int32
        [out, in]; CUDA's takes them two per byte, the even column in the high nibble."""
        device = self.qweight.device.type
        if self.packed_for or not _has_kernel(device, self.in_features, self.out_features, self.group_size):
            return
        codes = unpack(self.qweight.data)  # [out, in] uint8, 0..15
        if device == "cpu":
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
        else:
            pairs = ((codes[:, 0::2] << 4) | codes[:, 1::2]).contiguous()  # [out, in/2]
            packed = torch.ops.aten._convert_weight_to_int4pack(pairs, CUDA_INNER_K_TILES)
        scale, low = self.scales.data.float(), self.mins.data.float()
        scale_zero = torch.stack([scale.t(), (low + 8 * scale).t()], dim=-1).to(torch.bfloat16).contiguous()
        self.qweight = nn.Parameter(packed, requires_grad=False)
        self.scales = nn.Parameter(scale_zero, requires_grad=False)
        self.mins = nn.Parameter(torch.empty(0, dtype=torch.float16, device=packed.device), requires_grad=False)
        self.packed_for = device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed_for:
            # flat: [N, in], laid out contiguously as the kernels require (a pooler's ``hidden[:, 0]`` is a strided view)
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
            if self.packed_for == "cpu":
                out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.qweight, self.group_size, self.scales)
            else:
                out = torch.ops.aten._weight_int4pack_mm(flat, self.qweight, self.group_size, self.scales)
            out = out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)  # out: [..., out]
            return out + self.bias.to(x.dtype) if self.bias is not None else out
        w = dequantize(self.qweight, self.scales, self.mins, x.dtype)
        return nn.functional.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


CUDA_INNER_K_TILES = 8  # tinygemm's tiling: the input width must be a multiple of 16 * this


def _has_kernel(device: str, in_features: int, out_features: int, group_size: int) -> bool:
    """Whether PyTorch has an int4 kernel for ``device`` that takes this layer."""
    if device == "cpu":
        return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")
    if device == "cuda":
        return (hasattr(torch.ops.aten, "_weight_int4pack_mm") and in_features % (16 * CUDA_INNER_K_TILES) == 0
                and out_features % 8 == 0 and group_size in (32, 64, 128, 256))
    return False


# -- Transformers integration ----------------------------------------------------------------------------
def register() -> None:
    """Teach Transformers' ``from_pretrained`` the ``ollama_int4`` quant method (idempotent)."""
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

    with _registered:
        if METHOD in AUTO_QUANTIZER_MAPPING:
            return
        config_cls, quantizer_cls = _classes()
        AUTO_QUANTIZATION_CONFIG_MAPPING[METHOD] = config_cls
        AUTO_QUANTIZER_MAPPING[METHOD] = quantizer_cls  # type: ignore[assignment]


def config_dict(group_size: int, keep: list[str]) -> dict[str, Any]:
    """``quantization_config`` for config.json."""
    return {"quant_method": METHOD, "bits": 4, "group_size": group_size, "modules_to_not_convert": keep}


def _classes() -> tuple[type, type]:
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module
    from transformers.utils.quantization_config import QuantizationConfigMixin

    class Int4Config(QuantizationConfigMixin):
        def __init__(self, group_size: int = 32, modules_to_not_convert: list[str] | None = None, bits: int = 4, **kwargs: Any) -> None:
            self.quant_method = METHOD  # type: ignore[assignment]
            self.bits, self.group_size = bits, group_size
            self.modules_to_not_convert = modules_to_not_convert

    class Int4Quantizer(HfQuantizer):
        requires_calibration = True  # load pre-quantized checkpoints only: quantizing happens at create time

        def validate_environment(self, *args: Any, **kwargs: Any) -> None:
            return None

        def param_needs_quantization(self, model: Any, param_name: str, **kwargs: Any) -> bool:
            return False

        def _process_model_before_weight_loading(self, model: Any, **kwargs: Any) -> None:
            cfg: Any = self.quantization_config
            keep = self.get_modules_to_not_convert(model, cfg.modules_to_not_convert, model._keep_in_fp32_modules)
            for name, module in list(model.named_modules()):
                if type(module) is nn.Linear and should_convert_module(name, keep):
                    with torch.device("meta"):
                        new = Int4Linear(module.in_features, module.out_features, module.bias is not None, cfg.group_size)
                    model.set_submodule(name, new)

        def _process_model_after_weight_loading(self, model: Any, **kwargs: Any) -> None:
            if getattr(_stored_layout, "on", False):
                return
            for module in model.modules():
                if isinstance(module, Int4Linear):
                    module.prepare()

        def is_serializable(self) -> bool:
            return False

        @property
        def is_trainable(self) -> bool:
            return False

    return Int4Config, Int4Quantizer
