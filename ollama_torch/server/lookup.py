"""Model names from requests, checked once, the same way everywhere: parsed with Ollama's rules (a 400
when invalid) and found in the store (a 404 when missing). Each endpoint says which texts Ollama uses."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import BadRequest, ModelNotFound, OllamaError
from ..names import ModelName
from ..store import ModelStore, StoredModel


def model_name(text: str, invalid: str = "invalid model name") -> ModelName:
    """``text`` as a name; ``BadRequest(invalid)`` when Ollama's rules refuse it."""
    name = ModelName.parse(text)
    if not name.is_valid:
        raise BadRequest(invalid)
    return name


def stored_model(
    store: ModelStore, text: str, *, empty: OllamaError, missing: Callable[[str], OllamaError] = ModelNotFound
) -> StoredModel:
    """The stored model ``text`` names: ``empty`` when no name was given, a 400 for an invalid name,
    ``missing(text)`` when no such model is stored (the text as the request spelled it)."""
    if not text:
        raise empty
    name = model_name(text)
    try:
        return store.get(name)
    except ModelNotFound:
        raise missing(text) from None
