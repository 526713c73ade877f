"""Structured outputs: JSON-Schema-constrained decoding as token masks over a batch (llguidance).

Three objects, one per lifetime:

* :class:`GrammarCompiler` — one per loaded model. Wraps the model's tokenizer for llguidance (about 0.5 s,
  so built once) and compiles :class:`~ollama_torch.engine.grammar.format.FormatSpec`\\ s (and the Lark
  grammars of ``grammar/lark``/``grammar/tools``: ``format`` after thinking, constrained tool calls) into
  :class:`CompiledGrammar`\\ s, kept in an LRU cache keyed by (whitespace style, schema text) or the Lark
  text, so every request with the same schema reuses one compiled grammar.
* :class:`CompiledGrammar` — immutable; holds a ready llguidance matcher that each request deep-copies
  (microseconds, versus the grammar build).
* :class:`GrammarState` — one per request: the parser position in the output so far.

The engine step calls :func:`apply_grammar_masks` on the logits of the constrained rows, samples, then
``state.consume(token)`` for each of them. Penalties and temperature come after masking (``-inf`` stays
``-inf`` under both). Masks are sized to the model's logits width, which may exceed the tokenizer's
vocabulary: those padded ids are never allowed. The model's end-of-sequence / end-of-turn ids (given to
the compiler) are allowed exactly when the output so far is a complete value; once nothing can follow,
they are the only tokens allowed, so a caller may also stop as soon as :meth:`GrammarState.is_finished`.
A state whose matcher hits an error (a rejected token, an internal llguidance limit) is masked to the
end-of-sequence ids only and reports it in :attr:`GrammarState.error`.

``parse_format`` lives in the torch-free ``grammar/format`` module (the HTTP layer validates there); it is
re-exported here for the engine's convenience.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from llguidance import LLExecutor, LLMatcher, LLTokenizer

from ollama_torch.engine.grammar.format import (
    COMPACT,
    JSON_OBJECT,
    SPACED,
    FormatSpec,
    JsonStyle,
    bounded_whitespace,
    build_grammar,
    parse_format,
    translate_error,
)
from ollama_torch.errors import BadRequest, InternalError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "COMPACT",
    "JSON_OBJECT",
    "SPACED",
    "CompiledGrammar",
    "FormatSpec",
    "GrammarCompiler",
    "GrammarState",
    "GrammarViolation",
    "JsonStyle",
    "apply_grammar_masks",
    "bounded_whitespace",
    "parse_format",
]

log = logging.getLogger(__name__)


class GrammarViolation(InternalError):
    """A sampled token the grammar rejects: after masking this is an engine bug, not a client error."""


class GrammarCompiler:
    """Compiles ``format`` specs for one model; owns the llguidance tokenizer and the grammar cache.

    ``vocab_size`` is the width of the model's logits (``config.vocab_size``), at least the tokenizer's
    size. ``eos_token_ids`` are the ids that end a generation (end-of-turn included, e.g. ChatML's
    ``<|im_end|>``); default: the tokenizer's ``eos_token_id``. Batches of at least
    ``parallel_fill_min_rows`` rows compute their masks on llguidance's thread pool (``fill_threads``
    threads, default: llguidance's choice), smaller ones in the calling thread: on 2 shared cores 8 rows
    took ~190-220 µs serially and 190-400 µs on the pool (bench/schema_suite.py); the pool pays off with
    more cores and larger batches (vLLM switches at 128). ``style`` is the default
    whitespace style (see ``grammar/format``).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vocab_size: int,
        eos_token_ids: Sequence[int] | None = None,
        *,
        style: JsonStyle = COMPACT,
        cache_size: int = 128,
        fill_threads: int | None = None,
        parallel_fill_min_rows: int = 32,
    ) -> None:
        import llguidance.hf  # imports transformers; only the engine needs it

        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(tokenizer):
            raise ValueError(f"`vocab_size` must be an int >= the tokenizer's size {len(tokenizer)}, "
                             f"got {vocab_size!r}")
        if eos_token_ids is None:
            eos = tokenizer.eos_token_id
            eos_token_ids = [eos] if isinstance(eos, int) else []
        eos_ids = sorted({int(t) for t in eos_token_ids})
        if not eos_ids or not all(0 <= t < vocab_size for t in eos_ids):
            raise ValueError(f"`eos_token_ids` must be non-empty ids below {vocab_size}, got {eos_ids!r}")
        if cache_size < 1:
            raise ValueError(f"`cache_size` must be a positive int, got {cache_size!r}")
        try:
            self.ll_tokenizer: LLTokenizer = llguidance.hf.from_tokenizer(
                tokenizer, n_vocab=vocab_size, eos_token=eos_ids)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"structured outputs need a fast (Rust) tokenizer: {exc}") from exc
        self.vocab_size = vocab_size
        self.mask_words = (vocab_size + 31) // 32  # int32 words per bitmask row
        self.eos_token_ids: tuple[int, ...] = tuple(eos_ids)
        self.style = style
        self._cache: OrderedDict[tuple[JsonStyle | None, str], CompiledGrammar] = OrderedDict()
        self._special_ids: tuple[int, ...] | None = None
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._hits = self._misses = 0
        self._fill_threads = fill_threads
        self.parallel_fill_min_rows = max(2, parallel_fill_min_rows)
        self._executor: LLExecutor | None = None
        self._pinned: torch.Tensor | None = None  # page-locked mask buffer for CUDA models (host_bitmask)

    def compile(self, spec: FormatSpec, style: JsonStyle | None = None) -> CompiledGrammar:
        """The compiled grammar for ``spec`` (cached); :class:`BadRequest` if llguidance refuses it."""
        style = style or self.style

        def build() -> str:
            return build_grammar(spec.enforced_text, style, validate=False)

        def refuse(message: str) -> Exception:
            return BadRequest(translate_error(message, spec.enforced_text, spec.schema_text))

        return self._compiled((style, spec.enforced_text), build, refuse, spec.kind, spec=spec, style=style)

    def compile_lark(self, lark: str, label: str) -> CompiledGrammar:
        """A compiled llguidance Lark grammar (cached by its text), e.g. from ``grammar/lark`` /
        ``grammar/tools``; :class:`InternalError` if llguidance refuses it (those grammars are ours)."""

        def refuse(message: str) -> Exception:
            return InternalError(f"{label} grammar: {message.strip().splitlines()[0] if message.strip() else message}")

        return self._compiled((None, lark), lambda: LLMatcher.grammar_from_lark(lark), refuse, label)

    def _compiled(self, key: tuple[JsonStyle | None, str], build: Callable[[], str],
                  refuse: Callable[[str], Exception], label: str, *, spec: FormatSpec | None = None,
                  style: JsonStyle | None = None) -> CompiledGrammar:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self._hits += 1
                return hit
        start = time.perf_counter()
        try:
            grammar = build()
        except ValueError as exc:
            raise refuse(str(exc)) from None
        template = LLMatcher(self.ll_tokenizer, grammar, log_level=0)
        if template.is_error():
            raise refuse(template.get_error())
        for warning in template.get_grammar_warnings():
            log.debug("grammar warning for %s: %s", label, warning)
        compiled = CompiledGrammar(self, spec, style, template, time.perf_counter() - start, label=label)
        with self._lock:
            self._misses += 1
            self._cache[key] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def host_bitmask(self, rows: int, *, pinned: bool = False) -> torch.Tensor:
        """A zeroed int32 [rows, mask_words] CPU buffer for ``fill_bitmask``. For a CUDA model it is page-locked
        and reused across steps, so its copy to the device runs asynchronously: the step's one host sync (the
        chosen ids) comes after that copy in stream order, so the buffer is free again by the next step."""
        if not pinned:
            return torch.zeros((rows, self.mask_words), dtype=torch.int32)
        if self._pinned is None or self._pinned.shape[0] < rows:
            self._pinned = torch.zeros((max(rows, 8), self.mask_words), dtype=torch.int32, pin_memory=True)
        buffer = self._pinned[:rows]
        buffer.zero_()
        return buffer

    def special_ids(self) -> tuple[int, ...]:
        """Ids of the tokenizer's special/added tokens (llguidance never matches them with text)."""
        if self._special_ids is None:
            tok = self.ll_tokenizer
            self._special_ids = tuple(i for i in range(tok.vocab_size) if tok.is_special_token(i))
        return self._special_ids

    def new_state(self, spec: FormatSpec, style: JsonStyle | None = None) -> GrammarState:
        """Shorthand for ``compile(spec, style).new_state()``."""
        return self.compile(spec, style).new_state()

    def cache_info(self) -> tuple[int, int, int]:
        """(hits, misses, entries) of the grammar cache."""
        with self._lock:
            return self._hits, self._misses, len(self._cache)

    def fill_bitmask(self, states: Sequence[GrammarState], bitmask: torch.Tensor) -> None:
        """Write each state's next-token mask into row i of ``bitmask`` (int32 [len(states), mask_words],
        CPU, contiguous; bit ``t % 32`` of word ``t // 32`` set = token ``t`` allowed)."""
        if (bitmask.dtype != torch.int32 or bitmask.device.type != "cpu" or not bitmask.is_contiguous()
                or tuple(bitmask.shape) != (len(states), self.mask_words)):
            raise ValueError(f"bitmask must be a contiguous CPU int32 tensor of shape "
                             f"({len(states)}, {self.mask_words}), got {tuple(bitmask.shape)} {bitmask.dtype}")
        row_bytes = self.mask_words * 4
        if len(states) >= self.parallel_fill_min_rows:
            if self._executor is None:
                self._executor = LLExecutor(self._fill_threads)
            pairs = [(s._matcher, i) for i, s in enumerate(states)]
            self._executor.unsafe_compute_mask_ptr(pairs, bitmask.data_ptr(), row_bytes, len(states))
        else:
            for i, state in enumerate(states):
                state._matcher.unsafe_compute_mask_ptr(bitmask[i].data_ptr(), row_bytes)


