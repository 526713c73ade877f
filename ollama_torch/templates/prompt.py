"""Ollama's chat prompt building around a template (``server/prompt.go``): drop the oldest messages
until the rendered prompt fits the context window, always keeping the system messages and the last
message, and tag images as ``[img-N]`` in the message text.

Ollama finds the cut by rendering and tokenizing the history once per dropped message, which is
quadratic: a chat of 10,000 messages never answered. :func:`first_fitting` finds the same cut with
O(log n) renders, and a preparation whose client went away stops at its next render (``cancel``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .ollama import OllamaTemplate, ThinkValue

M = TypeVar("M", bound=Mapping[str, Any])


@dataclass(frozen=True)
class ChatPrompt:
    prompt: str
    images: list[Any]  # in [img-N] order
    first_kept: int  # index of the first request message kept after truncation


class PromptCancelled(Exception):
    """Raised inside prompt preparation once its ``cancel`` event is set: nobody waits for the prompt."""


def check_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise PromptCancelled


def kept_messages(messages: Sequence[M], first: int) -> list[M]:
    """What Ollama renders when the messages before ``first`` are dropped: their system messages, then
    ``messages[first:]``."""
    return [m for m in messages[:first] if m.get("role") == "system"] + list(messages[first:])


def first_fitting(fits: Callable[[int], bool], last: int, cancel: threading.Event | None = None) -> int:
    """The smallest ``i`` in ``0..last`` for which ``fits(i)`` (the prompt without the ``i`` oldest
    messages fits the context), or ``last`` when none before it does: what Ollama's scan from the front
    returns, found with O(log n) calls instead of one per message.

    It relies on dropping a message never lengthening the prompt (``fits`` is monotonic), which holds
    for chat templates: each kept message is rendered as it was. ``fits(0)`` comes first, so a prompt
    that fits costs one render, as before; otherwise the cut is searched from the newest end (probes
    ``last-1``, ``last-2``, ``last-4``, ... then bisects), so each probe renders about as much as is
    finally kept, not the whole history. ``cancel`` is checked before each call."""
    check_cancelled(cancel)
    if last <= 0 or fits(0):
        return 0
    lo, hi = 0, last  # fits(lo) is false; hi is last or fits
    step = 1
    while last - step > lo:
        check_cancelled(cancel)
        if not fits(last - step):
            lo = last - step
            break
        hi = last - step
        step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        check_cancelled(cancel)
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


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
    cancel: threading.Event | None = None,
) -> ChatPrompt:
    """Ollama's ``chatPrompt``. ``tokens_per_image`` is what each image costs against ``num_ctx``
    (Ollama counts 768 for models with a vision projector, 0 otherwise)."""
    msgs = list(messages)

    def fits(i: int) -> bool:
        prompt = template.render_chat(kept_messages(msgs, i), tools=tools, think=think)
        used = count_tokens(prompt)
        used += tokens_per_image * sum(len(m.get("images") or ()) for m in msgs[i:])
        return used <= num_ctx

    first = first_fitting(fits, len(msgs) - 1, cancel) if truncate else 0
    check_cancelled(cancel)
    tagged, images = image_tagged(msgs, first)
    system = [m for m in msgs[:first] if m.get("role") == "system"]
    prompt = template.render_chat([*system, *tagged[first:]], tools=tools, think=think)
    return ChatPrompt(prompt, images, first)
