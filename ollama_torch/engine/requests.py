"""What flows between the engine front (asyncio) and a model worker thread: requests in, events out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .api import TokenLogprob
from .options import GenerationOptions

if TYPE_CHECKING:
    from .grammar.compiler import GrammarState
    from .lora import AdapterRef


@dataclass
class TextEvent:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # one entry per token behind ``text``


@dataclass
class DoneEvent:
    reason: str  # "stop" | "length"
    prompt_tokens: int  # the prompt as submitted
    cached_tokens: int  # of those, served from the prefix cache
    prompt_eval_count: int  # tokens prefilled (a context shift prefills again)
    prompt_eval_duration: float  # seconds
    eval_count: int
    eval_duration: float
    tokens: list[int]  # prompt + generated ids (Ollama's ``context``)
    stop_sequence: str = ""  # the stop string that ended the generation, if one did


@dataclass
class PromptEvent:
    """The prompt's tokens scored (``prompt_logprobs``), sent before any other event of the request."""

    first: str  # the first token's text: nothing precedes it, so it has no logprob
    logprobs: tuple[TokenLogprob, ...]  # each later token, given the tokens before it


@dataclass
class ErrorEvent:
    error: BaseException


Event = PromptEvent | TextEvent | DoneEvent | ErrorEvent


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    options: GenerationOptions
    emit: Callable[[Event], None]  # called on the worker thread; must be thread-safe and cheap
    grammar: GrammarState | None = None
    model_inputs: dict[str, Any] = field(default_factory=dict)  # e.g. pixel_values for vision prompts
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives per token (0..20), with ``logprobs`` or ``prompt_logprobs``
    adapters: tuple[AdapterRef, ...] = ()  # LoRA adapters on the base weights, applied together
    prompt_logprobs: bool = False  # score the prompt's tokens too: logits of every prompt position, no prefix reuse
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)
