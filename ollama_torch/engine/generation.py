"""One generation request on the engine side:

    prepare (on a thread of its own: the prompt rendered, fitted and tokenized, images through the vision
             processor, the response plan, the grammar) -> the model's worker -> its events shaped into the
             typed chunks of ``engine.api``

The response plan (``shaping.plan_response``: reasoning tags, tool-call markup, whether the prompt already
opened either) is made once per request; the grammar that constrains the output and the shaper that splits
it both derive from it, so they always agree.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest, InternalError, OllamaError
from ..templates.prompt import check_cancelled
from .api import (
    Chat,
    Chunk,
    Completion,
    Content,
    Done,
    GenerationCall,
    JsonObject,
    Logprobs,
    Prompt,
    Rendered,
    Stats,
    Thinking,
    TokenLogprob,
    ToolCall,
    ToolCalls,
)
from .grammar.compiler import GrammarState
from .loader import LoadedModel
from .lora import AdapterRef
from .prompt import BuiltPrompt, build_prompt
from .requests import DoneEvent, ErrorEvent, Event, GenerationRequest, PromptEvent, TextEvent
from .shaping import ResponsePlan, ResponseShaper, Shaped, plan_response
from .worker import ModelWorker

log = logging.getLogger(__name__)
_IMG_TAG = re.compile(r"\[img-\d+\]")


@dataclass
class Prepared:
    """What a request needs before it can join the batch."""

    built: BuiltPrompt
    plan: ResponsePlan
    grammar: GrammarState | None = None
    model_inputs: dict[str, Any] = field(default_factory=dict)  # e.g. pixel_values for vision prompts


def tools_of(call: GenerationCall) -> Sequence[JsonObject]:
    return call.input.tools if isinstance(call.input, Chat) else ()


# -- preparation (on a thread) ----------------------------------------------------------------------------
def prepare(loaded: LoadedModel, call: GenerationCall, cancel: threading.Event | None = None) -> Prepared:
    """The prompt, its plan and its grammar. ``cancel`` (set once the client is gone) stops it between
    renders (``PromptCancelled``)."""
    built, model_inputs = prompt_of(loaded, call, cancel)
    plan = plan_response(built, call.think, tools_of(call))
    grammar = _grammar(loaded, plan, call) if call.format is not None or tools_of(call) else None
    return Prepared(built, plan, grammar, model_inputs)


def render(loaded: LoadedModel, call: GenerationCall, cancel: threading.Event | None = None) -> Rendered:
    built, _ = prompt_of(loaded, call, cancel)
    return Rendered(built.text, len(built.images), len(built.ids))


def prompt_of(loaded: LoadedModel, call: GenerationCall, cancel: threading.Event | None) -> tuple[BuiltPrompt, dict[str, Any]]:
    """Render and tokenize the prompt; for vision prompts, run the processor over text and images."""
    template = getattr(loaded.tokenizer, "chat_template", None)
    if loaded.processor is not None:
        template = getattr(loaded.processor, "chat_template", None) or template
    context = call.input.context if isinstance(call.input, Completion) else ()
    prompt_ids = call.input.tokens if isinstance(call.input, Completion) else ()
    for name, ids in (("context", context), ("prompt", prompt_ids)):
        bad = next((t for t in ids if not 0 <= t < loaded.vocab_size), None)
        if bad is not None:
            raise BadRequest(f"invalid {name}: token id {bad} is outside the model's vocabulary (0..{loaded.vocab_size - 1})")
    built = build_prompt(loaded.tokenizer, template, call, fim=loaded.fim, cancel=cancel)
    model_inputs: dict[str, Any] = {}
    if built.images:
        check_cancelled(cancel)
        if loaded.processor is None:
            raise BadRequest(f'"{call.model.name.display_shortest}" does not support images')
        text = built.text
        token = getattr(loaded.processor, "image_token", None)
        if built.go_template is not None and token:  # Ollama's [img-N] tags mark where each image goes
            text = _IMG_TAG.sub(lambda _: str(token), text)
        # As Transformers' processor.apply_chat_template decides: add special tokens (BOS) unless the
        # rendered prompt already starts with BOS, so a template that writes BOS does not get two.
        bos = getattr(loaded.tokenizer, "bos_token", None)
        specials = not (bos and text.startswith(bos))
        batch = loaded.processor(text=[text], images=_decode_images(built.images), return_tensors="pt", add_special_tokens=specials)
        built.ids = list(context) + batch["input_ids"][0].tolist()
        if len(built.ids) > call.options.num_ctx:  # each image became many tokens; a cut through an image cannot run
            raise BadRequest("the input length exceeds the context length")
        model_inputs = {k: v.to(loaded.device) for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        if "pixel_values" in model_inputs:
            model_inputs["pixel_values"] = model_inputs["pixel_values"].to(loaded.dtype)
    return built, model_inputs


def _decode_images(images: list[bytes]) -> list[Any]:
    from PIL import Image

    out = []
    for raw in images:
        try:
            out.append(Image.open(io.BytesIO(raw)).convert("RGB"))
        except Exception:
            raise BadRequest("invalid image data: expected a base64-encoded PNG, JPEG or WebP image") from None
    return out


def _grammar(loaded: LoadedModel, plan: ResponsePlan, call: GenerationCall) -> GrammarState | None:
    """The request's grammar state (``grammar.request``), or None when its output is unconstrained."""
    from .grammar.request import request_grammar

    constrain_tools = call.options.tool_grammar
    if call.format is None and not constrain_tools:
        return None
    try:
        compiler = loaded.grammar_compiler()
    except ValueError as exc:  # e.g. a slow (Python) tokenizer llguidance cannot read
        if call.format is not None:
            raise BadRequest(f"structured outputs are not supported by this model: {exc}") from None
        log.warning("tool calls are parsed but not constrained: %s", exc)
        return None
    return request_grammar(compiler, plan, call.format, tools_of(call), constrain_tools=constrain_tools,
                           require_call=call.require_tool_call)


