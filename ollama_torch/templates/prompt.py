"""Ollama's chat prompt building around a template (``server/prompt.go``): drop the oldest messages
until the rendered prompt fits the context window, always keeping the system messages and the last
message, and tag images as ``[img-N]`` in the message text."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .ollama import OllamaTemplate, ThinkValue


@dataclass(frozen=True)
class ChatPrompt:
    prompt: str
    images: list[Any]  # in [img-N] order
    first_kept: int  # index of the first request message kept after truncation


def image_tagged(
    messages: Sequence[Mapping[str, Any]], start: int = 0
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Ollama's ``imageTaggedMessages``: from ``start`` on, each image gets the next id; its
    ``[img-N]`` tag replaces an ``[img]`` placeholder in the content, or is prefixed to it."""
    out = [dict(m) for m in messages]
    images: list[Any] = []
    for m in out[start:]:
        prefix, content = "", m.get("content") or ""
        for img in m.get("images") or ():
            tag = f"[img-{len(images)}]"
            images.append(img)
            if "[img]" in content:
                content = content.replace("[img]", tag, 1)
            else:
                prefix += tag
        m["content"] = prefix + content
    return out, images


def chat_prompt(
    template: OllamaTemplate,
    messages: Sequence[Mapping[str, Any]],
    *,
    count_tokens: Callable[[str], int],
    num_ctx: int,
    tools: Sequence[Mapping[str, Any]] | None = None,
    think: ThinkValue = None,
    truncate: bool = True,
    tokens_per_image: int = 0,
) -> ChatPrompt:
    """Ollama's ``chatPrompt``. ``tokens_per_image`` is what each image costs against ``num_ctx``
    (Ollama counts 768 for models with a vision projector, 0 otherwise)."""
    msgs = list(messages)
    system: list[Mapping[str, Any]] = []
    first = 0
    if truncate:
        for i in range(len(msgs)):
            system = [m for m in msgs[:i] if m.get("role") == "system"]
            prompt = template.render_chat(system + msgs[i:], tools=tools, think=think)
            used = count_tokens(prompt)
            used += tokens_per_image * sum(len(m.get("images") or ()) for m in msgs[i:])
            if used <= num_ctx or i == len(msgs) - 1:
                first = i
                break
    tagged, images = image_tagged(msgs, first)
    prompt = template.render_chat([*system, *tagged[first:]], tools=tools, think=think)
    return ChatPrompt(prompt, images, first)
