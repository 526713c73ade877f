"""Sampling for a whole batch in one pass on the logits' device, in llama.cpp's order (the engine Ollama
runs): penalties -> top_k -> typical_p -> top_p -> min_p -> temperature -> draw.

The filters are small pure functions over ``[B, K]`` tensors with one parameter per row as a ``[B]`` tensor
(mlx-lm's ``make_sampler`` pieces, batched). A filter never changes the order of the candidates: it sets the
ones it drops to ``-inf``, so the candidates stay best-first and a row's result never depends on another row.

:class:`BatchSampler` holds the sampling state of a model's running batch, one slot per batch row: the
parameters as device tensors, the penalty counts (token -> occurrences in the row's last ``repeat_last_n``
tokens: a ``Counter`` per row on the host, updated per accepted token, from which a step sends the ``[rows, W]``
ids and counts of the tokens in the windows; the penalties touch those ``W`` logits of a row, not its whole
vocabulary) and the random generators. A seeded row draws from its own generator on the logits' device, one uniform number per
step, so it samples the same text alone or in any batch; unseeded rows share one generator and one draw.
Nothing here reads a device value on the host: the caller syncs once per step, on the chosen ids.

Rows are grouped by their candidate width (``top_k``), greedy rows apart, so that a row's arithmetic has the
same shapes whatever else is in the batch (reductions over a wider padded row could round differently and
break the seeded guarantee). Requests share Ollama's default ``top_k``, so a step is one group.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .options import GenerationOptions

NEG_INF = float("-inf")


# -- the filters: pure functions over one batch of rows ------------------------------------------------------
def apply_penalties(
    logits: torch.Tensor, ids: torch.Tensor, counts: torch.Tensor, repeat: torch.Tensor, frequency: torch.Tensor,
    presence: torch.Tensor,
) -> torch.Tensor:
    """llama.cpp's penalties, in place, over ``logits`` [B, V] at ``ids`` [B, W] (the tokens in each row's window,
    each once) with ``counts`` [B, W] (their occurrences; 0 for padding, which must name a token of the row that is
    not in its window): repeat (divide positive logits, multiply negative ones), then frequency (per occurrence)
    and presence (once) for every token that occurred. Rows with repeat 1 and no frequency/presence penalty are
    unchanged. Extreme penalties (1e-40, -1e38) must not turn into inf/NaN: NaN and -inf become -inf, +inf the
    largest float. Returns ``logits``."""
    values = logits.gather(1, ids)  # [B, W]
    counts = counts.to(logits.dtype)
    present = counts > 0
    repeat, frequency, presence = repeat[:, None], frequency[:, None], presence[:, None]
    penalized = torch.where(values <= 0, values * repeat, values / repeat)
    out = torch.where(present, penalized, values) - counts * frequency - present.to(logits.dtype) * presence
    # a padding id appears several times in a row, each time with its own unchanged value: the same value whichever
    # write lands last
    return logits.scatter_(1, ids, keep_finite(out))


def top_k_candidates(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best logits of each row of ``logits`` [B, V], best first: (values [B, k], ids [B, k])."""
    if k >= logits.shape[-1]:
        return torch.sort(logits, dim=-1, descending=True)
    return torch.topk(logits, k, dim=-1)


def _keep_mass(probs: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Which of the ``probs`` [B, K] (in the order they are to be taken) make up at least ``threshold`` [B]
    of the mass: every entry whose predecessors hold less than it (so the first always stays)."""
    cum = probs.cumsum(dim=-1)
    before = torch.cat([torch.zeros_like(cum[:, :1]), cum[:, :-1]], dim=-1)
    return before < threshold[:, None]


def apply_typical_p(values: torch.Tensor, typical_p: torch.Tensor) -> torch.Tensor:
    """Locally typical sampling over candidates ``values`` [B, K]: keep the tokens whose surprise is closest
    to the row's entropy until they hold ``typical_p`` of the mass. Rows with ``typical_p`` 1 are unchanged."""
    logp = torch.log_softmax(values, dim=-1)
    p = logp.exp()
    entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1, keepdim=True)  # [B, 1]
    order = torch.argsort((-logp - entropy).abs(), dim=-1, stable=True)  # most typical first
    keep_sorted = _keep_mass(p.gather(-1, order), typical_p)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    keep |= (typical_p >= 1.0)[:, None]
    return values.masked_fill(~keep, NEG_INF)


