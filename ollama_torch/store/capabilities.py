"""What a model can do (``completion``, ``embedding``, ``rerank``, ``vision``, ``tools``, ``insert``,
``thinking``).

Weight-side capabilities (completion / embedding / rerank / vision / audio) are decided at create time and
stored in the config blob. Template-side ones (tools / insert / thinking) follow the template the model is
prompted with: an Ollama Go ``TEMPLATE`` layer when there is one, else the model's own chat template, whose
capabilities were recorded at create time. Models an Ollama made (no capabilities in the config) are read
from their GGUF metadata, as Ollama's classic ``Model.Capabilities`` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

WEIGHT_CAPS = ("completion", "embedding", "rerank", "vision", "audio")
TEMPLATE_CAPS = ("tools", "insert", "thinking")
# ``rerank`` (an ollama-torch extension: Ollama has no reranking) sits with the other weight-side ones.
ORDER = ("completion", "embedding", "rerank", "vision", "audio", "tools", "insert", "thinking")


def go_template_capabilities(template: str) -> set[str]:
    caps: set[str] = set()
    if re.search(r"\.Tools\b", template):
        caps.add("tools")
    if re.search(r"\.Suffix\b", template):
        caps.add("insert")
    if re.search(r"\.Thinking\b", template) or "<think>" in template:
        caps.add("thinking")
    return caps


def model_capabilities(recorded: Iterable[str], template: str | None, gguf: Callable[[], set[str]]) -> tuple[str, ...]:
    """The capabilities of a model whose config blob ``recorded`` them (at create time), prompted with the
    Go ``template`` (None: its own chat template); ``gguf()`` reads them from the GGUF metadata of a model
    an Ollama made, which records none."""
    stored = set(recorded)
    caps = stored if stored else gguf()
    if template is not None:
        caps = {c for c in caps if c not in TEMPLATE_CAPS} | go_template_capabilities(template)
        if "embedding" in caps or "rerank" in caps:
            caps.discard("tools")
    return tuple(c for c in ORDER if c in caps)