# -- the stream ---------------------------------------------------------------------------------------------
async def stream(
    worker: ModelWorker, call: GenerationCall, prepared: Prepared, load_seconds: float, adapters: tuple[AdapterRef, ...] = ()
) -> AsyncIterator[Chunk]:
    """Submit the prepared request to the worker and yield its output as typed chunks, ending with
    :class:`Done`. Leaving early (the client went away) frees its batch row at the next step."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()

    def emit(event: Event) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    req = GenerationRequest(
        prompt_ids=prepared.built.ids,
        options=call.options,
        emit=emit,
        grammar=prepared.grammar,
        model_inputs=prepared.model_inputs,
        logprobs=call.logprobs,
        top_logprobs=call.top_logprobs if call.logprobs or call.prompt_logprobs else 0,
        adapters=adapters,
        prompt_logprobs=call.prompt_logprobs,
    )
    shaper = _Chunker(ResponseShaper.from_plan(prepared.plan))
    worker.submit(req)
    try:
        if call.echo and not call.prompt_logprobs:  # nothing to wait for: the text is known
            yield Prompt(prepared.built.text)
        while True:
            event = await queue.get()
            if isinstance(event, PromptEvent):  # the worker sends it before anything else of the request
                yield Prompt(prepared.built.text, event.first, event.logprobs)
            elif isinstance(event, TextEvent):
                for chunk in shaper.add(event.text, event.logprobs):
                    yield chunk
            elif isinstance(event, DoneEvent):
                for chunk in shaper.finish():
                    yield chunk
                yield Done(event.reason, _stats(event, load_seconds), tuple(event.tokens), event.stop_sequence)
                return
            elif isinstance(event, ErrorEvent):
                err = event.error
                raise err if isinstance(err, OllamaError) else InternalError(f"an error was encountered while running the model: {err}")
    finally:
        req.cancelled.set()  # a client that went away frees its batch slot at the next step


def _stats(done: DoneEvent, load_seconds: float) -> Stats:
    return Stats(
        prompt_tokens=done.prompt_tokens,
        cached_tokens=done.cached_tokens,
        prompt_eval_count=done.prompt_eval_count,
        prompt_eval_duration=done.prompt_eval_duration,
        eval_count=done.eval_count,
        eval_duration=done.eval_duration,
        load_duration=load_seconds,
    )


class _Chunker:
    """The shaper's pieces as typed chunks: the logprobs of a piece of text ride on the first chunk it
    made, or come alone when the text is held back; tool calls are numbered across the response."""

    def __init__(self, shaper: ResponseShaper) -> None:
        self.shaper = shaper
        self.calls = 0

    def add(self, text: str, logprobs: tuple[TokenLogprob, ...]) -> list[Chunk]:
        return self._chunks(self.shaper.add(text), logprobs)

    def finish(self) -> list[Chunk]:
        return self._chunks(self.shaper.finish(), ())

    def _chunks(self, pieces: list[Shaped], logprobs: tuple[TokenLogprob, ...]) -> list[Chunk]:
        out: list[Chunk] = []
        for piece in pieces:
            lp, logprobs = logprobs, ()
            if piece.thinking:
                out.append(Thinking(piece.thinking, lp))
            elif piece.tool_calls:
                out.append(ToolCalls(tuple(self._call(c) for c in piece.tool_calls), lp))
            elif piece.content:
                out.append(Content(piece.content, lp))
            elif lp:
                out.append(Logprobs(lp))
        if logprobs:  # no piece to ride on: the text is held back
            out.append(Logprobs(logprobs))
        return out

    def _call(self, raw: dict[str, Any]) -> ToolCall:
        function = raw.get("function", {})
        call = ToolCall(str(function.get("name", "")), dict(function.get("arguments") or {}), str(raw.get("id", "")), self.calls)
        self.calls += 1
        return call
