"""The running batch's KV cache: one buffer per layer, rows = requests, columns = time.

Layout: ``keys[layer]`` is ``[max_rows, kv_heads, capacity, head_dim]``. Active rows are kept packed in
``[0, rows)`` (a leaving row is replaced by the last one, so joining and leaving copy one row, never the
batch). All rows are right-aligned: every row's newest token sits in column ``length - 1``, so one decode
step writes one column for the whole batch and each row starts at its own ``start`` column. Positions for
RoPE are ``column - start``; the attention mask hides columns left of a row's start.

A request joins by being prefilled straight into a free row (``prefill_rows``), at columns
``[length - prompt_len, length)``; prompts longer than the history to their left shift the buffer right
once (with a margin so this stays rare). Capacity doubles when full. The model sees this through the
Transformers ``Cache`` interface: ``update`` writes the step's keys/values and returns views of the live
columns, so no per-step concatenation copies the history (as ``DynamicCache`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers.cache_utils import Cache, CacheLayerMixin

LEFT_MARGIN = 64


class _Layer(CacheLayerMixin):
    is_sliding = False
    is_compileable = False

    def __init__(self, owner: BatchKVCache, index: int) -> None:
        super().__init__()
        self.owner = owner
        self.index = index

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        return self.owner._update(self.index, key_states, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(kv_length, kv_offset) of what ``update`` returns, for when Transformers builds the mask itself."""
        step = self.owner._step
        end = step.write_to if step is not None else self.owner.length + query_length
        return end - self.owner.attend_from, self.owner.attend_from

    def get_seq_length(self) -> int:
        return self.owner.length

    def get_max_length(self) -> int:
        return -1


@dataclass
class _Step:
    """Which rows and columns the forward pass in progress reads and writes."""

    row0: int
    row1: int
    write_from: int  # first column written by this step
    write_to: int
    valid: torch.Tensor | None = None  # [rows, 1, q, 1] bool: which written columns are real (prefill only)


