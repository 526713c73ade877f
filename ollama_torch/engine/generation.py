"""One generation request end to end on the engine side: build the prompt (on a thread), attach the
grammar (``format``, tool calls: see ``grammar_request``), submit to the model's worker, and hand its
events back to the event loop as they come."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import threading
from collections.abc import AsyncIterator
from typing import Any

from ..errors import BadRequest, ServerBusy
from ..settings import Settings
from ..shaping import plan_response
from ..store import StoredModel
from ..templates.prompt import check_cancelled
from .options import GenerationOptions
from .prompt import BuiltPrompt, PromptJob, build_prompt
from .requests import DoneEvent, ErrorEvent, Event, GenerationRequest
from .threads import in_fresh_thread

log = logging.getLogger(__name__)
_IMG_TAG = re.compile(r"\[img-\d+\]")


class ModelExtras:
    """Things derived once per loaded model and kept with it (FIM tokens, grammar compiler)."""

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded
        self._compiler: Any = None
        self._lock = threading.Lock()
        vocab = set(loaded.tokenizer.get_vocab())
        from converters.hf_inspect import fim_tokens_of

        self.fim = fim_tokens_of(vocab)

    def compiler(self) -> Any:
        with self._lock:
            if self._compiler is None:
                from .grammar import GrammarCompiler

                self._compiler = GrammarCompiler(self.loaded.tokenizer, self.loaded.logits_width, sorted(self.loaded.eos_ids))
            return self._compiler


def extras_for(loaded: Any) -> ModelExtras:
    extras = getattr(loaded, "extras", None)
    if extras is None:
        extras = ModelExtras(loaded)
        loaded.extras = extras
    return extras


def _decode_images(images: list[bytes]) -> list[Any]:
    from PIL import Image

    out = []
    for raw in images:
        try:
            out.append(Image.open(io.BytesIO(raw)).convert("RGB"))
        except Exception:
            raise BadRequest("invalid image data: expected a base64-encoded PNG, JPEG or WebP image") from None
    return out


def prepare(
    loaded: Any, stored: StoredModel, job: PromptJob, opts: GenerationOptions, cancel: threading.Event | None = None
) -> tuple[BuiltPrompt, dict[str, Any]]:
    """Render and tokenize the prompt; for vision prompts, run the processor over text and images.
    ``cancel`` (set once the client is gone) stops it between renders (``PromptCancelled``)."""
    extras = extras_for(loaded)
    template = getattr(loaded.tokenizer, "chat_template", None)
    if loaded.processor is not None:
        template = getattr(loaded.processor, "chat_template", None) or template
    vocab = loaded.vocab_size
    bad = next((t for t in job.context if not 0 <= t < vocab), None)
    if bad is not None:
        raise BadRequest(f"invalid context: token id {bad} is outside the model's vocabulary (0..{vocab - 1})")
    built = build_prompt(
        loaded.tokenizer, template, stored, job, num_ctx=opts.num_ctx, num_keep=opts.num_keep, fim=extras.fim, cancel=cancel
    )
    model_inputs: dict[str, Any] = {}
    if built.images:
        check_cancelled(cancel)
        if loaded.processor is None:
            raise BadRequest(f'"{stored.name.display_shortest}" does not support images')
        text = built.text
        token = getattr(loaded.processor, "image_token", None)
        if built.go_template is not None and token:  # Ollama's [img-N] tags mark where each image goes
            text = _IMG_TAG.sub(lambda _: str(token), text)
        # As Transformers' processor.apply_chat_template decides: add special tokens (BOS) unless the
        # rendered prompt already starts with BOS, so a template that writes BOS does not get two.
        bos = getattr(loaded.tokenizer, "bos_token", None)
        specials = not (bos and text.startswith(bos))
        batch = loaded.processor(text=[text], images=_decode_images(built.images), return_tensors="pt", add_special_tokens=specials)
        built.ids = job.context + batch["input_ids"][0].tolist()
        if len(built.ids) > opts.num_ctx:  # each image became many tokens; a cut through an image cannot run
            raise BadRequest("the input length exceeds the context length")
        model_inputs = {k: v.to(loaded.device) for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        if "pixel_values" in model_inputs:
            model_inputs["pixel_values"] = model_inputs["pixel_values"].to(loaded.dtype)
    return built, model_inputs


def _grammar(loaded: Any, built: BuiltPrompt, job: PromptJob, opts: GenerationOptions, format_spec: Any) -> Any:
    """The request's grammar state (``grammar_request``), or None when its output is unconstrained."""
    from .grammar_request import TOOL_GRAMMAR_OPTION, request_grammar

    plan = plan_response(built, job.think, job.tools)
    constrain_tools = opts.extra.get(TOOL_GRAMMAR_OPTION) is not False
    if format_spec is None and not constrain_tools:
        return None
    try:
        compiler = extras_for(loaded).compiler()
    except ValueError as exc:  # e.g. a slow (Python) tokenizer llguidance cannot read
        if format_spec is not None:
            raise BadRequest(f"structured outputs are not supported by this model: {exc}") from None
        log.warning("tool calls are parsed but not constrained: %s", exc)
        return None
    return request_grammar(compiler, plan, format_spec, job.tools, constrain_tools=constrain_tools)


async def generate(
    settings: Settings, runner: Any, stored: StoredModel, job: PromptJob, opts: GenerationOptions, format_spec: Any = None
) -> AsyncIterator[Event | BuiltPrompt]:
    """Yields the built prompt first (for debug/metrics), then the worker's events until done."""
    loaded = runner.loaded
    cancel = threading.Event()  # set by in_fresh_thread if this request is cancelled while preparing
    built, model_inputs = await in_fresh_thread(prepare, loaded, stored, job, opts, cancel, cancel=cancel)
    yield built
    grammar = None
    if format_spec is not None or job.tools:
        grammar = await in_fresh_thread(_grammar, loaded, built, job, opts, format_spec)
    worker = runner.worker
    if worker.active >= worker.max_rows + settings.max_queue:
        raise ServerBusy()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    def emit(event: Event) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    req = GenerationRequest(
        prompt_ids=built.ids,
        options=opts,
        emit=emit,
        grammar=grammar,
        model_inputs=model_inputs,
        logprobs=job.logprobs,
        top_logprobs=job.top_logprobs if job.logprobs else 0,
    )
    worker.submit(req)
    try:
        while True:
            event = await queue.get()
            yield event
            if isinstance(event, (DoneEvent, ErrorEvent)):
                return
    finally:
        req.cancelled.set()  # a client that went away frees its batch slot at the next step

