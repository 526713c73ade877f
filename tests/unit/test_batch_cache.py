"""The batch KV cache's bookkeeping under random joins, steps and leaves, checked against a plain model of
what each row must hold (no neural network needed: key/value states are synthetic)."""

from __future__ import annotations

import random

import torch

from ollama_torch.engine.cache import BatchKVCache

LAYERS, HEADS, DIM = 2, 2, 3


def states(rows: int, q: int, tags: list[list[float]]) -> torch.Tensor:
    """Key states whose every entry encodes (row's tag for that position)."""
    out = torch.zeros(rows, HEADS, q, DIM)
    for r in range(rows):
        for j in range(q):
            out[r, :, j, :] = tags[r][j]
    return out


def test_random_joins_steps_and_leaves_keep_every_row_intact() -> None:
    rng = random.Random(0)
    cache = BatchKVCache(LAYERS, max_rows=4, kv_heads=HEADS, head_dim=DIM, dtype=torch.float32, device=torch.device("cpu"), capacity=8)
    expected: list[list[float]] = []  # per active row: the values of its tokens, oldest first
    counter = 0.0
    for _ in range(300):
        if rng.random() < 0.05:  # a long prompt starts being read in chunks: room for it is made early
            cache.make_room(rng.randint(1, 300))
        action = rng.random()
        if action < 0.25 and cache.rows < cache.max_rows:
            lengths = [rng.randint(1, rng.choice((40, 40, 300))) for _ in range(rng.randint(1, cache.max_rows - cache.rows))]
            row0 = cache.reserve_rows(lengths)
            prefix = [rng.randint(0, n - 1) if rng.random() < 0.5 else 0 for n in lengths]
            tags = []
            for n in lengths:
                counter += 1
                tags.append([counter * 1000 + j for j in range(n)])
            for i, (p, t) in enumerate(zip(prefix, tags, strict=True)):
                if p:
                    pk = [torch.tensor(t[:p]).view(1, p, 1).expand(HEADS, p, DIM).clone() for _ in range(LAYERS)]
                    cache.load_prefix(row0 + i, pk, pk)
            qlens = [n - p for n, p in zip(lengths, prefix, strict=True)]
            q = max(qlens)
            positions, _, _ = cache.begin_prefill(row0, qlens)
            block = [[-1.0] * (q - ql) + t[len(t) - ql :] for t, ql in zip(tags, qlens, strict=True)]
            k = states(len(lengths), q, block)
            for layer in range(LAYERS):
                keys, _ = cache._update(layer, k, k)
                assert keys.shape[2] == cache.length - cache.attend_from
            cache.end_step(advance=False)
            for i, n in enumerate(lengths):
                assert positions[i, -1].item() == n - 1
            expected.extend(tags)
        elif action < 0.85 and cache.rows:
            counter += 1
            new = [counter * 1000 + 500 + r for r in range(cache.rows)]
            positions, _, _ = cache.begin_decode()
            for r in range(cache.rows):
                assert positions[r, 0].item() == len(expected[r])
            k = states(cache.rows, 1, [[v] for v in new])
            for layer in range(LAYERS):
                cache._update(layer, k, k)
            cache.end_step(advance=True)
            for r in range(cache.rows):
                expected[r].append(new[r])
        elif cache.rows:
            row = rng.randrange(cache.rows)
            cache.remove_row(row)
            last = expected.pop()
            if row < len(expected):
                expected[row] = last
        for r in range(cache.rows):
            got_k, got_v = cache.extract(r)
            for layer in range(LAYERS):
                assert got_k[layer][0, :, 0].tolist() == expected[r]
                assert got_v[layer][1, :, 2].tolist() == expected[r]


def test_room_made_early_is_there_at_the_join() -> None:
    """``make_room`` does the growing a long prompt's join would do, so the join itself copies nothing,
    even after the rows kept decoding meanwhile."""
    cache = BatchKVCache(LAYERS, max_rows=4, kv_heads=HEADS, head_dim=DIM, dtype=torch.float32, device=torch.device("cpu"), capacity=8)
    cache.reserve_rows([5, 7])
    cache.make_room(500)
    buffers, capacity = cache.keys[0], cache.capacity
    for _ in range(20):
        cache.begin_decode()
        cache.end_step(advance=True)
    row = cache.reserve_rows([500])
    assert cache.keys[0] is buffers and cache.capacity == capacity and row == 2
    assert cache.length - cache.starts[row] == 500


def test_a_static_steps_inputs_are_each_rows_positions_column_and_mask() -> None:
    """``begin_static_decode`` (the compiled step's inputs, built on the host for a float32 CPU cache): per row its
    position, the written column, and an additive mask open from the row's first column through the written one
    and closed (float32's lowest) elsewhere in the window; the same for a bfloat16 cache (built with torch ops, its
    own lowest), whatever the rows' prompts."""
    rng = random.Random(0)
    for dtype in (torch.float32, torch.bfloat16):
        cache = BatchKVCache(LAYERS, max_rows=6, kv_heads=HEADS, head_dim=DIM, dtype=dtype, device=torch.device("cpu"))
        for prompts in ([3], [5, 1, 40], [300, 2], [7] * 6):
            while cache.rows:
                cache.remove_row(cache.rows - 1)
            cache.reserve_rows(prompts)
            for _ in range(rng.randrange(3)):
                cache.begin_decode()
                cache.end_step(advance=True)
            positions, column, mask = cache.begin_static_decode()
            length, window = cache.length, cache.static_window()
            cache.end_step(advance=True)
            assert column.tolist() == [length] and positions.dtype == column.dtype == torch.long
            assert positions.tolist() == [[length - start] for start in cache.starts]
            assert mask.shape == (len(prompts), 1, 1, window) and mask.dtype == dtype and mask.is_contiguous()
            cols = torch.arange(window)
            for r, start in enumerate(cache.starts):
                open_ = (cols >= start) & (cols <= length)
                assert bool((mask[r, 0, 0][open_] == 0).all())
                assert bool((mask[r, 0, 0][~open_] == torch.finfo(dtype).min).all())
