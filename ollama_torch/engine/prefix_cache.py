"""Prefix reuse: the KV cache of finished requests, kept by token sequence, so a chat turn that extends an
earlier conversation only prefills its new tokens. Bounded by bytes, least recently used evicted first.
Entries live in a namespace (the LoRA adapters that computed them): keys and values computed with one
adapter set are never reused by another."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch

MIN_PREFIX = 8
Namespace = tuple[str, ...]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[int, tuple[tuple[int, ...], list[torch.Tensor], list[torch.Tensor], int, Namespace]] = OrderedDict()
        self.bytes = 0
        self._next = 0

    def lookup(self, tokens: Sequence[int], namespace: Namespace = ()) -> tuple[int, list[torch.Tensor], list[torch.Tensor]] | None:
        """The longest cached prefix of ``tokens`` in ``namespace`` (at most ``len(tokens) - 1``: the last
        token is always evaluated, its logits are needed)."""
        best_key, best_len = None, 0
        for key, (cached, _, _, _, space) in self.entries.items():
            if space != namespace:
                continue
            n = min(common_prefix(cached, tokens), len(tokens) - 1)
            if n > best_len:
                best_key, best_len = key, n
        if best_key is None or best_len < MIN_PREFIX:
            return None
        self.entries.move_to_end(best_key)
        _, keys, values, _, _ = self.entries[best_key]
        return best_len, [k[:, :best_len] for k in keys], [v[:, :best_len] for v in values]

    def store(self, tokens: Sequence[int], keys: list[torch.Tensor], values: list[torch.Tensor], namespace: Namespace = ()) -> None:
        if len(tokens) < MIN_PREFIX:
            return
        size = sum(t.numel() * t.element_size() for t in (*keys, *values))
        if size > self.max_bytes:
            return
        key_tokens = tuple(tokens)
        for key in [k for k, e in self.entries.items() if e[4] == namespace and common_prefix(e[0], key_tokens) == len(e[0])]:
            self._drop(key)  # an entry the new one extends is redundant
        self.entries[self._next] = (key_tokens, keys, values, size, namespace)
        self._next += 1
        self.bytes += size
        while self.bytes > self.max_bytes and self.entries:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: int) -> None:
        entry = self.entries.pop(key)
        self.bytes -= entry[3]

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0
