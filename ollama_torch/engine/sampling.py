"""Sampling as small pure functions over one row of logits, in llama.cpp's order (the engine Ollama runs):
penalties -> top_k -> typical_p -> top_p -> min_p -> temperature -> draw.

Each request owns a ``Sampler`` with its own ``torch.Generator``: a seeded request draws the same numbers
whether it runs alone or in a batch, because nothing here depends on the other rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .options import GenerationOptions


def apply_penalties(logits: torch.Tensor, window: Sequence[int], opts: GenerationOptions) -> None:
    """llama.cpp's penalties, in place on ``logits`` [V]: repeat (divide positive logits, multiply negative
    ones), then frequency (per occurrence) and presence (once) over the last ``repeat_last_n`` tokens."""
    if not window:
        return
    ids, counts = torch.tensor(list(window), dtype=torch.long).unique(return_counts=True)
    ids_ok = ids < logits.shape[-1]
    ids, counts = ids[ids_ok], counts[ids_ok]
    selected = logits[ids]
    if opts.repeat_penalty != 1.0:
        selected = torch.where(selected <= 0, selected * opts.repeat_penalty, selected / opts.repeat_penalty)
    if opts.frequency_penalty or opts.presence_penalty:
        selected = selected - counts.to(selected.dtype) * opts.frequency_penalty - opts.presence_penalty
    logits[ids] = selected


def _keep_cumulative(probs_sorted: torch.Tensor, threshold: float) -> int:
    """How many of the (descending) probabilities make up at least ``threshold`` of the mass (min 1)."""
    cum = probs_sorted.cumsum(0)
    return int(torch.searchsorted(cum, torch.tensor([threshold], dtype=cum.dtype)).item()) + 1


def filter_candidates(logits: torch.Tensor, opts: GenerationOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """top_k, typical_p, top_p and min_p over one row; returns (candidate logits, candidate ids), best first."""
    vocab = logits.shape[-1]
    k = opts.top_k if 0 < opts.top_k < vocab else vocab
    values, ids = torch.topk(logits, k) if k < vocab else torch.sort(logits, descending=True)
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        count = max(int(finite.sum().item()), 1)
        values, ids = values[:count], ids[:count]
    if opts.typical_p < 1.0 and values.numel() > 1:
        logp = torch.log_softmax(values, dim=-1)
        p = logp.exp()
        entropy = -(p * logp).sum()
        order = torch.argsort((-logp - entropy).abs())
        keep = min(_keep_cumulative(p[order], opts.typical_p), order.numel())
        chosen = order[:keep].sort().values  # back to best-first order
        values, ids = values[chosen], ids[chosen]
    if opts.top_p < 1.0 and values.numel() > 1:
        p = torch.softmax(values, dim=-1)
        keep = min(_keep_cumulative(p, opts.top_p), values.numel())
        values, ids = values[:keep], ids[:keep]
    if opts.min_p > 0.0 and values.numel() > 1:
        p = torch.softmax(values, dim=-1)
        keep = max(int((p >= opts.min_p * p[0]).sum().item()), 1)
        values, ids = values[:keep], ids[:keep]
    return values, ids


class Sampler:
    """One request's sampling state: its options and its random generator."""

    def __init__(self, opts: GenerationOptions) -> None:
        self.opts = opts
        self.generator = torch.Generator()
        seed = opts.seed if opts.seed >= 0 else int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
        self.generator.manual_seed(seed)

    def sample(self, logits: torch.Tensor, history: Sequence[int]) -> int:
        """Pick the next token from ``logits`` [V] (float32, already grammar-masked)."""
        opts = self.opts
        if opts.has_penalties:
            logits = logits.clone()
            apply_penalties(logits, history[-opts.penalty_window :], opts)
            _keep_finite(logits)  # extreme penalties (1e-40, -1e38) must not turn into inf/NaN
        if opts.greedy:
            return int(torch.argmax(logits).item())
        values, ids = filter_candidates(logits, opts)
        if values.numel() == 1:
            return int(ids[0].item())
        scaled = values / opts.temperature
        if not bool(torch.isfinite(scaled[0])):  # a temperature so small it overflows: the limit is greedy
            return int(ids[0].item())
        probs = torch.softmax(_keep_finite(scaled), dim=-1)
        choice = torch.multinomial(probs, 1, generator=self.generator)
        return int(ids[choice].item())


def _keep_finite(values: torch.Tensor) -> torch.Tensor:
    """In place: NaN and -inf become -inf (never chosen), +inf the largest float (chosen like a maximum)."""
    return torch.nan_to_num_(values, nan=float("-inf"), posinf=torch.finfo(values.dtype).max, neginf=float("-inf"))
