"""Per-request generation options: Ollama's defaults <- the model's PARAMETERs <- the request's options.

Validated once, here, with messages that name the field and the value; unknown options are ignored with
a warning, as Ollama does; a value of the wrong type is a 400 (Ollama answers 500; a bad request is the
client's error).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest
from ..options_schema import OPTIONS, REMOVED_OPTIONS, coerce_option, default_options

log = logging.getLogger(__name__)

MIN_NUM_CTX = 4  # Ollama's scheduler never gives a runner a smaller context (sched.go getRunner)


@dataclass(frozen=True)
class GenerationOptions:
    num_ctx: int
    num_keep: int = 4
    seed: int = -1
    num_predict: int = -1
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    temperature: float = 0.8
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    tool_grammar: bool = True  # constrain tool calls to the offered tools (ollama-torch's extension)
    shift: bool = True  # a full context shifts (drops half of it) instead of ending with "length"

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def max_new_tokens(self) -> int:
        """``num_predict``: -1 is bounded to 10 x num_ctx (Ollama's boundedNumPredict), -2 fills the context."""
        if self.num_predict == -2:
            return self.num_ctx
        if self.num_predict < 0:
            return 10 * self.num_ctx
        return self.num_predict

    @property
    def penalty_window(self) -> int:
        return self.num_ctx if self.repeat_last_n < 0 else self.repeat_last_n

    @property
    def has_penalties(self) -> bool:
        return self.penalty_window > 0 and (
            self.repeat_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
        )


def _merge(target: dict[str, Any], source: dict[str, Any], origin: str) -> None:
    for key, value in source.items():
        if value is None:
            continue
        if key not in OPTIONS:
            if key in REMOVED_OPTIONS:
                log.warning("option %r was removed from Ollama and is ignored (%s)", key, origin)
            else:
                log.warning("invalid option provided: %r is not an Ollama option; ignored (%s)", key, origin)
            continue
        try:
            target[key] = coerce_option(key, value)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None


def _check(opts: dict[str, Any]) -> None:
    checks = (
        ("num_ctx", lambda v: v > 0, "a positive int"),
        ("top_k", lambda v: v >= 0, "a non-negative int (0 disables it)"),
        ("top_p", lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
        ("min_p", lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
        ("typical_p", lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
        ("temperature", lambda v: v >= 0 and math.isfinite(v), "a non-negative number"),
        ("repeat_penalty", lambda v: v > 0 and math.isfinite(v), "a positive number"),
        ("num_predict", lambda v: v >= -2, "-2, -1 or a non-negative int"),
        ("repeat_last_n", lambda v: v >= -1, "-1, 0 or a positive int"),
        ("num_keep", lambda v: v >= -1, "-1 or a non-negative int"),
        ("seed", lambda v: -(2**63) <= v < 2**63, "a 64-bit int"),
        ("presence_penalty", math.isfinite, "a finite number"),
        ("frequency_penalty", math.isfinite, "a finite number"),
    )
    for name, ok, expected in checks:
        value = opts.get(name)
        if value is not None and not ok(value):
            raise BadRequest(f"`{name}` must be {expected}, got {value!r}")


def resolve_options(
    model_params: dict[str, Any], request_options: dict[str, Any], *, default_num_ctx: int, model_max_ctx: int = 0
) -> GenerationOptions:
    opts = default_options()
    _merge(opts, model_params, "model parameters")
    _merge(opts, request_options, "request options")
    _check(opts)
    num_ctx = int(opts.pop("num_ctx", 0) or default_num_ctx)
    if model_max_ctx > 0:
        num_ctx = min(num_ctx, model_max_ctx)
    num_ctx = max(num_ctx, MIN_NUM_CTX)
    stop = opts.pop("stop", None) or []
    known = {f for f in GenerationOptions.__dataclass_fields__ if f not in ("num_ctx", "stop", "shift")}
    kwargs = {k: v for k, v in opts.items() if k in known and v is not None}
    _warn_inert({k: v for k, v in opts.items() if k not in known})
    return GenerationOptions(num_ctx=num_ctx, stop=tuple(s for s in stop if s), **kwargs)


_DEFAULTS = default_options()
_warned: set[str] = set()


def _warn_inert(options: dict[str, Any]) -> None:
    """Ollama's runner options this engine has no use for (``num_gpu``, ``num_thread``, ``use_mmap``, ...):
    accepted, as Ollama accepts them; one set to anything but its default is said once in the log rather
    than silently dropped."""
    for name, value in options.items():
        if value is not None and value != _DEFAULTS.get(name) and name not in _warned:
            _warned.add(name)
            log.warning("option %r has no effect on this engine (it places and threads models itself); ignored", name)