class CompiledGrammar:
    """A grammar ready for requests: immutable, shared; :meth:`new_state` starts one output."""

    def __init__(self, compiler: GrammarCompiler, spec: FormatSpec | None, style: JsonStyle | None,
                 template: LLMatcher, compile_seconds: float, *, label: str = "") -> None:
        self.compiler = compiler
        self.spec = spec  # the ``format`` it enforces; None for a Lark grammar
        self.style = style
        self.label = label or (spec.kind if spec is not None else "grammar")
        self.compile_seconds = compile_seconds
        self._template = template

    def new_state(self) -> GrammarState:
        return GrammarState(self)


class GrammarState:
    """One request's position in its grammar. Not thread-safe; the model's worker thread owns it."""

    def __init__(self, compiled: CompiledGrammar) -> None:
        self.compiled = compiled
        self._matcher: LLMatcher = compiled._template.deep_copy()
        self._error: str | None = None

    def fill_mask(self, bitmask_row: torch.Tensor) -> None:
        """Write the next-token mask into one int32 row of ``mask_words`` words (CPU, contiguous)."""
        self.compiled.compiler.fill_bitmask([self], bitmask_row.view(1, -1))

    def allowed_token_ids(self) -> list[int]:
        """The ids allowed next, ascending (for tests and debugging; the engine uses the bitmask)."""
        packed = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        bits = np.unpackbits(packed, bitorder="little")[: self.compiled.compiler.vocab_size]
        ids: list[int] = np.flatnonzero(bits).tolist()
        return ids

    def consume(self, token_id: int) -> None:
        """Advance past a sampled token; :class:`GrammarViolation` if the grammar does not allow it (the
        state then stays in error and only allows end-of-sequence)."""
        if self._matcher.consume_token(int(token_id)):
            return
        detail = (self._matcher.get_error() or "rejected").strip().splitlines()[0]
        self._error = detail
        text = self.compiled.compiler.ll_tokenizer.decode_str([int(token_id)]) if 0 <= token_id < \
            self.compiled.compiler.vocab_size else ""
        raise GrammarViolation(f"token {token_id} ({text!r}) is not allowed by the format grammar: {detail}")

    def is_accepting(self) -> bool:
        """The output so far is a complete value: end-of-sequence is allowed now."""
        return bool(self._matcher.is_accepting())

    def is_finished(self) -> bool:
        """Nothing but end-of-sequence can follow (value complete, end-of-sequence consumed, or error)."""
        return bool(self._matcher.is_stopped())

    @property
    def error(self) -> str | None:
        """Why this state failed (rejected token, llguidance limit), or ``None``."""
        if self._error is None and self._matcher.is_error():
            self._error = (self._matcher.get_error() or "grammar error").strip().splitlines()[0]
        return self._error


