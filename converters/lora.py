"""PEFT LoRA adapters: read one, and check it against the base model it is meant for, before anything is
stored.

An adapter directory as PEFT saves it: ``adapter_config.json`` and ``adapter_model.safetensors`` with
tensors ``base_model.model.<module>.lora_A.weight`` ``[r, in]`` and ``.lora_B.weight`` ``[out, r]`` (and
``.lora_B.bias`` with ``lora_bias``). Only what the engine applies exactly as PEFT does is accepted: plain
LoRA on Linear (and GPT-2-style ``Conv1D``) modules, with ``rank_pattern``/``alpha_pattern`` and rsLoRA;
anything else (another PEFT type, DoRA, LoRA on embeddings, ``modules_to_save``) is an
:class:`UnsupportedAdapter` naming it, never an adapter that loads and does something else.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B)\.(?P<kind>weight|bias)$")


class UnsupportedAdapter(ValueError):
    """An adapter this engine cannot apply exactly; the message names why."""


@dataclass(frozen=True)
class ModuleLora:
    """One adapted module: ``A`` [r, in], ``B`` [out, r] and the factor their product is scaled by."""

    module: str
    rank: int
    in_features: int
    out_features: int
    scaling: float
    bias: bool = False


@dataclass(frozen=True)
class LoraAdapter:
    config: dict[str, Any]
    modules: tuple[ModuleLora, ...]
    fan_in_fan_out: bool = False  # GPT-2's Conv1D stores weights [in, out]
    base_class: str = ""  # the base model class the adapter was trained on, when PEFT recorded it
    base_name: str = ""  # base_model_name_or_path, as written
    tensors: dict[str, str] = field(default_factory=dict)  # module -> its lora_A key (lora_B: same stem)


def _pattern_value(patterns: dict[str, Any], module: str, default: float) -> float:
    """PEFT's ``get_pattern_key``: a pattern matches a module name that ends with it (as a regex)."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return float(value)
    return default


def read_adapter(directory: Path) -> LoraAdapter:
    """The LoRA adapter in ``directory`` (its config and the shapes in its Safetensors header)."""
    from safetensors import safe_open

    config_path, weights_path = directory / CONFIG, directory / WEIGHTS
    if not config_path.is_file():
        raise UnsupportedAdapter(f"the adapter has no {CONFIG}")
    if not weights_path.is_file():
        other = sorted(p.name for p in directory.iterdir() if p.name.startswith("adapter_model"))
        raise UnsupportedAdapter(f"the adapter has no {WEIGHTS}" + (f" (found {', '.join(other)}; only Safetensors is read)" if other else ""))
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsupportedAdapter(f"{CONFIG} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise UnsupportedAdapter(f"{CONFIG} must be a JSON object")
    _check_config(config)
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise UnsupportedAdapter(f"{WEIGHTS} is not a Safetensors file: {exc}") from None
    return _adapter(config, shapes)


def _check_config(config: dict[str, Any]) -> None:
    kind = str(config.get("peft_type") or "")
    if kind.upper() != "LORA":
        raise UnsupportedAdapter(f'unsupported adapter type "{kind or "unknown"}": only LoRA adapters are supported')
    if config.get("use_dora"):
        raise UnsupportedAdapter("DoRA adapters (use_dora) are not supported")
    if config.get("modules_to_save"):
        raise UnsupportedAdapter(f"adapters with modules_to_save ({', '.join(map(str, config['modules_to_save']))}) are not supported")
    for key in ("layer_replication", "megatron_config", "loftq_config"):
        if config.get(key):
            raise UnsupportedAdapter(f"adapters with {key} are not supported")
    if config.get("alora_invocation_tokens") or config.get("use_qalora"):
        raise UnsupportedAdapter("activated LoRA and QA-LoRA adapters are not supported")


def _adapter(config: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> LoraAdapter:
    parts: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        if "lora_embedding" in key or "lora_magnitude" in key:
            raise UnsupportedAdapter(f"the adapter has {key}: LoRA on embeddings and DoRA are not supported")
        match = _KEY.match(key)
        if match is None:
            raise UnsupportedAdapter(f"unexpected tensor {key} in {WEIGHTS}")
        parts.setdefault(match["module"], {})[f"{match['part']}.{match['kind']}"] = shape
    if not parts:
        raise UnsupportedAdapter(f"{WEIGHTS} holds no LoRA tensors")
    alpha = float(config.get("lora_alpha") or config.get("r") or 8)
    rslora = bool(config.get("use_rslora"))
    alpha_pattern = config.get("alpha_pattern") or {}
    modules = []
    for module, found in sorted(parts.items()):
        a, b = found.get("lora_A.weight"), found.get("lora_B.weight")
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            raise UnsupportedAdapter(f"{module}: needs 2-D lora_A and lora_B weights, got {found}")
        rank = a[0]
        if b[1] != rank or rank <= 0:
            raise UnsupportedAdapter(f"{module}: lora_A {list(a)} and lora_B {list(b)} disagree on the rank")
        module_alpha = _pattern_value(alpha_pattern, module, alpha)
        scaling = module_alpha / (math.sqrt(rank) if rslora else rank)
        modules.append(ModuleLora(module, rank, a[1], b[0], scaling, "lora_B.bias" in found))
    auto = config.get("auto_mapping") or {}
    return LoraAdapter(
        config=config,
        modules=tuple(modules),
        fan_in_fan_out=bool(config.get("fan_in_fan_out")),
        base_class=str(auto.get("base_model_class") or "") if isinstance(auto, dict) else "",
        base_name=str(config.get("base_model_name_or_path") or ""),
    )


def check_against_base(adapter: LoraAdapter, base_dir: Path) -> None:
    """Every adapted module exists in the base (built on the meta device from its config.json) and has the
    adapter's shapes; the base class PEFT recorded, if any, is the base's."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(base_dir), local_files_only=True)
    architectures = list(getattr(config, "architectures", None) or [])
    if adapter.base_class and architectures and adapter.base_class not in architectures:
        raise UnsupportedAdapter(
            f'the adapter was trained on a {adapter.base_class} ("{adapter.base_name or "unknown"}"), '
            f"but the base model is a {architectures[0]}"
        )
    cls = getattr(transformers, architectures[0], None) if architectures else None
    if cls is None:
        raise UnsupportedAdapter(f"the base model's architecture {architectures[:1]} is not one Transformers provides")
    with torch.device("meta"):
        model: Any = cls(config)
    for lora in adapter.modules:
        try:
            module = model.get_submodule(lora.module)
        except AttributeError:
            raise UnsupportedAdapter(f'target module "{lora.module}" is not in the base model ({architectures[0] if architectures else "unknown"})') from None
        in_f, out_f = _linear_shape(module, adapter.fan_in_fan_out)
        if in_f is None or out_f is None:
            raise UnsupportedAdapter(f'target module "{lora.module}" is a {type(module).__name__}, not a linear layer')
        if (in_f, out_f) != (lora.in_features, lora.out_features):
            raise UnsupportedAdapter(
                f'target module "{lora.module}" takes {in_f} -> {out_f} features in the base model, '
                f"but the adapter's lora_A/lora_B are for {lora.in_features} -> {lora.out_features}"
            )


def _linear_shape(module: Any, fan_in_fan_out: bool) -> tuple[int | None, int | None]:
    """(in, out) of a Linear-like module: nn.Linear's attributes, or a GPT-2 Conv1D's [in, out] weight."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None and weight.dim() == 2:
        return int(weight.shape[0]), int(weight.shape[1])
    return None, None


def strip_prefix(key: str) -> str:
    return key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
