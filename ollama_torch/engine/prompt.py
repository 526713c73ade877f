"""From an API request to prompt token ids: the model's own Jinja chat template, or an Ollama Go
``TEMPLATE`` (the model's layer or the request's override), fill-in-the-middle, raw prompts, token-id
prompts (``/v1/completions``), ``context``,
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
from .api import Chat, Completion, GenerationCall, JsonObject, Message, Think

log = logging.getLogger(__name__)


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


def _go_template(stored: StoredModel, override: str) -> OllamaTemplate | None:
    text = override or stored.template
    if text is None or text == "":
        return None
    try:
        return OllamaTemplate.parse(text)
    except TemplateError as exc:
        raise BadRequest(f"template error: {exc}") from None


def message_dict(m: Message) -> dict[str, Any]:
    """A message as templates read it (Ollama's ``api.Message`` JSON; empty fields left out, as Go's
    ``omitempty``), images as bytes."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.images:
        out["images"] = list(m.images)
    if m.thinking:
        out["thinking"] = m.thinking
    if m.tool_calls:
        out["tool_calls"] = [
            ({"id": c.id} if c.id else {}) | {"function": {"index": c.index, "name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_name:
        out["tool_name"] = m.tool_name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


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


def _chat_messages(stored: StoredModel, call: GenerationCall) -> list[dict[str, Any]]:
    request = call.input
    if isinstance(request, Chat):
        msgs = [dict(m) for m in stored.messages] + [message_dict(m) for m in request.messages]
        if stored.system and (not request.messages or request.messages[0].role != "system"):
            msgs.insert(0, {"role": "system", "content": stored.system})
        return msgs
    system = request.system or stored.system or ""
    msgs = [{"role": "system", "content": system}] if system else []
    if not request.context:
        msgs += [dict(m) for m in stored.messages]
    user: dict[str, Any] = {"role": "user", "content": request.prompt}
    if request.images:
        user["images"] = list(request.images)
    msgs.append(user)
    return msgs


def build_prompt(
    tokenizer: Any,
    chat_template: str | None,
    call: GenerationCall,
    *,
    fim: tuple[str, str, str] | None = None,
    cancel: threading.Event | None = None,
) -> BuiltPrompt:
    """The prompt of ``call``, tokenized, fitted to its ``num_ctx`` (or a 400 with ``truncate: false``)."""
    opts = call.options
    built = _build(tokenizer, chat_template, call, fim=fim, cancel=cancel)
    if len(built.ids) > opts.num_ctx:
        if not call.truncate:
            raise BadRequest("the input length exceeds the context length")
        built.ids = truncate_ids(built.ids, opts.num_ctx, opts.num_keep)
    return built


def _build(
    tokenizer: Any, chat_template: str | None, call: GenerationCall, *, fim: tuple[str, str, str] | None,
    cancel: threading.Event | None,
) -> BuiltPrompt:
    count = lambda text: len(_encode(tokenizer, text, specials=False))  # noqa: E731
    request, stored, num_ctx = call.input, call.model, call.options.num_ctx
    context = list(request.context) if isinstance(request, Completion) else []
    if isinstance(request, Completion) and request.tokens:  # the caller's own tokens, run as they are
        ids = list(request.tokens)
        return BuiltPrompt(ids, str(tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)))
    if isinstance(request, Completion) and request.raw:
        ids = _encode(tokenizer, request.prompt, specials=True)
        return BuiltPrompt(ids, request.prompt)

    go = _go_template(stored, request.template if isinstance(request, Completion) else "")
    if isinstance(request, Completion) and request.suffix:
        if go is not None and go.uses_suffix:
            text = go.render_generate(request.prompt, suffix=request.suffix)
            ids = _encode(tokenizer, text, specials=_needs_bos(tokenizer, text))
        elif fim is not None:
            text = f"{fim[0]}{request.prompt}{fim[1]}{request.suffix}{fim[2]}"
            ids = _encode(tokenizer, text, specials=False)
        else:
            raise BadRequest(f"{stored.name} does not support insert")
        return BuiltPrompt(context + ids, text, go_template=go)

    messages = _chat_messages(stored, call)
    tools: list[JsonObject] | None = list(request.tools) if isinstance(request, Chat) and request.tools else None
    if go is not None:
        chat = chat_prompt(
            go, messages, count_tokens=count, num_ctx=num_ctx, tools=tools, think=call.think, truncate=call.truncate,
            cancel=cancel,
        )
        text, images = chat.prompt, list(chat.images)
        ids = _encode(tokenizer, text, specials=_needs_bos(tokenizer, text) and not context)
        return BuiltPrompt(context + ids, text, images, go_template=go)
    if not chat_template:
        # No template at all (a base model): Ollama's default template is just the prompt.
        if isinstance(request, Completion):
            text = OllamaTemplate.default().render_generate(messages[-1].get("content", ""))
        else:
            text = "\n".join(m.get("content", "") for m in messages)
        ids = _encode(tokenizer, text, specials=not context)
        return BuiltPrompt(context + ids, text)
    render = lambda msgs: _render_jinja(tokenizer, chat_template, msgs, tools, call.think)  # noqa: E731
    text = _fit_messages(render, count, messages, num_ctx, call.truncate, cancel)
    images = [img for m in messages for img in m.get("images") or ()]
    ids = _encode(tokenizer, text, specials=False)
    return BuiltPrompt(context + ids, text, images, jinja_template=chat_template)
