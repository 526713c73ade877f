"""Sentence-embedding heads: the pooling math, and the sentence-transformers pipeline that picks it.

A sentence-transformers model directory says how token states become one vector: ``modules.json`` lists
the modules (Transformer -> Pooling -> optional Dense layers -> optional Normalize), ``1_Pooling/config.json``
the pooling mode(s), ``sentence_bert_config.json`` the maximum sequence length. ``read_pipeline`` reads
those files into a ``SentencePipeline``; without them it falls back to the architecture's convention, as
sentence-transformers does for a plain Transformers model (mean pooling for encoders) and as embedding
decoders are trained (last token).

The pooling functions mirror ``sentence_transformers``' ``Pooling._forward_padded`` exactly, including
left padding, so a batch pooled here equals what ``SentenceTransformer.encode`` computes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InternalError

log = logging.getLogger(__name__)

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")

# sentence-transformers' legacy boolean keys, in the order it concatenates them.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}

# Modules that do nothing at inference time.
_NO_OP_MODULES = {"Dropout"}


# -- pooling math ------------------------------------------------------------------------------------
def pool(hidden: torch.Tensor, mask: torch.Tensor, modes: Sequence[str]) -> torch.Tensor:
    """Pool token states ``hidden: [B, T, H]`` under ``mask: [B, T]`` (1 = real token) -> ``[B, H * len(modes)]``.

    Padding may be on either side. Pooled in float32 whatever the model's dtype. Pad positions are zeroed
    first: a left-padded decoder row's pad queries attend to nothing and may hold NaN, and NaN * 0 is NaN.
    """
    hidden = hidden.float().masked_fill(mask.unsqueeze(-1) == 0, 0.0)
    out: list[torch.Tensor] = []
    for mode in modes:
        if mode == "cls":
            out.append(pool_cls(hidden, mask))
        elif mode == "max":
            out.append(pool_max(hidden, mask))
        elif mode == "mean":
            out.append(pool_mean(hidden, mask))
        elif mode == "mean_sqrt_len_tokens":
            out.append(pool_mean(hidden, mask, sqrt_len=True))
        elif mode == "weightedmean":
            out.append(pool_weighted_mean(hidden, mask))
        elif mode == "lasttoken":
            out.append(pool_last_token(hidden, mask))
        else:
            raise InternalError(f"unknown pooling mode {mode!r}; expected one of {', '.join(POOLING_MODES)}")
    return torch.cat(out, dim=-1)


def pool_cls(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first real token (position 0 with right padding)."""
    first = mask.to(torch.int32).argmax(dim=1)  # [B]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


