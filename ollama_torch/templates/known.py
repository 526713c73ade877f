"""The Go templates a model created with ``--gguf`` may get, with the stop words Ollama gives each.

Ollama stores a GGUF model with a ``TEMPLATE`` in Go template syntax and a ``PARAMETER stop`` list taken from
its table of known templates (``template/``: ChatML, Llama 3, Gemma, Mistral, Phi-3, ...), so that a stock
Ollama formats prompts and stops generating as the model was trained. These are ours, one file per
template in ``known/``, written to render exactly what the checkpoints' own Jinja templates render
(``create/template_match.py`` checks that before choosing one). Stop words are Ollama's for the same
template names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

KNOWN_DIR = Path(__file__).resolve().parent / "known"

STOPS: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "llama3-instruct": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "gemma-instruct": ("<start_of_turn>", "<end_of_turn>"),
    "gemma3-instruct": ("<end_of_turn>",),
    "mistral-instruct": ("[INST]", "[/INST]"),
    "phi-3": ("<|end|>", "<|system|>", "<|user|>", "<|assistant|>"),
}


@dataclass(frozen=True)
class KnownTemplate:
    name: str
    text: str  # the Go template
    stop: tuple[str, ...]


@functools.cache
def known_templates() -> tuple[KnownTemplate, ...]:
    """Every known template, in a fixed order (the first that matches wins)."""
    return tuple(
        KnownTemplate(name, (KNOWN_DIR / f"{name}.gotmpl").read_text(encoding="utf-8"), stop)
        for name, stop in STOPS.items()
    )
