"""What a model can do (``completion``, ``embedding``, ``vision``, ``tools``, ``insert``, ``thinking``).

Weight-side capabilities (completion / embedding / vision / audio) are decided at create time and stored in
the config blob. Template-side ones (tools / insert / thinking) follow the template the model is prompted
with: an Ollama Go ``TEMPLATE`` layer when there is one, else the model's own chat template, whose
capabilities were recorded at create time. Models an Ollama made (no capabilities in the config) are read
from their GGUF metadata, as Ollama's classic ``Model.Capabilities`` does.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store.model import StoredModel

log = logging.getLogger(__name__)

WEIGHT_CAPS = ("completion", "embedding", "vision", "audio")
TEMPLATE_CAPS = ("tools", "insert", "thinking")
ORDER = ("completion", "embedding", "vision", "audio", "tools", "insert", "thinking")


def go_template_capabilities(template: str) -> set[str]:
    caps: set[str] = set()
    if re.search(r"\.Tools\b", template):
        caps.add("tools")
    if re.search(r"\.Suffix\b", template):
        caps.add("insert")
    if re.search(r"\.Thinking\b", template) or "<think>" in template:
        caps.add("thinking")
    return caps


def jinja_template_capabilities(template: str) -> set[str]:
    """HEAD's Jinja heuristics: ``tools``/``tool_call`` -> tools; ``<think>`` + ``</think>`` -> thinking."""
    caps: set[str] = set()
    if "tools" in template or "tool_call" in template:
        caps.add("tools")
    if ("<think>" in template and "</think>" in template) or "enable_thinking" in template:
        caps.add("thinking")
    return caps


def model_capabilities(model: StoredModel) -> list[str]:
    stored = list(model.config.capabilities or [])
    caps = set(stored) if stored else _gguf_capabilities(model)
    if model.template is not None:
        caps = {c for c in caps if c not in TEMPLATE_CAPS} | go_template_capabilities(model.template)
        if "embedding" in caps:
            caps.discard("tools")
    return [c for c in ORDER if c in caps]


def _gguf_capabilities(model: StoredModel) -> set[str]:
    layer = model.gguf_layer
    if layer is None:
        return {"completion"}
    try:
        from converters.gguf_info import read_gguf_info

        info = read_gguf_info(model.blob_path(layer))
    except Exception as exc:  # an unreadable file still lists; loading it will report the error
        log.warning("cannot read GGUF metadata of %s: %s", model.name, exc)
        return {"completion"}
    return set(info.capabilities)