def pool_max(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values


def pool_mean(hidden: torch.Tensor, mask: torch.Tensor, *, sqrt_len: bool = False) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    total = (hidden * m).sum(dim=1)  # [B, H]
    count = m.sum(dim=1).clamp(min=1e-9)  # [B, 1]
    return total / (count.sqrt() if sqrt_len else count)


def pool_weighted_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Position-weighted mean: the k-th real token weighs k (counting from the first real token)."""
    weights = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
    left_pad = mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1)  # [B, 1, 1]
    w = mask.unsqueeze(-1).to(hidden.dtype) * (weights - left_pad)  # [B, T, 1]
    return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)


def pool_last_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last real token, with left or right padding (an all-padding row pools to zeros)."""
    seq_len = hidden.shape[1]
    values, from_end = mask.flip(1).max(dim=1)  # distance of the last real token from the end
    from_end = torch.where(values == 0, torch.full_like(from_end, seq_len - 1), from_end)
    last = seq_len - 1 - from_end  # [B]
    masked = hidden * mask.unsqueeze(-1).to(hidden.dtype)
    return masked[torch.arange(hidden.shape[0], device=hidden.device), last]


# -- the pipeline ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DenseLayer:
    """sentence-transformers' ``Dense``: ``activation(x @ W.T + b)`` (+ a residual when configured)."""

    weight: torch.Tensor  # [out, in]
    bias: torch.Tensor | None
    activation: Callable[[torch.Tensor], torch.Tensor]
    residual: torch.Tensor | None = None  # [out, in] projection, or an identity residual when in == out
    use_residual: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(torch.nn.functional.linear(x, self.weight, self.bias))
        if self.use_residual:
            out = out + (x if self.residual is None else torch.nn.functional.linear(x, self.residual))
        return out


@dataclass(frozen=True)
class SentencePipeline:
    pooling: tuple[str, ...] = ("mean",)
    include_prompt: bool = True  # we never prepend prompts, so this changes nothing; kept for reporting
    dense: tuple[DenseLayer, ...] = ()
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    source: str = "default"

    def apply(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token states ``[B, T, H]`` -> sentence vectors ``[B, D]`` (float32)."""
        x = pool(hidden, mask, self.pooling)
        for layer in self.dense:
            x = layer(x.to(layer.weight.dtype)).float()
        if self.normalize:
            x = torch.nn.functional.normalize(x, p=2, dim=-1)
        return x


def parse_pooling_config(config: dict[str, Any]) -> tuple[tuple[str, ...], bool]:
    """``1_Pooling/config.json`` -> (modes, include_prompt). Reads both the current ``pooling_mode`` key
    (a string or a list) and the legacy ``pooling_mode_*_tokens`` booleans; nothing set means mean."""
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        modes: tuple[str, ...] = (mode,)
    elif isinstance(mode, (list, tuple)) and mode:
        modes = tuple(str(m) for m in mode)
    else:
        modes = tuple(m for key, m in _LEGACY_POOLING_KEYS.items() if config.get(key)) or ("mean",)
    for m in modes:
        if m not in POOLING_MODES:
            raise InternalError(f"unknown pooling mode {m!r} in the model's pooling config; expected one of {', '.join(POOLING_MODES)}")
    return modes, bool(config.get("include_prompt", True))


def read_json(path: Path, model: str = "embedding model") -> Any:
    """A JSON file of a model's directory; None when it is absent, a 500 naming it when it is unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InternalError(f"unreadable {path.name} in the {model}: {exc}") from None


def default_pooling(decoder: bool) -> tuple[str, ...]:
    return ("lasttoken",) if decoder else ("mean",)


def read_pipeline(model_dir: Path, *, decoder: bool) -> SentencePipeline:
    """The sentence-transformers pipeline in ``model_dir``, or the architecture's default without one."""
    modules = read_json(model_dir / "modules.json")
    if not isinstance(modules, list):
        bert_cfg = read_json(model_dir / "sentence_bert_config.json") or {}
        return SentencePipeline(
            pooling=default_pooling(decoder),
            max_seq_length=_int_or_none(bert_cfg.get("max_seq_length")),
            do_lower_case=bool(bert_cfg.get("do_lower_case", False)),
            source="default (decoder: last token)" if decoder else "default (encoder: mean)",
        )
    pooling: tuple[str, ...] | None = None
    include_prompt = True
    dense: list[DenseLayer] = []
    normalize = False
    max_seq_length: int | None = None
    do_lower_case = False
    for entry in sorted(modules, key=lambda e: int(e.get("idx", 0))):
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        path = model_dir / str(entry.get("path", "") or "")
        if kind == "Transformer":
            bert_cfg = read_json(path / "sentence_bert_config.json") or {}
            max_seq_length = _int_or_none(bert_cfg.get("max_seq_length"))
            do_lower_case = bool(bert_cfg.get("do_lower_case", False))
        elif kind == "Pooling":
            pooling, include_prompt = parse_pooling_config(read_json(path / "config.json") or {})
        elif kind == "Dense":
            if pooling is None:
                raise InternalError("a Dense module before Pooling (token-level projection) is not supported")
            dense.append(load_dense(path))
        elif kind == "Normalize":
            cfg = read_json(path / "config.json") or {}
            if cfg.get("module_input_name", "sentence_embedding") != "sentence_embedding":
                raise InternalError("a Normalize module over token embeddings is not supported")
            normalize = True
        elif kind not in _NO_OP_MODULES:
            raise InternalError(f"unsupported sentence-transformers module {entry.get('type')!r} in modules.json")
    if pooling is None:
        raise InternalError("the embedding model's modules.json has no Pooling module")
    return SentencePipeline(
        pooling=pooling,
        include_prompt=include_prompt,
        dense=tuple(dense),
        normalize=normalize,
        max_seq_length=max_seq_length,
        do_lower_case=do_lower_case,
        source="modules.json",
    )


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _activation(name: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Only ``torch.nn`` module classes, instantiated without arguments (sentence-transformers' default is Tanh)."""
    if name is None:
        return torch.nn.Tanh()
    cls = getattr(torch.nn, name.rsplit(".", 1)[-1], None)
    if not name.startswith("torch.") or not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise InternalError(f"unsupported Dense activation function {name!r}")
    module: Callable[[torch.Tensor], torch.Tensor] = cls()
    return module


def load_dense(path: Path) -> DenseLayer:
    cfg = read_json(path / "config.json")
    if not isinstance(cfg, dict):
        raise InternalError(f"the Dense module {path.name!r} has no config.json")
    state = _dense_weights(path)
    weight = state.get("linear.weight")
    if weight is None:
        raise InternalError(f"the Dense module {path.name!r} has no linear.weight")
    out_features, in_features = int(cfg.get("out_features", weight.shape[0])), int(cfg.get("in_features", weight.shape[1]))
    if tuple(weight.shape) != (out_features, in_features):
        raise InternalError(f"Dense {path.name!r}: linear.weight is {tuple(weight.shape)}, config says ({out_features}, {in_features})")
    use_residual = bool(cfg.get("use_residual", False))
    return DenseLayer(
        weight=weight.float(),
        bias=state["linear.bias"].float() if cfg.get("bias", True) and "linear.bias" in state else None,
        activation=_activation(cfg.get("activation_function")),
        residual=state["residual.weight"].float() if use_residual and "residual.weight" in state else None,
        use_residual=use_residual,
    )


def _dense_weights(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").is_file():
        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return dict(state)
    raise InternalError(f"the Dense module {path.name!r} has no weights (model.safetensors)")
