"""What a model's own (Jinja) chat template can do, read off its source: the template-side capabilities
recorded at create time for Safetensors and GGUF models alike."""

from __future__ import annotations


def jinja_template_capabilities(template: str) -> set[str]:
    """HEAD's Jinja heuristics: ``tools``/``tool_call`` -> tools; ``<think>`` + ``</think>`` -> thinking."""
    caps: set[str] = set()
    if "tools" in template or "tool_call" in template:
        caps.add("tools")
    if ("<think>" in template and "</think>" in template) or "enable_thinking" in template:
        caps.add("thinking")
    return caps
