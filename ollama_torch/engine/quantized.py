"""Models stored quantized by ``quantize`` at create time: the dtype they load in and what they hold.

Transformers loads the weights pre-quantized from the stored ``quantization_config`` (bitsandbytes, or
our int4 once ``int4.register()`` has taught it the method); what the loader must add is the dtype of
everything left unquantized (embeddings, norms, output head), which is the one the weights were stored in
(the config blob's ``quantization.compute_dtype``), not the engine's float32 CPU default that would
double the embeddings' size. The resident size counts the quantization state (absmax scales) that
bitsandbytes keeps beside each weight, not only parameters and buffers.

On CPU, bitsandbytes' 8-bit layers (``Q8_0``/``INT8``) are run by PyTorch's weight-only int8 kernel
(``aten._weight_int8pack_mm``, as gpt-fast does) instead: the stored weights are already int8 rows with one
absmax each, which is exactly what that kernel multiplies by, so nothing is re-quantized. It skips
LLM.int8's int8 activations, so it is also closer to the unquantized model, and reads a quarter of the
float32 bytes per token (measured on SmolLM2: see BENCHMARKS.md). Decode steps (up to ``NATIVE_ROWS`` rows), eager
or compiled, run our own kernel instead where it is built (``native.py``: x86-64 with AVX2), which reads the
weights at twice the speed of either. Without it, inside a compiled CPU decode step of up to
``default_fused_rows()`` rows (``compiled.py``) the layer is written out as products and a sum, which inductor
fuses into one loop per layer that converts the int8 weights as it reads them (``Int8WeightLinear``). The 16-bit
output head of a quantized model is quantized to 8 bits on the CPU too (``quantize_head_for_cpu``), as llama.cpp
does: in a small model it is the largest matrix left.

Our int4 layers (``Q4_K_M``/``Q4_K_S``, ``converters.int4``) load in their stored layout on a CPU without AMX
(``bfloat16_is_native``), where our own kernel is built (``Int4WeightLinear``, ``native.py``): PyTorch's int4
kernel takes only bfloat16 rows. Elsewhere they are prepared for PyTorch's kernels as they load
(``Int4Linear.prepare``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..store import StoredModel

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def bfloat16_is_native() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware fast enough for a quantized model to compute in
    bfloat16: Intel's AMX, where PyTorch's int4 and int8 kernels take bfloat16 rows as they are. Elsewhere a
    quantized model's unquantized layers and activations compute in float32 (the loader), where our kernels run
    its layers, for every bfloat16 op would have a conversion on each side: SmolLM2 ``q8_0`` compiled decoded 23.4
    tok/s in bfloat16 and 33.7 in float32 on an AMD EPYC with AVX2. AVX-512 BF16 alone is not enough: on an AMD
    EPYC with it (Zen 4, no AMX) SmolLM2's compiled one-row step took 5.5 ms in bfloat16 with PyTorch's int4
    kernel against 4.2-4.8 in float32 with ours widening the codes to float32, 3.7-4.0 with its integer products
    (``q4_K_M``), and 5.8 against 4.9 (``q8_0``)."""
    cpu = getattr(torch, "cpu", None)
    check = getattr(cpu, "_is_amx_tile_supported", None)
    return bool(check()) if check is not None else False


def stored_dtype(stored: StoredModel) -> torch.dtype | None:
    """The dtype a model quantized at create time must load in, or ``None`` for any other model.

    Also teaches Transformers the int4 method, for any model: an uploaded directory may carry it too."""
    from converters.int4 import register

    register()
    quantization = stored.config.extra.get("quantization")
    if not isinstance(quantization, dict) or quantization.get("method") not in ("bitsandbytes", "ollama_int4"):
        return None
    quiet_bitsandbytes()
    return _DTYPES.get(str(quantization.get("compute_dtype")), torch.bfloat16)