class BatchKVCache(Cache):
    """``device`` holds the step's small tensors (positions, masks); each layer's buffers live on that
    layer's device (``layer_devices``, for a model spread over GPUs by an accelerate device map)."""

    def __init__(
        self, num_layers: int, max_rows: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device,
        capacity: int = 256, layer_devices: Sequence[torch.device] | None = None,
    ) -> None:
        super().__init__(layers=[_Layer(self, i) for i in range(num_layers)])
        self.max_rows = max_rows
        self.shape = (kv_heads, head_dim)
        self.dtype, self.device = dtype, device
        self.layer_devices = list(layer_devices) if layer_devices is not None else [device] * num_layers
        if len(self.layer_devices) != num_layers:
            raise ValueError(f"`layer_devices` must name {num_layers} devices, got {len(self.layer_devices)}")
        self.capacity = max(capacity, 2 * LEFT_MARGIN)
        self.keys = [self._alloc(self.capacity, d) for d in self.layer_devices]
        self.values = [self._alloc(self.capacity, d) for d in self.layer_devices]
        self.rows = 0
        self.length = LEFT_MARGIN  # columns in use; data ends at length - 1
        self.starts: list[int] = []  # per active row: first column of its tokens
        self.attend_from = LEFT_MARGIN
        self._step: _Step | None = None

    def _alloc(self, capacity: int, device: torch.device) -> torch.Tensor:
        return torch.zeros((self.max_rows, self.shape[0], capacity, self.shape[1]), dtype=self.dtype, device=device)

    # -- geometry ------------------------------------------------------------------------------------
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def _ensure_capacity(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        new_cap = self.capacity
        while new_cap < needed:
            new_cap *= 2
        used = min(self.length, self.capacity)
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                new = self._alloc(new_cap, old.device)
                new[:, :, :used].copy_(old[:, :, :used])
                store[i] = new
        self.capacity = new_cap

    def _shift_right(self, by: int) -> None:
        """Move every row's data ``by`` columns right (to make room on the left for a longer prompt)."""
        self._ensure_capacity(self.length + by)
        lo = min(self.starts) if self.starts else self.length
        for store in (self.keys, self.values):
            for t in store:
                t[: self.rows, :, lo + by : self.length + by] = t[: self.rows, :, lo : self.length].clone()
        self.starts = [s + by for s in self.starts]
        self.length += by

    def _compact_left(self) -> None:
        """Drop dead columns left of the oldest row when they make up most of the buffer."""
        lo = min(self.starts) if self.starts else self.length
        dead = lo - LEFT_MARGIN
        if dead <= 0 or dead < self.capacity // 2:
            return
        for store in (self.keys, self.values):
            for t in store:
                t[: self.rows, :, LEFT_MARGIN : self.length - dead] = t[: self.rows, :, lo : self.length].clone()
        self.starts = [s - dead for s in self.starts]
        self.length -= dead

    # -- rows ------------------------------------------------------------------------------------------
    def reserve_rows(self, prompt_lengths: list[int]) -> int:
        """Make room for new rows whose prompts have the given lengths; return their first row index.
        Their tokens will occupy columns ``[length - n, length)``."""
        if self.rows + len(prompt_lengths) > self.max_rows:
            raise RuntimeError("no free rows in the batch")
        if self.rows == 0:
            self.length = LEFT_MARGIN
            self.starts = []
        longest = max(prompt_lengths)
        room = self.length - LEFT_MARGIN if self.rows else 0
        if self.rows and longest > self.length:
            self._shift_right(longest - self.length + LEFT_MARGIN)
        elif not self.rows and longest > room:
            self.length = LEFT_MARGIN + longest
        self._ensure_capacity(self.length + 1)
        first = self.rows
        self.starts.extend(self.length - n for n in prompt_lengths)
        self.rows += len(prompt_lengths)
        return first

    def make_room(self, prompt_length: int) -> None:
        """Grow now for a row whose prompt has ``prompt_length`` tokens and joins later (a long prompt read in
        chunks): the shift and the larger buffer ``reserve_rows`` would need then are made at once, by the
        caller's choice of moment, so the join is not one long stall for every running row (growing the
        buffer copies and zeroes every row's keys and values: 0.4 s for 8 rows of SmolLM2 at 4,096 columns).
        Decode steps in between use the new room; a compaction may take the shift back (it is cheap), the
        capacity stays."""
        if self.rows and prompt_length > self.length:
            self._shift_right(prompt_length - self.length + LEFT_MARGIN)
        self._ensure_capacity(max(self.length, LEFT_MARGIN + prompt_length) + LEFT_MARGIN)

    def load_prefix(self, row: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Copy a cached prefix ([kv_heads, n, head_dim] per layer) into the start of ``row``."""
        start = self.starts[row]
        n = keys[0].shape[-2]
        for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
            self.keys[layer][row, :, start : start + n].copy_(k)
            self.values[layer][row, :, start : start + n].copy_(v)

    def extract(self, row: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Copies of one row's keys/values (its whole history), e.g. for the prefix cache."""
        start = self.starts[row]
        keys = [t[row, :, start : self.length].clone() for t in self.keys]
        values = [t[row, :, start : self.length].clone() for t in self.values]
        return keys, values

    def remove_row(self, row: int) -> None:
        """Drop ``row``; the last active row moves into its place (callers re-index it)."""
        last = self.rows - 1
        if row != last:
            lo = min(self.starts[row], self.starts[last])
            for store in (self.keys, self.values):
                for t in store:
                    t[row, :, lo : self.length].copy_(t[last, :, lo : self.length])
            self.starts[row] = self.starts[last]
        self.starts.pop()
        self.rows -= 1
        if self.rows == 0:
            self.length = LEFT_MARGIN
        else:
            self._compact_left()

    # -- forward passes --------------------------------------------------------------------------------
    def begin_decode(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Set up a one-token step for rows ``[0, rows)``; returns (position_ids, 4D mask or None, cache_position)."""
        self._ensure_capacity(self.length + 1)
        lo = min(self.starts)
        self.attend_from = lo
        self._step = _Step(0, self.rows, self.length, self.length + 1)
        starts = torch.tensor(self.starts, device=self.device)
        positions = (self.length - starts).unsqueeze(1)  # [B, 1]
        mask = None
        if any(s != lo for s in self.starts):
            cols = torch.arange(lo, self.length + 1, device=self.device)
            allowed = cols.unsqueeze(0) >= starts.unsqueeze(1)  # [B, kv]
            mask = _additive(allowed[:, None, None, :], self.dtype)
        return positions, mask, torch.tensor([self.length], device=self.device)

    def static_window(self) -> int:
        """Columns ``[0, window)`` a ``begin_static_decode`` step reads: a power of two past the written column
        (at least 256). Not the whole capacity, which never shrinks: one long request long gone would make
        every later step read thousands of empty columns."""
        needed = max(self.length + 1, 256)
        return min(self.capacity, 1 << (needed - 1).bit_length())

    def begin_static_decode(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Set up a one-token step for rows ``[0, rows)`` that reads columns ``[0, static_window())`` (a compiled
        step: see compiled.py); returns (position_ids [rows, 1], the written column [1], the additive mask
        [rows, 1, 1, window]: each row sees its own columns up to and including the one being written)."""
        self._ensure_capacity(self.length + 1)
        self._step = _Step(0, self.rows, self.length, self.length + 1)
        column = torch.tensor([self.length], device=self.device)
        if self.device.type == "cpu" and self.dtype == torch.float32:  # in numpy: as a dozen torch ops, 70 us a step
            host_starts = np.asarray(self.starts, dtype=np.int64)
            host_cols = np.arange(self.static_window())
            open_ = (host_cols >= host_starts[:, None]) & (host_cols <= self.length)
            mask = np.where(open_, np.float32(0.0), np.finfo(np.float32).min).astype(np.float32, copy=False)
            return (torch.from_numpy((self.length - host_starts)[:, None].copy()), column,
                    torch.from_numpy(mask.reshape(self.rows, 1, 1, -1)))
        starts = torch.tensor(self.starts, device=self.device)
        cols = torch.arange(self.static_window(), device=self.device)
        allowed = (cols.unsqueeze(0) >= starts.unsqueeze(1)) & (cols <= self.length).unsqueeze(0)
        positions = (self.length - starts).unsqueeze(1)
        return positions, column, _additive(allowed[:, None, None, :], self.dtype)

    def begin_prefill(self, row0: int, query_lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Set up a prefill of rows ``[row0, row0 + n)`` whose last ``query_lengths[i]`` tokens are new.

        The query block is right-aligned at ``length``; shorter rows have pad queries on the left, whose
        keys/values are not written (so a cached prefix below them survives)."""
        q = max(query_lengths)
        rows = len(query_lengths)
        row_starts = self.starts[row0 : row0 + rows]
        lo = min(row_starts)
        self.attend_from = lo
        starts = torch.tensor(row_starts, device=self.device)
        qcols = torch.arange(self.length - q, self.length, device=self.device)  # [q]
        kcols = torch.arange(lo, self.length, device=self.device)  # [kv]
        positions = (qcols.unsqueeze(0) - starts.unsqueeze(1)).clamp(min=0)  # [rows, q]
        qlen = torch.tensor(query_lengths, device=self.device)
        real_q = qcols.unsqueeze(0) >= (self.length - qlen).unsqueeze(1)  # [rows, q]
        allowed = (kcols[None, None, :] >= starts[:, None, None]) & (kcols[None, None, :] <= qcols[None, :, None])
        allowed = allowed | ~real_q[:, :, None]  # pad queries attend to anything: their output is unused
        needs_mask = rows > 1 or lo != self.length - q or any(n != q for n in query_lengths)
        mask = _additive(allowed[:, None, :, :], self.dtype) if needs_mask else None
        valid = None if all(n == q for n in query_lengths) else real_q[:, None, :, None]
        self._step = _Step(row0, row0 + rows, self.length - q, self.length, valid)
        return positions, mask, qcols

    def end_step(self, advance: bool) -> None:
        """Finish a forward pass; a decode step makes the written column part of every row."""
        if advance:
            self.length += 1
        self._step = None

    def _update(self, layer: int, key_states: torch.Tensor, value_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step = self._step
        if step is None:
            raise RuntimeError("KV cache used outside a step")
        k_buf, v_buf = self.keys[layer], self.values[layer]
        rows = slice(step.row0, step.row1)
        cols = slice(step.write_from, step.write_to)
        if step.valid is None:
            k_buf[rows, :, cols] = key_states
            v_buf[rows, :, cols] = value_states
        else:
            valid = step.valid if step.valid.device == k_buf.device else step.valid.to(k_buf.device, non_blocking=True)
            k_buf[rows, :, cols] = torch.where(valid, key_states, k_buf[rows, :, cols])
            v_buf[rows, :, cols] = torch.where(valid, value_states, v_buf[rows, :, cols])
        live = slice(self.attend_from, step.write_to)
        return k_buf[rows, :, live], v_buf[rows, :, live]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)