def apply_grammar_masks(logits: torch.Tensor, rows: Sequence[tuple[int, GrammarState]]) -> None:
    """Set to ``-inf``, in place, every logit the grammar forbids in the constrained rows of a batch.

    ``logits``: [B, V] with V the compiler's ``vocab_size``, on any device; ``rows``: (batch row, state)
    for each constrained row; other rows are left untouched. All states must come from one compiler.
    """
    if not rows:
        return
    compiler = rows[0][1].compiled.compiler
    if logits.dim() != 2 or logits.shape[1] != compiler.vocab_size:
        raise ValueError(f"logits must be [B, {compiler.vocab_size}], got {list(logits.shape)}")
    states = [state for _, state in rows]
    if any(s.compiled.compiler is not compiler for s in states):
        raise ValueError("all grammar states in one batch must come from the same GrammarCompiler")
    bitmask = compiler.host_bitmask(len(states), pinned=logits.device.type == "cuda")  # [R, W]
    compiler.fill_bitmask(states, bitmask)
    dead = (bitmask == 0).all(dim=1)  # llguidance leaves end-of-sequence open on errors; this is a backstop
    if bool(dead.any()):
        for i in dead.nonzero().flatten().tolist():
            states[i]._error = states[i].error or "no token is allowed by the format grammar"
            for eos in compiler.eos_token_ids:
                bitmask[i, eos // 32] |= _bit(eos % 32)
    allowed = _unpack(bitmask, compiler.vocab_size, logits.device)  # [R, V] bool
    row_ids = [r for r, _ in rows]
    if row_ids == list(range(logits.shape[0])):
        logits.masked_fill_(~allowed, float("-inf"))
        return
    full = torch.ones(logits.shape, dtype=torch.bool, device=logits.device)  # [B, V]
    full[torch.tensor(row_ids, device=logits.device)] = allowed
    logits.masked_fill_(~full, float("-inf"))


def _bit(i: int) -> int:
    """The int32 value with only bit ``i`` set (bit 31 is the sign bit)."""
    return -(1 << 31) if i == 31 else 1 << i


def _unpack(bitmask: torch.Tensor, vocab_size: int, device: torch.device) -> torch.Tensor:
    """[R, W] int32 packed bits -> [R, vocab_size] bool on ``device``."""
    if device.type == "cpu" and sys.byteorder == "little":
        # numpy's unpackbits is ~2x faster than shifting on CPU; little-endian bytes keep the bit order
        bits = np.unpackbits(bitmask.numpy().view(np.uint8), axis=1, bitorder="little")[:, :vocab_size]
        return torch.from_numpy(bits.view(np.bool_))
    return _unpack_shifts(bitmask.to(device, non_blocking=True), vocab_size)


def _unpack_shifts(packed: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The device-side unpack: [R, W] int32 -> [R, vocab_size] bool, on ``packed``'s device."""
    shifts = torch.arange(32, device=packed.device, dtype=torch.int32)
    return ((packed.unsqueeze(-1) >> shifts) & 1).bool().flatten(1)[:, :vocab_size]
