"""What flows between the asyncio side and a model worker thread: requests in, events out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .options import GenerationOptions


@dataclass
class TextEvent:
    text: str
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # one entry per token behind ``text``


@dataclass
class DoneEvent:
    reason: str  # "stop" | "length"
    prompt_eval_count: int
    prompt_eval_duration: float  # seconds
    eval_count: int
    eval_duration: float
    tokens: list[int]  # prompt + generated ids (Ollama's ``context``)


@dataclass
class ErrorEvent:
    error: BaseException


Event = TextEvent | DoneEvent | ErrorEvent


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    options: GenerationOptions
    emit: Callable[[Event], None]  # called on the worker thread; must be thread-safe and cheap
    grammar: Any = None  # ollama_torch.engine.grammar.GrammarState, or None
    model_inputs: dict[str, Any] = field(default_factory=dict)  # e.g. pixel_values for vision prompts
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives per token (0..20), with ``logprobs``
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)
