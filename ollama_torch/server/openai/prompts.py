"""``/v1/completions``' ``prompt`` in OpenAI's four forms: a string, an array of strings, an array of token
ids, or an array of arrays of token ids. Each string or token list is one prompt and gets one choice.

Ollama reads only a string (an array is its ``cannot unmarshal array`` 400); the OpenAI API, its SDK and
evaluation harnesses send the others (lm-evaluation-harness sends token ids). A missing or null prompt is
Ollama's empty prompt (it loads the model). Token ids are checked against the vocabulary by the engine.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from ...errors import BadRequest
from ..decode import json_kind

PromptInput: TypeAlias = "str | tuple[int, ...]"

INVALID = "invalid prompt: expected a string, an array of strings, an array of token ids, or an array of arrays of token ids"
EMPTY_TOKENS = "invalid prompt: an array of token ids must hold at least one token"


def _token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tokens(value: list[Any]) -> tuple[int, ...]:
    if not value:
        raise BadRequest(EMPTY_TOKENS)
    if not all(_token(t) for t in value):
        raise BadRequest(INVALID)
    return tuple(value)


def parse_prompts(value: Any) -> tuple[PromptInput, ...]:
    """The prompts of a completion request, in order (a choice's ``index`` is its prompt's place here)."""
    if value is None:
        return ("",)
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise BadRequest(f"json: cannot unmarshal {json_kind(value)} into Go struct field CompletionRequest.prompt of type string")
    if not value:
        raise BadRequest("[] is too short - 'prompt'")
    if all(isinstance(p, str) for p in value):
        return tuple(value)
    if all(_token(t) for t in value):
        return (tuple(value),)
    if all(isinstance(p, list) for p in value):
        return tuple(_tokens(p) for p in value)
    raise BadRequest(INVALID)
