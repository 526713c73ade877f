"""From token ids to the text a client sees: incremental detokenization and stop strings.

``Detokenizer`` emits text only once it is final (no half UTF-8 sequence, no word-piece whose leading space
depends on the next token), decoding a short sliding window rather than the whole output each step.
``StopMatcher`` holds back any tail that could still grow into a stop string, so a stop string split across
tokens is never emitted, and cuts the output at the first complete one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLACEMENT = "\ufffd"


class Detokenizer:
    def __init__(self, tokenizer: Any, context: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        # A few prompt tokens give the first generated token its left context (e.g. SentencePiece spaces).
        self.tokens: list[int] = list(context[-4:])
        self.prefix_offset = 0
        self.read_offset = len(self.tokens)

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def push(self, token: int) -> str:
        self.tokens.append(token)
        prefix = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        full = self._decode(self.tokens[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(REPLACEMENT):
            new = full[len(prefix) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.tokens)
            return new
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end of generation (e.g. a dangling partial character)."""
        prefix = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        full = self._decode(self.tokens[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.tokens)
        # A character cut off by the end of generation (its last bytes were never sampled) is dropped
        # rather than sent as U+FFFD.
        return full[len(prefix) :].rstrip(REPLACEMENT) if len(full) > len(prefix) else ""


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False
        self.matched = ""  # the stop string the output was cut at (Anthropic's ``stop_sequence``)

    def push(self, text: str) -> str:
        """Add generated text; return what can be emitted now. Sets ``stopped`` at a stop string."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buf = self.pending + text
        hit = self._first_hit(buf)
        start = len(buf) - self._partial_suffix(buf)  # where a stop string may still be completing
        # The earliest complete stop in the whole text wins, however the text was split into tokens: one that
        # starts before it and may still complete ("<><" in "<<>" with stops ">" and "<><") is waited for.
        if hit is not None and hit <= start:
            self._stop_at(buf, hit)
            self.pending = ""
            return buf[:hit]
        self.pending = buf[start:]
        return buf[:start]

    def _first_hit(self, buf: str) -> int | None:
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def _stop_at(self, buf: str, hit: int) -> None:
        """Stop at ``hit``; of the stop strings that start there, the longest is the one that matched (a
        shorter one that is its prefix matched too, but the longer one names what the model wrote)."""
        self.stopped = True
        self.matched = max((s for s in self.stops if buf.startswith(s, hit)), key=len)

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest tail of ``buf`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best

    def flush(self) -> str:
        """At the end of generation: what is held back, cut at a stop it holds (it may, behind a partial one)."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        hit = self._first_hit(out)
        if hit is not None:
            self._stop_at(out, hit)
            out = out[:hit]
        return out
