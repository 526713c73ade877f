"""Chunked prefill: a long prompt that arrives while other requests decode is prefilled a bounded number of
tokens per step, between their decode steps, so they keep their pace (one unbounded prefill would stall
every running stream for as long as it takes).

The prompt's keys and values build up in a private Transformers ``DynamicCache`` (seeded with a prefix-cache
hit); once all but its last token are in, the request joins the batch like a prefix-cache hit covering them,
and its last token is prefilled with the next admission group. How many tokens a step may prefill is
:class:`ChunkPlanner`'s: chunks of ``OLLAMA_TORCH_PREFILL_CHUNK`` tokens (256 by default), run when the
decode steps have earned them their time, so the streams' rate drops by about a fifth while the long prompt
is read, on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

CHUNK = 256  # prompt tokens per chunk unless OLLAMA_TORCH_PREFILL_CHUNK says otherwise
SHARE = 0.2  # of the wall time a long prompt may take from the streams decoding beside it
_SMOOTHING = 0.3


class ChunkPlanner:
    """When a chunk may run, and how long: a time share. A chunk costs about as much as a decode step
    whatever its size (each forward reads every weight), so chunks as small as a decode step would halve
    the streams' rate; instead, each decode step earns the long prompt ``SHARE / (1 - SHARE)`` of its
    duration, and a chunk of ``tokens`` runs once the credit covers its measured cost. The streams then
    lose about ``SHARE`` of their rate while the prompt is read, on any machine."""

    def __init__(self, tokens: int = 0) -> None:
        self.tokens = tokens if tokens > 0 else CHUNK
        self.chunk_seconds = 0.0  # measured cost of a chunk (0: not measured yet)
        self.credit = 0.0

    def record_decode(self, seconds: float) -> None:
        # at most one chunk's worth is banked, so a prompt arriving after a long quiet spell gets no burst
        self.credit = min(self.credit + SHARE / (1 - SHARE) * seconds, self.chunk_seconds)

    def may_run(self) -> bool:
        return self.credit >= self.chunk_seconds

    def record_chunk(self, tokens: int, seconds: float) -> None:
        self.credit -= seconds
        if tokens >= self.tokens // 2:  # a short last chunk says little about a full one
            self.chunk_seconds = seconds if self.chunk_seconds == 0.0 else self.chunk_seconds + _SMOOTHING * (seconds - self.chunk_seconds)

    def idle(self) -> None:
        """Nobody is decoding: no credit is owed to anyone."""
        self.credit = 0.0


@dataclass
class PartialPrefill:
    """A prompt being prefilled in chunks: its private cache and how many of its tokens are in it."""

    cache: Any  # transformers.DynamicCache
    done: int = 0

    @classmethod
    def start(cls, config: Any, prefix: tuple[int, list[torch.Tensor], list[torch.Tensor]] | None) -> PartialPrefill:
        from transformers import DynamicCache

        cache = DynamicCache(config=config)
        if prefix is None:
            return cls(cache)
        n, keys, values = prefix
        for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
            cache.update(k[None], v[None], layer)  # [1, kv_heads, n, head_dim]
        return cls(cache, n)

    def prefix(self) -> tuple[int, list[torch.Tensor], list[torch.Tensor]]:
        """What is in the cache, as a prefix-cache hit for the batch's ``load_prefix``."""
        keys = [layer.keys[0] for layer in self.cache.layers]  # [kv_heads, n, head_dim] each
        values = [layer.values[0] for layer in self.cache.layers]
        return self.done, keys, values
