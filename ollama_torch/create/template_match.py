"""Which known Go template (``templates/known.py``) renders what a checkpoint's Jinja chat template renders.

Ollama picks a ``TEMPLATE`` for a GGUF by the edit distance between the Jinja source and the sources in its
table. Here the match is by behaviour: a few probe conversations are rendered by the checkpoint's own
Jinja template (through its tokenizer, as our engine renders it) and by each Go template (as Ollama and our
engine render those), and a Go template is chosen only if every probe the Jinja template accepts comes out
identical, once llama.cpp's BOS is accounted for: a GGUF whose tokenizer adds BOS gets it from llama.cpp, so
the Jinja text must start with the BOS token the Go template leaves out.

A Jinja template that writes a default system prompt when the conversation has none (Qwen 2, SmolLM2) matches
a Go template plus that prompt as the model's ``SYSTEM``, which is how Ollama's library ships such models.

A Jinja template with tools or reasoning is never replaced by a Go template without them. No match: the
model gets no ``TEMPLATE``; its GGUF keeps the Jinja template (``tokenizer.chat_template``),
which Ollama 0.30 and later render themselves, and which our engine renders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..templates import OllamaTemplate
from ..templates.known import KnownTemplate, known_templates

log = logging.getLogger(__name__)

Message = dict[str, str]
PROBES: tuple[tuple[Message, ...], ...] = (
    ({"role": "user", "content": "Hello!"},),
    (
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "What is 2+2?"},
    ),
    (
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "What is 2+2?"},
    ),
)
_SENTINEL = "\x00SYSTEM\x00"


@dataclass(frozen=True)
class TemplateChoice:
    name: str
    template: str  # Go template
    stop: tuple[str, ...]
    system: str = ""  # the default system prompt the Jinja template writes, if any


def match_template(tokenizer_dir: Path, add_bos: bool) -> TemplateChoice | None:
    """The known template that renders like the checkpoint's chat template, or None (see module doc)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception as exc:  # no usable tokenizer: nothing to compare
        log.info("template detection skipped: %s", exc)
        return None
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or not template:
        return None
    from converters.chat_template import jinja_template_capabilities

    if jinja_template_capabilities(template):
        return None  # tools or reasoning: no known Go template has them; the GGUF keeps the Jinja template
    bos = tokenizer.bos_token if add_bos and tokenizer.bos_token else ""

    def jinja(messages: Sequence[Message]) -> str:
        text = str(tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True))
        return text

    return choose_template(jinja, bos)


def choose_template(jinja: Callable[[Sequence[Message]], str], bos: str = "") -> TemplateChoice | None:
    """The matching ``TemplateChoice`` for a renderer of the checkpoint's template (``jinja``)."""
    expected: list[tuple[tuple[Message, ...], str]] = []
    for probe in PROBES:
        try:
            text = jinja(probe)
        except Exception:  # the template refuses this conversation (e.g. no system role): not a probe
            continue
        if bos:
            if not text.startswith(bos):
                return None  # llama.cpp would add a BOS the checkpoint's prompt does not have
            text = text[len(bos) :]
        expected.append((probe, text))
    if len(expected) < 2:
        return None
    for known in known_templates():
        choice = _matches(known, expected)
        if choice is not None:
            return choice
    return None


def _render(template: OllamaTemplate, messages: Sequence[Message]) -> str:
    return template.render_chat(list(messages))


def _matches(known: KnownTemplate, expected: list[tuple[tuple[Message, ...], str]]) -> TemplateChoice | None:
    template = OllamaTemplate.parse(known.text)
    defaults: set[str] = set()
    for probe, text in expected:
        if _render(template, probe) == text:
            continue
        if any(m["role"] == "system" for m in probe):
            return None
        default = _default_system(template, probe, text)
        if default is None:
            return None
        defaults.add(default)
    if len(defaults) > 1:
        return None
    return TemplateChoice(known.name, known.text, known.stop, defaults.pop() if defaults else "")


def _default_system(template: OllamaTemplate, probe: tuple[Message, ...], text: str) -> str | None:
    """The system prompt that, given to the Go template, makes it render ``text`` for ``probe``."""
    marked = _render(template, ({"role": "system", "content": _SENTINEL}, *probe))
    before, found, after = marked.partition(_SENTINEL)
    if not found or not text.startswith(before) or not text.endswith(after) or len(text) < len(before) + len(after):
        return None
    system = text[len(before) : len(text) - len(after)]
    if not system or _render(template, ({"role": "system", "content": system}, *probe)) != text:
        return None
    return system

