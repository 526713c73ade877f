"""Ollama's ``options`` as data: every option's name, type, defaults and whether it is a Runner option.

This is the one place that knows the option set (``api.Options`` + ``api.Runner`` at Ollama HEAD). The
Modelfile parser (``PARAMETER`` lines, Ollama's ``api.FormatParams``) and the generation engine (request
``options``, Ollama's ``Options.FromMap``) both read it, so a new option is added here once.

Kept free of torch/aiohttp imports: the CLI imports it and must start fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any, Final


class OptionType(str, Enum):
    """The Go kind of an option field; the value is the word Ollama's type errors use."""

    INT = "integer"
    FLOAT = "float32"
    BOOL = "boolean"
    STRING_LIST = "array"


@dataclass(frozen=True)
class OptionSpec:
    name: str
    type: OptionType
    runner: bool = False  # a Runner option: changing it means reloading the model
    nullable: bool = False  # a Go pointer field (*int, *bool): "unset" differs from zero
    default: Any = None  # Ollama's DefaultOptions(); None where it depends on the machine or model
    doc: str = ""


_SPECS: Final = (
    # Runner options: set when the model is loaded.
    OptionSpec(
        "num_ctx", OptionType.INT, runner=True, doc="context window (OLLAMA_CONTEXT_LENGTH when unset)"
    ),
    OptionSpec("num_batch", OptionType.INT, runner=True, default=512, doc="prompt tokens per forward pass"),
    OptionSpec("num_gpu", OptionType.INT, runner=True, default=-1, doc="layers on the GPU; -1 = auto"),
    OptionSpec("main_gpu", OptionType.INT, runner=True, nullable=True, doc="GPU for small tensors"),
    OptionSpec("use_mmap", OptionType.BOOL, runner=True, nullable=True, doc="memory-map the weights"),
    OptionSpec("num_thread", OptionType.INT, runner=True, default=0, doc="CPU threads; 0 = auto"),
    OptionSpec("draft_num_predict", OptionType.INT, runner=True, default=4, doc="speculative draft length"),
    # Predict options: set per request.
    OptionSpec("num_keep", OptionType.INT, default=4, doc="tokens kept on context shift"),
    OptionSpec("seed", OptionType.INT, default=-1, doc="random seed; -1 = random"),
    OptionSpec("num_predict", OptionType.INT, default=-1, doc="max tokens; -1 = until stop"),
    OptionSpec("top_k", OptionType.INT, default=40),
    OptionSpec("top_p", OptionType.FLOAT, default=0.9),
    OptionSpec("min_p", OptionType.FLOAT, default=0.0),
    OptionSpec("typical_p", OptionType.FLOAT, default=1.0),
    OptionSpec("repeat_last_n", OptionType.INT, default=64, doc="0 = disabled, -1 = num_ctx"),
    OptionSpec("temperature", OptionType.FLOAT, default=0.8, doc="0 = greedy"),
    OptionSpec("repeat_penalty", OptionType.FLOAT, default=1.0),
    OptionSpec("presence_penalty", OptionType.FLOAT, default=0.0),
    OptionSpec("frequency_penalty", OptionType.FLOAT, default=0.0),
    OptionSpec("stop", OptionType.STRING_LIST, doc="stop sequences"),
    # ollama-torch extensions (Ollama ignores unknown options with a warning, so they are safe to send).
    OptionSpec("tool_grammar", OptionType.BOOL, nullable=True,
               doc="constrain tool calls to the tools' names and parameter schemas (default true)"),
)

OPTIONS: Final[Mapping[str, OptionSpec]] = MappingProxyType({spec.name: spec for spec in _SPECS})
"""Every option Ollama knows, by its JSON name (plus this server's extensions, marked above)."""

RUNNER_OPTIONS: Final[frozenset[str]] = frozenset(name for name, spec in OPTIONS.items() if spec.runner)

DEPRECATED_PARAMETERS: Final[tuple[str, ...]] = (
    "penalize_newline",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mlock",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
)
"""Modelfile ``PARAMETER`` names Ollama accepts with a warning and drops (``parser.deprecatedParameters``)."""

REMOVED_OPTIONS: Final[frozenset[str]] = frozenset(
    (*DEPRECATED_PARAMETERS, "tfs_z", "numa", "num_gqa", "rope_frequency_base", "rope_frequency_scale")
)
"""Options removed from ``api.Options`` (v0.7.0); a request carrying them gets a warning, not an error."""

_FLOAT32_MAX: Final = 3.4028234663852886e38
_GO_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _go_list(values: list[str]) -> str:
    """How Go's ``%s`` prints a ``[]string``: ``[a b]``."""
    return "[" + " ".join(values) + "]"


def _parse_go_int(text: str) -> int | None:
    """``strconv.ParseInt(text, 10, 64)``: an optional sign and decimal digits, within int64."""
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def _parse_go_float32(text: str) -> float | None:
    """``strconv.ParseFloat(text, 32)``: Python's float syntax minus underscores and spaces, within float32."""
    if not text or "_" in text or text != text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
        return None
    return value


def parse_option_text(name: str, values: list[str]) -> Any:
    """Ollama's ``api.FormatParams`` for one key: the text values of a ``PARAMETER`` line (or of
    ``/set parameter``) converted to the option's type. Raises ``ValueError`` with Ollama's messages:
    ``unknown parameter 'x'``, ``invalid int value [x]``, ``invalid float value [x]``, ``invalid bool value [x]``."""
    spec = OPTIONS.get(name)
    if spec is None:
        raise ValueError(f"unknown parameter '{name}'")
    if spec.type is OptionType.STRING_LIST:
        return list(values)
    first = values[0] if values else ""
    if spec.type is OptionType.INT:
        number = _parse_go_int(first)
        if number is None:
            raise ValueError(f"invalid int value {_go_list(values)}")
        return number
    if spec.type is OptionType.FLOAT:
        real = _parse_go_float32(first)
        if real is None:
            raise ValueError(f"invalid float value {_go_list(values)}")
        return real
    if first in _GO_TRUE:
        return True
    if first in _GO_FALSE:
        return False
    raise ValueError(f"invalid bool value {_go_list(values)}")


def coerce_option(name: str, value: Any) -> Any:
    """Ollama's ``Options.FromMap`` for one known key and a decoded JSON value: ints accept JSON floats
    (truncated), floats accept ints, lists must hold strings. Raises ``ValueError`` with Ollama's text,
    e.g. ``option "num_ctx" must be of type integer``. Unknown names are the caller's to warn about."""
    spec = OPTIONS[name]
    if value is None:
        return None
    kind = spec.type
    if kind is OptionType.INT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'option "{name}" must be of type integer')
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f'option "{name}" must be of type integer')
        return int(value)
    if kind is OptionType.FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'option "{name}" must be of type float32')
        return float(value)
    if kind is OptionType.BOOL:
        if not isinstance(value, bool):
            raise ValueError(f'option "{name}" must be of type boolean')
        return value
    if not isinstance(value, list):
        raise ValueError(f'option "{name}" must be of type array')
    if not all(isinstance(item, str) for item in value):
        raise ValueError(f'option "{name}" must be of an array of strings')
    return list(value)


def default_options() -> dict[str, Any]:
    """Ollama's ``DefaultOptions()`` for the options whose default does not depend on the machine."""
    return {name: spec.default for name, spec in OPTIONS.items() if spec.default is not None}