def quiet_bitsandbytes() -> None:
    """bitsandbytes logs a warning on every int8 matmul whose input is not float16, and one at import when
    an optional hub-downloaded CPU kernel is missing; neither says anything actionable to a server log."""
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def resident_bytes(model: Any) -> int:
    """Bytes the loaded model holds: parameters, buffers and bitsandbytes quantization state."""
    seen: set[int] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if isinstance(t, torch.Tensor) and t.device.type != "meta" and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()

    for p in model.parameters():
        add(p)
        state = getattr(p, "quant_state", None)
        if state is not None:  # 4-bit: absmax (+ nested absmax and code when double-quantized)
            add(state.absmax)
            add(getattr(state, "code", None))
            nested = getattr(state, "state2", None)
            if nested is not None:
                add(nested.absmax)
                add(getattr(nested, "code", None))
        add(getattr(p, "SCB", None))  # 8-bit: one absmax per row
    for b in model.buffers():
        add(b)
    return total


def default_fused_rows() -> int:
    """Rows up to which a compiled CPU step multiplies int8 weights in inductor's own loop rather than the kernel's.
    SmolLM2's 210 int8 layers alone, 2 threads: on a Xeon with AVX-512, 5-9 ms against the kernel's 13-20 at 1 row,
    12 against 23 at 4, 24 against 27 at 8; on an AMD EPYC with AVX2 only (no AVX-512), 7.2-9.2 ms against 14.6-15.7
    at 1 row, the same at 2 (13.4 against 12.8) and slower at 4 (22.6 against 19.4)."""
    return 4 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 1


# Rows up to which ``Int8WeightLinear`` runs the native kernel (decode steps; a batch of 8 rows took 21 ms
# against PyTorch's 30 for SmolLM2's layers on the EPYC); a prefill's many rows run PyTorch's.
NATIVE_ROWS = 8


