"""From an API request to prompt token ids: the model's own Jinja chat template, or an Ollama Go
``TEMPLATE`` (the model's layer or the request's override), fill-in-the-middle, raw prompts, ``context``,
and Ollama's truncation to ``num_ctx`` (drop the oldest messages, keep system messages and the last one,
found with O(log n) renders: ``templates.prompt.first_fitting``). Imports no torch: it works on the
tokenizer only. ``cancel`` (set when the request's client is gone) stops a preparation between renders
with ``templates.prompt.PromptCancelled``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest
from ..store import StoredModel
from ..templates import OllamaTemplate, TemplateError
from ..templates.prompt import chat_prompt, check_cancelled, first_fitting, kept_messages

log = logging.getLogger(__name__)

Think = bool | str | None


@dataclass
class PromptJob:
    """What /api/generate or /api/chat asked for, already validated by the HTTP layer."""

    kind: str  # "generate" | "chat"
    prompt: str = ""
    suffix: str = ""
    system: str = ""
    template: str = ""
    raw: bool = False
    context: list[int] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    think: Think = None
    truncate: bool = True
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class BuiltPrompt:
    ids: list[int]
    text: str
    images: list[bytes] = field(default_factory=list)
    go_template: OllamaTemplate | None = None  # when a Go template rendered it
    jinja_template: str | None = None  # when the model's own chat template rendered it


def _encode(tokenizer: Any, text: str, *, specials: bool) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=specials))


def _needs_bos(tokenizer: Any, text: str) -> bool:
    """Go templates do not write BOS (llama.cpp adds it); add it unless the text already starts with it."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def truncate_ids(ids: list[int], num_ctx: int, num_keep: int) -> list[int]:
    """A prompt longer than ``num_ctx``: keep its first ``num_keep`` tokens and the newest tokens filling
    half of the rest, as llama.cpp's server (Ollama's engine) does, so generation has room to run before
    the context has to shift."""
    if len(ids) <= num_ctx:
        return ids
    keep = max(0, min(num_keep, num_ctx - 1)) if num_keep >= 0 else 0
    tail = max(1, (num_ctx - keep) // 2)
    log.warning("truncating input prompt: %d tokens > num_ctx %d, keeping %d + %d", len(ids), num_ctx, keep, tail)
    return ids[:keep] + ids[len(ids) - tail :]


def _go_template(stored: StoredModel, job: PromptJob) -> OllamaTemplate | None:
    text = job.template or stored.template
    if text is None or text == "":
        return None
    try:
        return OllamaTemplate.parse(text)
    except TemplateError as exc:
        raise BadRequest(f"template error: {exc}") from None


def _hf_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """API messages in the shape Hugging Face chat templates expect."""
    out: list[dict[str, Any]] = []
    for m in messages:
        msg: dict[str, Any] = {"role": m.get("role", "user"), "content": m.get("content", "")}
        if m.get("images"):  # multimodal templates expect content parts with image placeholders
            msg["content"] = [{"type": "image"} for _ in m["images"]] + [{"type": "text", "text": msg["content"]}]
        if m.get("thinking"):
            msg["reasoning_content"] = m["thinking"]
        if m.get("tool_calls"):
            msg["tool_calls"] = [
                {"type": "function", "function": {"name": c["function"]["name"], "arguments": c["function"].get("arguments", {})}}
                | ({"id": c["id"]} if c.get("id") else {})
                for c in m["tool_calls"]
            ]
        if m.get("role") == "tool":
            if m.get("tool_name"):
                msg["name"] = m["tool_name"]
            if m.get("tool_call_id"):
                msg["tool_call_id"] = m["tool_call_id"]
        out.append(msg)
    return out


def _render_jinja(tokenizer: Any, template: str, messages: list[dict[str, Any]], tools: Any, think: Think) -> str:
    kwargs: dict[str, Any] = {}
    if think is not None:
        kwargs["enable_thinking"] = bool(think)
        if isinstance(think, str):
            kwargs["reasoning_effort"] = think
    try:
        return str(
            tokenizer.apply_chat_template(
                _hf_messages(messages), tools=tools or None, add_generation_prompt=True, tokenize=False,
                chat_template=template, **kwargs,
            )
        )
    except Exception as exc:  # jinja2 errors, raise_exception() in templates
        raise BadRequest(f"chat template error: {exc}") from None


def _fit_messages(
    render: Callable[[list[dict[str, Any]]], str],
    count: Callable[[str], int],
    messages: list[dict[str, Any]],
    num_ctx: int,
    truncate: bool,
    cancel: threading.Event | None = None,
) -> str:
    """Drop whole messages from the front (keeping system messages and the last) until the prompt fits:
    the first cut that fits, searched with O(log n) renders (``first_fitting``)."""
    rendered: dict[int, str] = {}

    def text_without(i: int) -> str:
        if i not in rendered:
            rendered[i] = render(kept_messages(messages, i))
        return rendered[i]

    first = first_fitting(lambda i: count(text_without(i)) <= num_ctx, len(messages) - 1, cancel) if truncate else 0
    check_cancelled(cancel)
    return text_without(first)


def _chat_messages(stored: StoredModel, job: PromptJob) -> list[dict[str, Any]]:
    if job.kind == "chat":
        msgs = [dict(m) for m in stored.messages] + [dict(m) for m in job.messages]
        if stored.system and (not job.messages or job.messages[0].get("role") != "system"):
            msgs.insert(0, {"role": "system", "content": stored.system})
        return msgs
    system = job.system or stored.system or ""
    msgs = [{"role": "system", "content": system}] if system else []
    if not job.context:
        msgs += [dict(m) for m in stored.messages]
    user: dict[str, Any] = {"role": "user", "content": job.prompt}
    if job.images:
        user["images"] = list(job.images)
    msgs.append(user)
    return msgs


def build_prompt(
    tokenizer: Any,
    chat_template: str | None,
    stored: StoredModel,
    job: PromptJob,
    *,
    num_ctx: int,
    num_keep: int,
    fim: tuple[str, str, str] | None = None,
    cancel: threading.Event | None = None,
) -> BuiltPrompt:
    built = _build(tokenizer, chat_template, stored, job, num_ctx=num_ctx, num_keep=num_keep, fim=fim, cancel=cancel)
    if len(built.ids) > num_ctx:
        if not job.truncate:
            raise BadRequest("the input length exceeds the context length")
        built.ids = truncate_ids(built.ids, num_ctx, num_keep)
    return built


def _build(
    tokenizer: Any,
    chat_template: str | None,
    stored: StoredModel,
    job: PromptJob,
    *,
    num_ctx: int,
    num_keep: int,
    fim: tuple[str, str, str] | None,
    cancel: threading.Event | None,
) -> BuiltPrompt:
    count = lambda text: len(_encode(tokenizer, text, specials=False))  # noqa: E731
    if job.raw:
        ids = _encode(tokenizer, job.prompt, specials=True)
        return BuiltPrompt(ids, job.prompt)

    go = _go_template(stored, job)
    if job.kind == "generate" and job.suffix:
        if go is not None and go.uses_suffix:
            text = go.render_generate(job.prompt, suffix=job.suffix)
            ids = _encode(tokenizer, text, specials=_needs_bos(tokenizer, text))
        elif fim is not None:
            text = f"{fim[0]}{job.prompt}{fim[1]}{job.suffix}{fim[2]}"
            ids = _encode(tokenizer, text, specials=False)
        else:
            raise BadRequest(f"{stored.name} does not support insert")
        return BuiltPrompt(job.context + ids, text, go_template=go)

    messages = _chat_messages(stored, job)
    if go is not None:
        chat = chat_prompt(
            go, messages, count_tokens=count, num_ctx=num_ctx, tools=job.tools, think=job.think, truncate=job.truncate, cancel=cancel
        )
        text, images = chat.prompt, list(chat.images)
        ids = _encode(tokenizer, text, specials=_needs_bos(tokenizer, text) and not job.context)
        return BuiltPrompt(job.context + ids, text, images, go_template=go)
    if not chat_template:
        # No template at all (a base model): Ollama's default template is just the prompt.
        text = OllamaTemplate.default().render_generate(messages[-1].get("content", "")) if job.kind == "generate" else "\n".join(m.get("content", "") for m in messages)
        ids = _encode(tokenizer, text, specials=not job.context)
        return BuiltPrompt(job.context + ids, text)
    render = lambda msgs: _render_jinja(tokenizer, chat_template, msgs, job.tools, job.think)  # noqa: E731
    text = _fit_messages(render, count, messages, num_ctx, job.truncate, cancel)
    images = [img for m in messages for img in m.get("images") or ()]
    ids = _encode(tokenizer, text, specials=False)
    return BuiltPrompt(job.context + ids, text, images, jinja_template=chat_template)