def apply_top_p(values: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Nucleus sampling over best-first candidates ``values`` [B, K]: the fewest best tokens holding at
    least ``top_p`` of the mass. Rows with ``top_p`` 1 are unchanged."""
    keep = _keep_mass(torch.softmax(values, dim=-1), top_p) | (top_p >= 1.0)[:, None]
    return values.masked_fill(~keep, NEG_INF)


def apply_min_p(values: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop candidates less likely than ``min_p`` [B] times the row's most likely one (0 keeps all)."""
    p = torch.softmax(values, dim=-1)
    keep = p >= min_p[:, None] * p.amax(dim=-1, keepdim=True)
    return values.masked_fill(~keep, NEG_INF)


def scale_temperature(values: torch.Tensor, temperature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``values / temperature`` per row, and which rows overflowed (a temperature so small that the best
    candidate became infinite: the limit is greedy)."""
    scaled = values / temperature[:, None]
    overflow = ~torch.isfinite(scaled.amax(dim=-1))
    return keep_finite(scaled), overflow


def draw(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: per row, the first candidate whose cumulative probability reaches ``uniforms`` [B]
    (in (0, 1]) of the row's mass. One random number per row, whatever the candidates, and no host sync
    (as gpt-fast's ``multinomial_sample_one_no_sync``, but with one number per row instead of one per token).
    Returns positions [B] into the candidates; a zero-probability candidate is never chosen."""
    cum = probs.cumsum(dim=-1)  # [B, K]
    target = uniforms[:, None].to(cum.dtype) * cum[:, -1:]
    return (cum < target).sum(dim=-1).clamp_(max=probs.shape[-1] - 1)


def keep_finite(values: torch.Tensor) -> torch.Tensor:
    """NaN and -inf become -inf (never chosen), +inf the largest float (chosen like a maximum)."""
    return torch.nan_to_num(values, nan=NEG_INF, posinf=torch.finfo(values.dtype).max, neginf=NEG_INF)


def sample_candidates(
    logits: torch.Tensor, k: int, top_p: torch.Tensor, min_p: torch.Tensor, typical_p: torch.Tensor,
    temperature: torch.Tensor, uniforms: torch.Tensor, *, filters: tuple[bool, bool, bool] = (True, True, True),
) -> torch.Tensor:
    """top_k -> typical_p -> top_p -> min_p -> temperature -> draw over ``logits`` [B, V] (already masked and
    penalized), all rows sampled; returns the chosen token ids [B]. ``filters`` (typical, top_p, min_p) lets
    the caller skip a filter no row uses (each is the identity for such rows anyway)."""
    values, ids = top_k_candidates(logits, k)  # [B, k]
    use_typical, use_top_p, use_min_p = filters
    if use_typical:
        values = apply_typical_p(values, typical_p)
    if use_top_p:
        values = apply_top_p(values, top_p)
    if use_min_p:
        values = apply_min_p(values, min_p)
    scaled, overflow = scale_temperature(values, temperature)
    position = draw(torch.softmax(scaled, dim=-1), uniforms)
    position = torch.where(overflow, values.argmax(dim=-1), position)
    return ids.gather(-1, position[:, None]).squeeze(-1)


# -- the batch's state ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowSampling:
    """One request's sampling parameters, as the batch sampler reads them."""

    temperature: float
    top_k: int
    top_p: float
    min_p: float
    typical_p: float
    repeat_penalty: float
    frequency_penalty: float
    presence_penalty: float
    penalty_window: int  # tokens the penalties look back over; 0 = none
    seed: int  # -1 = random

    @classmethod
    def of(cls, opts: GenerationOptions) -> RowSampling:
        return cls(
            temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p, min_p=opts.min_p,
            typical_p=opts.typical_p, repeat_penalty=opts.repeat_penalty, frequency_penalty=opts.frequency_penalty,
            presence_penalty=opts.presence_penalty, penalty_window=opts.penalty_window if opts.has_penalties else 0,
            seed=opts.seed,
        )

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


_FLOAT_PARAMS = ("temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "frequency_penalty", "presence_penalty")


class BatchSampler:
    """Sampling state for up to ``max_rows`` batch rows of a model whose logits are ``vocab`` wide, on
    ``device``. Rows are slots: :meth:`admit` fills one, :meth:`move` follows the worker when the last row
    takes a freed row's place, :meth:`accept` records the tokens each row took.

    Owned by one worker thread; not thread-safe.
    """

    def __init__(self, max_rows: int, vocab: int, device: torch.device) -> None:
        self.max_rows, self.vocab, self.device = max_rows, vocab, device
        self.rows: list[RowSampling | None] = [None] * max_rows
        self.generators: list[torch.Generator | None] = [None] * max_rows
        self.params = torch.ones((len(_FLOAT_PARAMS), max_rows), dtype=torch.float32, device=device)  # [P, R]
        self.windows: list[Counter[int] | None] = [None] * max_rows  # penalized rows: token -> occurrences
        self.shared = torch.Generator(device=device)
        self.shared.manual_seed(_random_seed())

    # -- slots ----------------------------------------------------------------------------------------------
    def admit(self, row: int, sampling: RowSampling, history: Sequence[int]) -> None:
        """Row ``row`` starts sampling with ``sampling``; ``history`` is its tokens so far (prompt included),
        whose last ``penalty_window`` fill the penalty counts."""
        self.rows[row] = sampling
        generator = None
        if sampling.seed >= 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(sampling.seed)
        self.generators[row] = generator
        values = torch.tensor([getattr(sampling, name) for name in _FLOAT_PARAMS], dtype=torch.float32)
        self.params[:, row] = values.to(self.device)
        self.windows[row] = None
        if sampling.penalty_window > 0:
            self.windows[row] = Counter(t for t in history[len(history) - sampling.penalty_window :] if 0 <= t < self.vocab)

    def move(self, src: int, dst: int) -> None:
        """Row ``src``'s state now belongs to row ``dst`` (the worker moved its last row into a freed one)."""
        self.rows[dst], self.generators[dst] = self.rows[src], self.generators[src]
        self.rows[src] = self.generators[src] = None
        self.params[:, dst] = self.params[:, src]
        self.windows[dst], self.windows[src] = self.windows[src], None

    def release(self, row: int) -> None:
        self.rows[row] = self.generators[row] = None
        self.windows[row] = None

    def accept(self, rows: Sequence[int], tokens: Sequence[int], histories: Sequence[Sequence[int]]) -> None:
        """Each of ``rows`` took ``tokens`` after ``histories`` (its tokens before this one): count the new
        token, and stop counting the one that left its penalty window."""
        for row, token, history in zip(rows, tokens, histories, strict=True):
            sampling, counts = self.rows[row], self.windows[row]
            if sampling is None or counts is None:
                continue
            window = sampling.penalty_window
            leaving = history[len(history) - window] if len(history) >= window else -1
            if 0 <= token < self.vocab:
                counts[token] += 1
            if 0 <= leaving < self.vocab:
                counts[leaving] -= 1
                if counts[leaving] <= 0:
                    del counts[leaving]

    # -- one step ------------------------------------------------------------------------------------------
    def sample(self, rows: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        """The next token of each of ``rows`` from ``logits`` [len(rows), V] (grammar-masked; modified in
        place by penalties). Returns ids [len(rows)] on the logits' device; nothing is read back here."""
        n = len(rows)
        slots = [self._row(r) for r in rows]
        select = _selector(rows, self.device)
        params = self.params[:, select]  # [P, n]
        temperature, top_p, min_p, typical_p, repeat, frequency, presence = params.unbind(0)
        windows = [self.windows[r] for r in rows]
        if any(windows):
            ids, counts = self._window_tensors(windows, logits.device)
            logits = apply_penalties(logits, ids, counts, repeat, frequency, presence)
        chosen = torch.empty(n, dtype=torch.long, device=logits.device)
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(slots):
            width = 0 if s.greedy else (s.top_k if 0 < s.top_k < logits.shape[-1] else logits.shape[-1])
            groups.setdefault(width, []).append(i)
        for width, members in groups.items():
            at = _selector(members, logits.device)
            if width == 0:
                chosen[at] = logits[at].argmax(dim=-1)
                continue
            group = [slots[i] for i in members]
            filters = (any(s.typical_p < 1.0 for s in group), any(s.top_p < 1.0 for s in group),
                       any(s.min_p > 0.0 for s in group))
            uniforms = self._uniforms([rows[i] for i in members], logits.device)
            chosen[at] = sample_candidates(
                logits[at], width, top_p[at], min_p[at], typical_p[at], temperature[at], uniforms, filters=filters
            )
        return chosen

    def _window_tensors(self, windows: Sequence[Counter[int] | None], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens in each row's penalty window and their counts, [n, W] each (W the most distinct tokens of a
        row), sent to ``device`` in one copy; a row with fewer is padded with a token not in its window, count 0."""
        width = max(len(w) for w in windows if w)
        ids: list[int] = []
        counts: list[int] = []
        for window in windows:
            window = window or Counter()
            ids.extend(window)
            counts.extend(window.values())
            if len(window) < width:  # fewer distinct tokens than the vocabulary: one of the first ``width`` is free
                ids.extend([next(t for t in range(width) if t not in window)] * (width - len(window)))
                counts.extend([0] * (width - len(window)))
        pinned = device.type == "cuda"  # a copy from pinned memory does not wait on the device's queue
        both = torch.tensor([ids, counts], dtype=torch.long, pin_memory=pinned).to(device, non_blocking=pinned)
        return both[0].view(len(windows), width), both[1].view(len(windows), width)

    def _row(self, row: int) -> RowSampling:
        sampling = self.rows[row]
        if sampling is None:
            raise ValueError(f"batch row {row} has no sampling state (not admitted)")
        return sampling

    def _uniforms(self, rows: Sequence[int], device: torch.device) -> torch.Tensor:
        """One number in (0, 1] per row: seeded rows from their own generator, the others from one draw."""
        out = torch.empty(len(rows), dtype=torch.float32, device=device)
        shared = [i for i, r in enumerate(rows) if self.generators[r] is None]
        if shared:
            out[_selector(shared, device)] = torch.rand(len(shared), generator=self.shared, device=device)
        for i, r in enumerate(rows):
            generator = self.generators[r]
            if generator is not None:
                out[i : i + 1] = torch.rand(1, generator=generator, device=device)
        return 1.0 - out  # (0, 1]: a zero would pick a candidate the filters dropped


def _selector(indices: Sequence[int], device: torch.device) -> slice | torch.Tensor:
    """``indices`` as a slice when they are consecutive (no index tensor), else as a device index tensor."""
    if indices and list(indices) == list(range(indices[0], indices[0] + len(indices))):
        return slice(indices[0], indices[0] + len(indices))
    return torch.tensor(list(indices), dtype=torch.long).to(device)


def _random_seed() -> int:
    return int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
