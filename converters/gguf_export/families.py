"""The model families the GGUF export writes, and what llama.cpp needs to run each exactly as Transformers does.

A ``Family`` is a Transformers architecture (``LlamaForCausalLM``) mapped to a llama.cpp architecture
(``llama``) plus what differs between the two implementations: the q/k row order RoPE expects (llama.cpp's
``llama``-style archs rotate interleaved pairs, Transformers rotates halves), Gemma's norms (stored as
``w``, applied as ``1 + w``; llama.cpp applies the stored weight), fused expert tensors, and the
architecture's own metadata keys. ``check`` refuses every configuration llama.cpp would load but compute
differently (another activation, an attention scale it does not read, sliding windows it ignores, RoPE
scaling it applies differently), so an export is either faithful or a 400 that names the setting.

Anything not listed here is refused with the architecture's name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import UnsupportedExport


@dataclass(frozen=True)
class Hparams:
    """The numbers every family shares, read once from the Transformers config."""

    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx: int
    n_expert: int = 0
    n_expert_used: int = 0
    rope_dim: int = 0


def hparams_of(config: Any) -> Hparams:
    n_head = int(getattr(config, "num_attention_heads", 0) or 0)
    n_embd = int(config.hidden_size)
    head_dim = int(getattr(config, "head_dim", None) or (n_embd // n_head if n_head else 0))
    rope = _rope_params(config)
    partial = float(rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)) or 1.0)
    return Hparams(
        n_layer=int(config.num_hidden_layers),
        n_embd=n_embd,
        n_ff=int(getattr(config, "intermediate_size", 0) or 0),
        n_head=n_head,
        n_head_kv=int(getattr(config, "num_key_value_heads", None) or n_head),
        head_dim=head_dim,
        n_ctx=int(getattr(config, "max_position_embeddings", 0) or 0),
        n_expert=int(getattr(config, "num_local_experts", 0) or 0),
        n_expert_used=int(getattr(config, "num_experts_per_tok", 0) or 0),
        rope_dim=int(head_dim * partial),
    )


def _rope_params(config: Any, layer_type: str = "full_attention") -> dict[str, Any]:
    """``rope_parameters`` (Transformers 5), per layer type where the model has several (Gemma 3)."""
    rope = getattr(config, "rope_parameters", None) or {}
    if layer_type in rope and isinstance(rope[layer_type], dict):
        rope = rope[layer_type]
    return dict(rope)


Writer = Any  # gguf.GGUFWriter


@dataclass(frozen=True)
class Family:
    arch: str  # llama.cpp's architecture name (gguf.MODEL_ARCH_NAMES)
    architectures: tuple[str, ...]  # Transformers classes exported as this family
    activations: tuple[str, ...]  # hidden_act values llama.cpp's graph computes for it
    interleave_qk: bool = False  # llama.cpp rotates interleaved pairs: permute q/k rows from halves
    norm_plus_one: bool = False  # Gemma: Transformers applies (1 + w), llama.cpp applies the stored w
    has_output: bool = True  # the arch has an output (LM head) tensor; False: always tied
    encoder: bool = False  # an embedding model (AutoModel, no LM head)
    check: Callable[[Any, Hparams], None] | None = None
    metadata: Callable[[Writer, Any, Hparams], None] | None = None
    # the default sliding-window pattern llama.cpp assumes for the arch (layer i is SWA unless i % n == n-1)
    swa_pattern: int = 0


# -- checks -------------------------------------------------------------------------------------------
def _refuse(condition: bool, message: str) -> None:
    if condition:
        raise UnsupportedExport(message)


def _plain_rope(config: Any, hp: Hparams, allowed: tuple[str, ...] = ("default", "linear", "llama3")) -> None:
    rope_type = _rope_params(config).get("rope_type", "default")
    _refuse(
        rope_type not in allowed,
        f'RoPE scaling "{rope_type}" is not supported by the GGUF export (supported: {", ".join(allowed)})',
    )


def _no_sliding_window(config: Any, hp: Hparams) -> None:
    uses = getattr(config, "use_sliding_window", None)
    window = getattr(config, "sliding_window", None)
    _refuse(bool(uses) and bool(window), "sliding-window attention is not supported for this architecture in llama.cpp")


def _gemma_scale(config: Any, hp: Hparams, big_layers: int) -> None:
    """llama.cpp scales queries by 1/sqrt(head_dim), or 1/sqrt(n_embd/n_head) for the biggest model only."""
    scalar = getattr(config, "query_pre_attn_scalar", None)
    expected = hp.n_embd / hp.n_head if hp.n_layer == big_layers else hp.head_dim
    _refuse(
        scalar is not None and not math.isclose(float(scalar), float(expected)),
        f"query_pre_attn_scalar={scalar} differs from the {expected:g} llama.cpp uses for this model size",
    )


def _check_llama(config: Any, hp: Hparams) -> None:
    _plain_rope(config, hp)
    _refuse(bool(getattr(config, "mlp_bias", False)) and hp.n_expert > 0, "MLP biases with experts are not supported")


def _check_gemma2(config: Any, hp: Hparams) -> None:
    _plain_rope(config, hp, ("default",))
    _gemma_scale(config, hp, big_layers=46)


def _check_gemma3(config: Any, hp: Hparams) -> None:
    sliding = _rope_params(config, "sliding_attention").get("rope_type", "default")
    _refuse(sliding != "default", f'RoPE scaling "{sliding}" on sliding layers is not supported by llama.cpp')
    _plain_rope(config, hp, ("default", "linear"))
    _gemma_scale(config, hp, big_layers=62)
    _refuse(getattr(config, "attn_logit_softcapping", None) is not None, "attention logit soft-capping is not applied by llama.cpp's gemma3")


def _check_phi3(config: Any, hp: Hparams) -> None:
    _plain_rope(config, hp, ("default",))


def _check_qwen(config: Any, hp: Hparams) -> None:
    _plain_rope(config, hp, ("default", "linear"))
    _no_sliding_window(config, hp)


# -- metadata -----------------------------------------------------------------------------------------
def _swa_layers(config: Any, hp: Hparams) -> list[bool]:
    types = getattr(config, "layer_types", None) or []
    return [t == "sliding_attention" for t in types][: hp.n_layer]


def _write_swa(writer: Writer, config: Any, hp: Hparams, pattern: int) -> None:
    """The window, and the per-layer pattern only where it is not llama.cpp's default for the arch (older
    llama.cpp reads no pattern key and assumes the default)."""
    writer.add_sliding_window(int(config.sliding_window))
    layers = _swa_layers(config, hp)
    default = [i % pattern < pattern - 1 for i in range(hp.n_layer)]
    if layers and layers != default:
        writer.add_sliding_window_pattern(layers)


def _meta_gemma2(writer: Writer, config: Any, hp: Hparams) -> None:
    _write_swa(writer, config, hp, 2)
    if config.attn_logit_softcapping is not None:
        writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping))
    if config.final_logit_softcapping is not None:
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))


def _meta_gemma3(writer: Writer, config: Any, hp: Hparams) -> None:
    if getattr(config, "sliding_window", None):
        _write_swa(writer, config, hp, 6)
    local = _rope_params(config, "sliding_attention").get("rope_theta")
    if local is not None:
        writer.add_rope_freq_base_swa(float(local))
    if getattr(config, "final_logit_softcapping", None) is not None:
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))


def _meta_granite(writer: Writer, config: Any, hp: Hparams) -> None:
    writer.add_logit_scale(float(config.logits_scaling))
    writer.add_residual_scale(float(config.residual_multiplier))
    writer.add_embedding_scale(float(config.embedding_multiplier))
    writer.add_attention_scale(float(config.attention_multiplier))


def _meta_bert(writer: Writer, config: Any, hp: Hparams) -> None:
    writer.add_causal_attention(False)


_SILU = ("silu", "swish")
_GELU_TANH = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")
FAMILIES: tuple[Family, ...] = (
    Family("llama", ("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM"), _SILU, interleave_qk=True, check=_check_llama),
    Family("granite", ("GraniteForCausalLM",), _SILU, interleave_qk=True, check=_check_llama, metadata=_meta_granite),
    Family("gemma", ("GemmaForCausalLM",), _GELU_TANH, norm_plus_one=True, has_output=False, check=_check_gemma2),
    Family("gemma2", ("Gemma2ForCausalLM",), _GELU_TANH, norm_plus_one=True, has_output=False, check=_check_gemma2, metadata=_meta_gemma2, swa_pattern=2),
    Family("gemma3", ("Gemma3ForCausalLM",), _GELU_TANH, norm_plus_one=True, check=_check_gemma3, metadata=_meta_gemma3, swa_pattern=6),
    Family("phi3", ("Phi3ForCausalLM",), _SILU, check=_check_phi3),
    Family("qwen2", ("Qwen2ForCausalLM",), _SILU, check=_check_qwen),
    Family("qwen3", ("Qwen3ForCausalLM",), _SILU, check=_check_qwen),
    Family("bert", ("BertModel",), ("gelu",), encoder=True, metadata=_meta_bert),
)
SUPPORTED_ARCHITECTURES = tuple(a for f in FAMILIES for a in f.architectures)


def family_for(config: Any) -> Family:
    """The family of a Transformers config; ``UnsupportedExport`` naming the architecture otherwise."""
    names = list(getattr(config, "architectures", None) or [])
    for family in FAMILIES:
        if any(name in family.architectures for name in names):
            _check_common(family, config)
            return family
    shown = ", ".join(names) or getattr(config, "model_type", "unknown")
    raise UnsupportedExport(
        f'unsupported architecture "{shown}" for GGUF export (supported: {", ".join(SUPPORTED_ARCHITECTURES)})'
    )


def _check_common(family: Family, config: Any) -> None:
    act = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
    _refuse(act not in family.activations, f'activation "{act}" is not what llama.cpp computes for {family.arch} ({family.activations[0]})')
    _refuse(getattr(config, "quantization_config", None) is not None, "a quantized checkpoint cannot be exported; export its unquantized source")


def context_length(family: Family, config: Any, hp: Hparams) -> int:
    """The trained context; for llama/phi3 models trained with a sliding window llama.cpp does not apply,
    at most the window, where full attention and the window agree."""
    window = getattr(config, "sliding_window", None)
    if family.swa_pattern == 0 and family.arch in ("llama", "phi3") and isinstance(window, int) and window > 0:
        return min(hp.n_ctx, window) if hp.n_ctx else window
    return hp.n_ctx


def write_hparams(writer: Writer, family: Family, config: Any, hp: Hparams) -> None:
    """The keys every family shares (llama.cpp's ``<arch>.*``), then the family's own."""
    if family.check is not None:
        family.check(config, hp)
    writer.add_block_count(hp.n_layer)
    writer.add_context_length(context_length(family, config, hp))
    writer.add_embedding_length(hp.n_embd)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_head_kv)
    if family.encoder:
        writer.add_layer_norm_eps(float(config.layer_norm_eps))
    else:
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
        writer.add_rope_dimension_count(hp.rope_dim)
        rope = _rope_params(config)
        writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
        if rope.get("rope_type") == "linear":
            from gguf import RopeScalingType

            writer.add_rope_scaling_type(RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(rope["factor"]))
    if hp.n_expert:
        writer.add_expert_count(hp.n_expert)
        writer.add_expert_used_count(hp.n_expert_used)
    if family.metadata is not None:
        family.metadata(writer, config, hp)


def rope_freqs(config: Any, hp: Hparams) -> Any | None:
    """llama.cpp's ``rope_freqs`` tensor for Llama 3 RoPE scaling: per frequency, the divisor Transformers
    applies (its default inverse frequencies over its llama3 ones), so both rotate identically."""
    rope = _rope_params(config)
    if rope.get("rope_type") != "llama3":
        return None
    import numpy as np
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    base = float(rope["rope_theta"])
    default = 1.0 / (base ** (torch.arange(0, hp.rope_dim, 2, dtype=torch.int64).float() / hp.rope_dim))
    return (default / scaled.float()).numpy().astype(np.float32)
