"""Compiled decode steps (``OLLAMA_TORCH_COMPILE``): one token for rows ``[0, B)`` of the batch KV cache,
with static shapes, through ``torch.compile``.

The eager decode step reads only the cache's live columns, so its shapes change every step; the compiled
step attends over a window of the cache's buffers (``[B, kv_heads, window, head_dim]`` per layer, the
window a power of two past the written column) and hides the columns that are not a row's with the
additive mask, writes the step's keys and values with ``index_copy_`` at the one column every row writes
(the cache is right-aligned: see ``cache.py``), and takes the column and the positions as tensors, so
nothing in the graph depends on the step. The window is a dynamic dimension: one graph serves every width.
The batch size is static: each bucket (a row count the step is compiled for) is its own graph, and a batch
between buckets runs eager.

Where the compile pays (measured, BENCHMARKS.md): on a CPU, one row (inductor turns a step's ~1,200
small ops into fused C++ loops); at 8 rows the eager step with MKL-packed weights is faster than any
compiled one, so CPU buckets are ``(1,)``. On CUDA every power of two up to the batch, captured as CUDA
graphs (``mode="reduce-overhead"``), where a small model's step is all launch overhead.

Inductor keeps what it compiles in its cache directory (``TORCHINDUCTOR_CACHE_DIR``), which the server
points next to the model store (``<models>/compiled``): its keys cover the graph, the device, the dtype
and the torch version, so a second load of the same architecture, in this process or after a restart,
reuses the kernels and only retraces the model. Greedy tokens equal the eager step's (tests).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .cache import BatchKVCache

log = logging.getLogger(__name__)


def use_cache_dir(path: Path) -> str:
    """Point inductor's on-disk cache at ``path``, unless ``TORCHINDUCTOR_CACHE_DIR`` names another directory
    than inductor's default (which inductor itself writes into the environment once it has looked); returns
    the directory in effect."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        path.mkdir(parents=True, exist_ok=True)
        current = os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path.absolute())
    return current


class _ColumnLayer(CacheLayerMixin):
    is_sliding = False
    is_compileable = True

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, column: torch.Tensor) -> None:
        super().__init__()
        self.buffers, self.column = (keys, values), column
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.buffers
        keys.index_copy_(2, self.column, key_states)
        values.index_copy_(2, self.column, value_states)
        return keys, values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.buffers[0].shape[2], 0

    def get_seq_length(self) -> int:
        return 0

    def get_max_length(self) -> int:
        return -1


class _ColumnCache(Cache):
    """The step's view of the batch cache: whole buffers, one column written."""

    def __init__(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], column: torch.Tensor) -> None:
        super().__init__(layers=[_ColumnLayer(k, v, column) for k, v in zip(keys, values, strict=True)])


def buckets_for(device: torch.device, max_rows: int) -> tuple[int, ...]:
    """The row counts to compile for on ``device`` (see the module's docstring)."""
    if device.type == "cuda":
        sizes, b = [], 1
        while b < max_rows:
            sizes.append(b)
            b *= 2
        return (*sizes, max_rows)
    return (1,)


class CompiledDecode:
    """The compiled one-token step of a loaded model over its batch cache, per bucket."""

    def __init__(self, model: Any, device: torch.device, buckets: Sequence[int]) -> None:
        self.model = model
        self.device = device
        self.buckets = frozenset(buckets)
        mode = "reduce-overhead" if device.type == "cuda" else "default"
        # Every model's graphs hang off the one ``_forward`` code object (a model of an architecture already
        # compiled reuses its graph: its weights are inputs); leave room for several models' buckets.
        self._step: Callable[..., torch.Tensor] = torch.compile(  # type: ignore[call-overload]  # (its stubs lack recompile_limit)
            self._forward, mode=mode, fullgraph=True, recompile_limit=64)
        self.threads = torch.get_num_threads()  # what the kernels are compiled for (set by ``warm_up``)
        self._marked: dict[tuple[int, int, int], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, column: torch.Tensor,
                 keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
        out = self.model(
            input_ids=ids, position_ids=positions, attention_mask=mask,
            past_key_values=_ColumnCache(keys, values, column), cache_position=column, use_cache=True,
        )
        return out.logits[:, -1, :]

    def handles(self, rows: int) -> bool:
        return rows in self.buckets

    def _views(self, cache: BatchKVCache, rows: int, width: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Rows ``[0, rows)`` and columns ``[0, width)`` of every layer's buffers, made once per buffer set and
        width, the width marked dynamic."""
        key = (rows, width, id(cache.keys[0]))
        views = self._marked.get(key)
        if views is None:
            self._marked = {k: v for k, v in self._marked.items() if k[0] != rows}  # not kept alive
            keys = [t[:rows, :, :width] for t in cache.keys]
            values = [t[:rows, :, :width] for t in cache.values]
            for t in (*keys, *values):
                torch._dynamo.mark_dynamic(t, 2)
                if t.is_cuda:  # CUDA graphs may then write them in place instead of copying them in and out
                    torch._dynamo.mark_static_address(t)
            views = self._marked[key] = (keys, values)
        return views

    def step(self, cache: BatchKVCache, ids: torch.Tensor) -> torch.Tensor:
        """One decode step of rows ``[0, cache.rows)`` (``ids`` [rows, 1]); advances the cache, returns the
        last position's logits [rows, V]."""
        rows = cache.rows
        if torch.get_num_threads() != self.threads:  # inductor's CPU kernels are compiled for a thread count
            torch.set_num_threads(self.threads)
        positions, column, mask = cache.begin_static_decode()
        torch._dynamo.mark_dynamic(mask, 3)
        keys, values = self._views(cache, rows, mask.shape[-1])
        try:
            logits = self._step(ids, positions, mask, column, keys, values)
        except BaseException:
            cache.end_step(advance=False)  # the eager step that takes over writes the same column
            raise
        cache.end_step(advance=True)
        return logits.clone() if logits.is_cuda else logits  # a CUDA graph's output is overwritten by its next replay

    def warm_up(self, cache: BatchKVCache, token: int) -> float:
        """Compile every bucket now (a load pays it, not the first request) on ``cache``, a scratch cache of
        the batch's shape made under ``torch.inference_mode`` as the worker's is (dynamo guards on it), for
        the calling thread's intra-op thread count; returns the seconds it took. (On CUDA, graphs are
        recorded per thread: the worker's thread records its own at its first steps.)"""
        started = time.perf_counter()
        self.threads = torch.get_num_threads()
        for rows in sorted(self.buckets):
            cache.reserve_rows([1] * rows)
            ids = torch.full((rows, 1), token, dtype=torch.long, device=self.device)
            for _ in range(2 if self.device.type == "cuda" else 1):  # CUDA graphs record on the second call
                self.step(cache, ids)
            for row in reversed(range(rows)):
                cache.remove_row(row)
        self._marked.clear()  # the scratch cache's views: not kept alive
        return time.perf_counter() - started