def interleave(t: torch.Tensor) -> torch.Tensor:
    """``t`` [..., k] with its columns reordered so that column ``4i + j`` is column ``j * k/4 + i``: the order in
    which ``Int8WeightLinear`` keeps its weights, so that each 32-bit word of a row holds the weights of columns
    ``i``, ``i + k/4``, ``i + k/2`` and ``i + 3k/4``."""
    k = t.shape[-1]
    return t.reshape(*t.shape[:-1], 4, k // 4).transpose(-1, -2).reshape(t.shape)


class Int8WeightLinear(nn.Module):
    """A bitsandbytes 8-bit Linear's weights (int8 [out, in], one absmax per row) multiplied by PyTorch's
    weight-only int8 kernel, in bfloat16: ``y = x @ (int8 * absmax / 127).T + bias``.

    Where our own kernel is built (``native``), it multiplies steps of up to ``NATIVE_ROWS`` rows in float32 (the
    activations are not rounded to bfloat16) and the weights stay in the input's order.

    Otherwise the weights are kept with their columns interleaved (``interleave``, where ``in`` is a multiple of
    4): the kernel multiplies them by the input interleaved the same way (a copy of the activations, not of the
    weights), and a compiled step of up to ``fused_rows`` rows reads each row as 32-bit words, four weights
    apiece, and multiplies byte ``j`` of word ``i`` by input column ``j * in/4 + i``: four contiguous slices of
    the input. Inductor's vector code loads int8 or int32 vectors through a copy on AVX2 (its float loads are
    direct); the words are read as floats and reinterpreted, which made the loop faster than PyTorch's kernel
    at one row, but it still reads the weights at a third of the memory's speed on AVX2."""

    def __init__(self, int8: torch.Tensor, absmax: torch.Tensor, bias: torch.Tensor | None,
                 fused_rows: int | None = None, native: bool | None = None) -> None:
        """``native``: steps of up to ``NATIVE_ROWS`` rows run our own kernel (``native.py``), the weights in the
        input's order (``True``: an error where it is not available); ``None``: where it is available (a CPU
        with AVX2), else PyTorch's kernel and the words; ``False``: never."""
        super().__init__()
        self.out_features, self.in_features = int8.shape
        from .native import int8_mm_available

        self.native = native is not False and int8.device.type == "cpu" and int8_mm_available()
        if native and not self.native:
            raise RuntimeError("the native int8 kernel is not available here (x86-64 CPUs with AVX2 and a C++ compiler)")
        self.interleaved = not self.native and self.in_features % 4 == 0
        self.fused_rows = (default_fused_rows() if fused_rows is None else fused_rows) if self.interleaved else 0
        # A copy in memory of its own: the kernel reads rows with aligned vector loads and crashes the process
        # on weights that start off a 16-byte boundary, as tensors mapped from a Safetensors file at an odd
        # offset do (PyTorch allocates on 64-byte boundaries).
        # The interleaving is written straight into that copy (``interleave`` would make one more at load).
        weight = torch.empty(int8.shape, dtype=torch.int8, device=int8.device)
        if self.interleaved:
            out, k = int8.shape
            weight.view(out, k // 4, 4).copy_(int8.reshape(out, 4, k // 4).transpose(1, 2))
        else:
            weight.copy_(int8)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.scales = nn.Parameter((absmax.float() / 127).to(torch.bfloat16), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().to(torch.bfloat16), requires_grad=False) if bias is not None else None
        # the native kernel's scales: the same values, as float32
        self.register_buffer("scales32", self.scales.data.float(), persistent=False)

    def int8_rows(self) -> torch.Tensor:
        """The int8 weights [out, in] in the input's column order."""
        if not self.interleaved:
            return self.weight.data
        k = self.in_features
        return self.weight.data.reshape(-1, k // 4, 4).transpose(1, 2).reshape(-1, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if self.native and flat.shape[0] <= NATIVE_ROWS and flat.device.type == "cpu":
            y = torch.ops.ollama_torch.int8_mm(flat.float().contiguous(), self.weight, self.scales32)
        elif flat.shape[0] <= self.fused_rows and flat.device.type == "cpu" and torch.compiler.is_compiling():
            y = self._words(flat.to(torch.bfloat16))
        elif self.in_features % 16:  # PyTorch's kernel crashes the process on such widths on AVX-512 (torch 2.13)
            y = nn.functional.linear(flat.to(torch.bfloat16), self.int8_rows().to(torch.bfloat16) * self.scales[:, None])
        else:
            flat = flat.to(torch.bfloat16)
            y = torch.ops.aten._weight_int8pack_mm(interleave(flat) if self.interleaved else flat, self.weight, self.scales)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _words(self, flat: torch.Tensor) -> torch.Tensor:
        """A compiled step's few rows as products and a sum, which inductor turns into one vectorized loop per layer
        that reads each weight once (the same bfloat16 inputs and output as the kernel, float32 sums)."""
        rows, k = flat.shape
        words = self.weight.view(torch.float32).view(torch.int32)  # [out, k/4]
        parts = flat.float().view(rows, 4, 1, k // 4)  # part j: input columns [j * k/4, (j + 1) * k/4)
        acc = ((words << 24) >> 24).float() * parts[:, 0]  # byte j of each word, sign-extended
        for j in range(1, 4):
            acc = acc + ((words << (24 - 8 * j)) >> 24).float() * parts[:, j]
        return (acc.sum(-1) * self.scales.float()).to(torch.bfloat16)

    @classmethod
    def from_float(cls, linear: nn.Linear, fused_rows: int | None = None, native: bool | None = None) -> Int8WeightLinear:
        """``linear``'s weights quantized to int8, one scale per row. The scale is rounded up to a bfloat16
        value (the kernel takes bfloat16 scales) before the rows are divided by it, so the only error is each
        weight's rounding to an integer: no row as a whole comes out scaled."""
        weight = linear.weight.detach().float()
        absmax = weight.abs().amax(dim=1)
        scales = (absmax.clamp(min=1e-12) / 127).to(torch.bfloat16)
        rounded_down = scales.float() * 127 < absmax
        scales = torch.where(rounded_down, torch.nextafter(scales, scales.new_tensor(float("inf"))), scales)
        int8 = torch.round(weight / scales.float()[:, None]).clamp(-127, 127).to(torch.int8)
        return cls(int8, scales.float() * 127, linear.bias, fused_rows=fused_rows, native=native)


# Rows up to which ``Int4WeightLinear`` runs the native kernel; more (a long prefill) are multiplied by the weights
# dequantized to float32. SmolLM2's 210 int4 layers on an AMD EPYC (Zen 3), 2 threads, when the kernel widened the
# codes to float32: 4.9 ms at 1 row (PyTorch's int4 kernel 9.3, in bfloat16), 11 at 4, 42 at 16, 175 at 64
# (PyTorch's 175), 1322 at 512 where dequantizing and multiplying takes 754 (and 233 at 64). Its integer products
# (the rows quantized to int8) took a quarter to a third off a layer at 1 row, an eighth to a quarter at 4 to 8
# (a Zen 4, with AVX-512 VNNI).
INT4_NATIVE_ROWS = 64


def int4_native_available() -> bool:
    """Whether 4-bit layers on the CPU run our kernel (``Int4WeightLinear``): where it is built, on CPUs that do not
    compute in bfloat16 (``bfloat16_is_native``; where they do, PyTorch's int4 kernel takes bfloat16 rows as they
    are: Intel's AMX)."""
    from .native import int4_mm_available

    return not bfloat16_is_native() and int4_mm_available()


def int4_checkpoint(directory: Path) -> bool:
    """Whether the checkpoint in ``directory`` holds ``converters.int4`` layers (its config.json's
    ``quantization_config``): only then does a load build or load the int4 kernel."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    return isinstance(quantization, dict) and quantization.get("quant_method") == "ollama_int4"


def _padded(t: torch.Tensor) -> torch.Tensor:
    """[out, groups] float16, its rows padded with zeros to a multiple of 8 groups (the kernel widens 8 at a time)."""
    return nn.functional.pad(t.to(torch.float16), (0, -t.shape[1] % 8)).contiguous()


class Int4WeightLinear(nn.Module):
    """A 4-bit layer (``converters.int4``'s format: per group of ``group_size`` input columns, ``w = q * scale +
    min``) multiplied by our own kernel (``torch.ops.ollama_torch.int4_mm``, ``native.py``: the rows quantized to
    int8 per group, as llama.cpp does, the codes times them in integers, scaled in float32) for up to
    ``INT4_NATIVE_ROWS`` rows: the codes are kept two per byte in blocks of 16 columns (``block_order``), the float16
    scales and mins as stored. More rows are multiplied by the weights dequantized to float32 for the call."""

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, bias: torch.Tensor | None,
                 group_size: int) -> None:
        super().__init__()
        self.out_features, self.in_features, self.group_size = qweight.shape[0], qweight.shape[1] * 2, group_size
        self.groups = self.in_features // group_size
        self.weight = nn.Parameter(block_order(qweight), requires_grad=False)
        self.scales = nn.Parameter(_padded(scales), requires_grad=False)
        self.mins = nn.Parameter(_padded(mins), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().float(), requires_grad=False) if bias is not None else None

    @staticmethod
    def takes(layer: Any) -> bool:
        """Whether ``layer`` (an ``Int4Linear`` in the stored layout, on the CPU) fits the kernel."""
        return (not layer.packed_for and layer.qweight.device.type == "cpu" and layer.group_size % 32 == 0
                and layer.in_features % layer.group_size == 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        if flat.shape[0] <= INT4_NATIVE_ROWS:
            y = torch.ops.ollama_torch.int4_mm(flat.contiguous(), self.weight, self.scales, self.mins, self.group_size)
        else:
            y = nn.functional.linear(flat, self.dequantized())
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def dequantized(self) -> torch.Tensor:
        """The float32 weights [out, in]."""
        out, k = self.out_features, self.in_features
        pairs = self.weight.view(out, k // 16, 1, 8)
        codes = torch.cat([pairs & 0xF, pairs >> 4], dim=2).reshape(out, self.groups, self.group_size)
        scales, mins = self.scales[:, : self.groups].float(), self.mins[:, : self.groups].float()
        return (codes.float() * scales.unsqueeze(-1) + mins.unsqueeze(-1)).reshape(out, k)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


def block_order(qweight: torch.Tensor) -> torch.Tensor:
    """Stored int4 codes (uint8 [out, in/2], column 2j in byte j's low nibble and 2j + 1 in its high one) in the
    kernel's order: byte 8b + i holds column 16b + i in its low nibble and column 16b + 8 + i in its high one."""
    from converters.int4 import unpack

    codes = unpack(qweight)  # [out, in] uint8, 0..15
    blocks = codes.view(codes.shape[0], -1, 2, 8)  # [out, in/16, (low, high), 8]
    return (blocks[:, :, 0] | (blocks[:, :, 1] << 4)).reshape(qweight.shape).contiguous()


def swap_int4_for_cpu(model: Any) -> int:
    """Swap the ``Int4Linear`` layers of a model loaded in the stored layout (``converters.int4.stored_layout``) for
    ``Int4WeightLinear``; a layer the kernel does not take is ``prepare``d for PyTorch's kernels instead. Returns
    how many were swapped."""
    from converters.int4 import Int4Linear

    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, Int4Linear) or child.packed_for:
                continue
            if Int4WeightLinear.takes(child):
                setattr(parent, name, Int4WeightLinear(child.qweight.data, child.scales.data, child.mins.data,
                                                       child.bias, child.group_size))
                swapped += 1
            else:
                child.prepare()
    return swapped


def _quantized_types() -> tuple[type, ...]:
    """Layers whose floating tensors are quantization state (scales, zeros) in the dtype their kernel takes."""
    from converters.int4 import Int4Linear

    types: list[type] = [Int8WeightLinear, Int4WeightLinear, Int4Linear]
    try:
        from bitsandbytes.nn import Linear4bit, Linear8bitLt

        types += [Linear8bitLt, Linear4bit]
    except ImportError:
        pass
    return tuple(types)


def cast_unquantized(model: Any, dtype: torch.dtype) -> None:
    """Cast the floating parameters of every layer that is not quantized (embeddings, norms, the output head)
    to ``dtype``. Loading pre-quantized weights keeps those in the dtype they were
    stored in, whatever dtype was asked for, so a model asked for in float32 (``OLLAMA_TORCH_DTYPE``) would
    compute in bfloat16 while its cache is float32. Quantized layers keep their state: their kernels take
    it in its own dtype and convert their input themselves."""
    quantized = _quantized_types()
    for module in model.modules():
        if isinstance(module, quantized):
            continue
        for param in module.parameters(recurse=False):
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)


def compute_dtype(model: Any, default: torch.dtype) -> torch.dtype:
    """The dtype the model's activations are in: its input embeddings' (what the KV cache must hold)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    return weight.dtype if isinstance(weight, torch.Tensor) and weight.is_floating_point() else default


def prepare_for_cpu(model: Any) -> int:
    """Swap bitsandbytes 8-bit Linear layers of a model loaded on CPU for ``Int8WeightLinear``; returns how
    many. Layers whose weights are not (yet) int8 rows with their absmax are left as they are."""
    if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        return 0
    try:
        from bitsandbytes.nn import Linear8bitLt
    except ImportError:
        return 0
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, Linear8bitLt):
                continue
            weight = child.weight
            absmax = getattr(weight, "SCB", None)
            if absmax is None:  # after a first forward bitsandbytes keeps it in the layer's state
                absmax = getattr(getattr(child, "state", None), "SCB", None)
            if weight.device.type != "cpu" or weight.dtype != torch.int8 or absmax is None:
                continue
            setattr(parent, name, Int8WeightLinear(weight.data, absmax, child.bias))
            swapped += 1
    return swapped


def quantize_head_for_cpu(model: Any, float32: bool = False) -> bool:
    """Give a quantized model loaded on CPU an 8-bit output head (``Int8WeightLinear``, one scale per row, run by
    the int8 kernel at every row count), as llama.cpp quantizes the output of a quantized model too (Q8_0's
    in Q8_0, Q4_K_M's in Q6_K). The head is the largest matrix of a small model and the only one left in 16
    bits: in SmolLM2, 28M weights beside the 107M of its layers. Tied input embeddings keep their own table (a
    lookup reads one row of it per token). Returns whether the head was swapped: only a plain Linear on the CPU
    in 16 bits, or in float32 where ``float32`` says the loader widened it (``bfloat16_is_native``), so that
    ``OLLAMA_TORCH_DTYPE=float32`` keeps a float32 head."""
    if not hasattr(torch.ops.aten, "_weight_int8pack_mm") or not hasattr(model, "get_output_embeddings"):
        return False
    head = model.get_output_embeddings()
    dtypes = (torch.bfloat16, torch.float16, *((torch.float32,) if float32 else ()))
    if type(head) is not nn.Linear or head.weight.device.type != "cpu" or head.weight.dtype not in dtypes:
        return False
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is head:
                setattr(parent, name, Int8WeightLinear.from_float(head, fused_rows=0))
                return True
    return False
