"""The batched sampler on small hand-made logits (in the style of mlx-lm's tests/test_sample_utils.py): each
filter alone and combined, rows with different parameters in one batch, seeds reproducible alone or in any
batch, greedy rows untouched by sampled ones, penalty counts following the window. On the CPU always, and
on CUDA when present."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pytest
import torch

from ollama_torch.engine.sampling import (
    BatchSampler,
    RowSampling,
    apply_min_p,
    apply_penalties,
    apply_top_p,
    apply_typical_p,
    draw,
    sample_candidates,
    scale_temperature,
    top_k_candidates,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
INF = float("inf")


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


def logits_of(probs: list[list[float]], device: torch.device) -> torch.Tensor:
    return torch.tensor(probs, device=device).log()


def kept(values: torch.Tensor) -> list[list[bool]]:
    return torch.isfinite(values).cpu().tolist()


BASE = RowSampling(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0,
                   frequency_penalty=0.0, presence_penalty=0.0, penalty_window=0, seed=-1)


# -- each filter alone ------------------------------------------------------------------------------------------
def test_top_k_keeps_the_best_first(device: torch.device) -> None:
    values, ids = top_k_candidates(torch.tensor([[0.1, 3.0, 2.0, -1.0]], device=device), 2)
    assert ids.cpu().tolist() == [[1, 2]] and values.cpu().tolist() == [[3.0, 2.0]]
    _, all_ids = top_k_candidates(torch.tensor([[0.1, 3.0, 2.0, -1.0]], device=device), 4)
    assert all_ids.cpu().tolist() == [[1, 2, 0, 3]]


def test_top_p(device: torch.device) -> None:
    values = logits_of([[0.5, 0.3, 0.15, 0.05]] * 4, device)
    out = apply_top_p(values, torch.tensor([0.5, 0.8, 0.81, 1.0], device=device))
    assert kept(out) == [
        [True, False, False, False],  # 0.5 reaches 0.5
        [True, True, False, False],  # 0.5 + 0.3 reaches 0.8
        [True, True, True, False],
        [True, True, True, True],  # 1.0: unchanged
    ]
    assert torch.equal(out[3], values[3])


def test_min_p(device: torch.device) -> None:
    values = logits_of([[0.5, 0.3, 0.15, 0.05]] * 3, device)
    out = apply_min_p(values, torch.tensor([0.0, 0.5, 0.61], device=device))
    assert kept(out) == [[True] * 4, [True, True, False, False], [True, False, False, False]]


def test_typical_p_keeps_the_tokens_nearest_the_entropy(device: torch.device) -> None:
    probs = [0.6, 0.25, 0.1, 0.05]
    entropy = -sum(p * math.log(p) for p in probs)
    order = sorted(range(4), key=lambda i: abs(-math.log(probs[i]) - entropy))  # most typical first
    values = logits_of([probs] * 2, device)
    out = apply_typical_p(values, torch.tensor([probs[order[0]] - 0.01, 1.0], device=device))
    expected = [i == order[0] for i in range(4)]
    assert kept(out) == [expected, [True] * 4]
    assert order[0] != 0  # the most likely token is not the most typical one here: the filter can drop it
    # the survivors stay in their best-first positions
    assert out[0, order[0]].item() == pytest.approx(values[0, order[0]].item())


def test_temperature_and_its_overflow(device: torch.device) -> None:
    values = torch.tensor([[2.0, 1.0], [2.0, 1.0], [3e38, 1.0]], device=device)
    scaled, overflow = scale_temperature(values, torch.tensor([2.0, 0.5, 1e-30], device=device))
    assert scaled[:2].cpu().tolist() == [[1.0, 0.5], [4.0, 2.0]]
    assert overflow.cpu().tolist() == [False, False, True]
    assert torch.isfinite(scaled[2, 0])  # +inf became the largest float


def test_draw_is_the_inverse_cdf_and_never_takes_a_dropped_candidate(device: torch.device) -> None:
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5]] * 4, device=device)
    positions = draw(probs, torch.tensor([1e-7, 0.5, 0.5001, 1.0], device=device))
    assert positions.cpu().tolist() == [1, 1, 3, 3]


def test_penalties(device: torch.device) -> None:
    """Over the window's tokens only (ids 0 and 1, padded with 3, count 0, twice: its value is unchanged)."""
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]] * 3, device=device)
    ids = torch.tensor([[0, 1, 3, 3]] * 3, device=device)
    counts = torch.tensor([[2, 1, 0, 0]] * 3, device=device)
    out = apply_penalties(
        logits, ids, counts,
        repeat=torch.tensor([2.0, 1.0, 1.0], device=device),
        frequency=torch.tensor([0.0, 0.5, 0.0], device=device),
        presence=torch.tensor([0.0, 0.0, 0.25], device=device),
    )
    assert out.cpu().tolist() == [
        [1.0, -4.0, 1.0, 0.5],  # repeat: positive divided, negative multiplied, unseen untouched
        [1.0, -2.5, 1.0, 0.5],  # frequency: per occurrence
        [1.75, -2.25, 1.0, 0.5],  # presence: once
    ]


def test_extreme_penalties_stay_finite_or_minus_inf(device: torch.device) -> None:
    logits = torch.tensor([[2.0, -2.0, float("-inf")]], device=device)
    out = apply_penalties(logits, torch.tensor([[0, 1, 2]], device=device), torch.tensor([[1, 1, 1]], device=device),
                          torch.tensor([1e-40], device=device), torch.tensor([-1e38], device=device),
                          torch.tensor([0.0], device=device))
    assert not torch.isnan(out).any() and out[0, 2].item() == -INF and torch.isfinite(out[0, :2]).all()


# -- combined ---------------------------------------------------------------------------------------------------
def test_filters_in_llama_cpp_order(device: torch.device) -> None:
    """top_k 3 drops the 4th; top_p 0.7 of the renormalized three keeps two (4/9 + 3/9 of the mass);
    min_p 0.8 of the renormalized two (4/7, 3/7) keeps one."""
    logits = logits_of([[0.4, 0.3, 0.2, 0.1]], device)
    one = torch.ones(1, device=device)
    for _ in range(20):
        token = sample_candidates(logits, 3, 0.7 * one, 0.8 * one, one, one, torch.rand(1, device=device) + 1e-6)
        assert token.item() == 0
    seen = {int(sample_candidates(logits, 3, 0.7 * one, 0 * one, one, one, torch.tensor([u], device=device)).item())
            for u in (0.1, 0.9)}
    assert seen == {0, 1}


def _sampler(device: torch.device, rows: list[RowSampling], vocab: int = 4, histories: list[list[int]] | None = None) -> BatchSampler:
    sampler = BatchSampler(max(len(rows), 1), vocab, device)
    for i, row in enumerate(rows):
        sampler.admit(i, row, (histories or [[]] * len(rows))[i])
    return sampler


def test_rows_with_different_parameters_in_one_batch(device: torch.device) -> None:
    probs = [0.4, 0.3, 0.2, 0.1]
    rows = [replace(BASE, top_k=1), replace(BASE, top_p=0.5), replace(BASE, min_p=0.6), replace(BASE, temperature=0.0),
            BASE]
    sampler = _sampler(device, rows)
    counts: list[Counter[int]] = [Counter() for _ in rows]
    for _ in range(300):
        ids = sampler.sample(list(range(len(rows))), logits_of([probs] * len(rows), device)).cpu().tolist()
        for c, t in zip(counts, ids, strict=True):
            c[t] += 1
    assert set(counts[0]) == {0} and set(counts[1]) == {0, 1} and set(counts[2]) == {0, 1}
    assert set(counts[3]) == {0}
    assert set(counts[4]) == {0, 1, 2, 3}  # the unfiltered row samples everything
    assert counts[4][0] > counts[4][3]


def test_seeded_rows_sample_the_same_alone_or_in_any_batch(device: torch.device) -> None:
    vocab = 64
    torch.manual_seed(0)
    steps = [torch.randn(1, vocab, device=device) for _ in range(30)]
    seeded = replace(BASE, top_k=40, top_p=0.9, temperature=0.8, seed=1234)

    def run(batch: list[RowSampling], at: int) -> list[int]:
        sampler = _sampler(device, batch, vocab)
        out = []
        for logits in steps:
            noise = torch.randn(len(batch), vocab, device=device)
            noise[at] = logits[0]
            out.append(int(sampler.sample(list(range(len(batch))), noise)[at].item()))
        return out

    alone = run([seeded], 0)
    assert run([BASE, seeded, replace(BASE, top_k=5), replace(BASE, temperature=0.0)], 1) == alone
    assert run([replace(BASE, seed=7, top_k=40), replace(BASE, typical_p=0.5), seeded], 2) == alone
    assert run([replace(seeded, seed=99)], 0) != alone


def test_greedy_rows_are_untouched_by_sampled_ones(device: torch.device) -> None:
    torch.manual_seed(1)
    logits = torch.randn(6, 50, device=device)
    rows = [replace(BASE, temperature=0.0), replace(BASE, top_k=3), replace(BASE, temperature=0.0),
            replace(BASE, seed=5, top_p=0.5), replace(BASE, min_p=0.2), replace(BASE, temperature=0.0)]
    ids = _sampler(device, rows, 50).sample(list(range(6)), logits.clone())
    greedy = logits.argmax(dim=-1)
    assert [ids[i].item() for i in (0, 2, 5)] == [greedy[i].item() for i in (0, 2, 5)]


def test_penalty_counts_follow_the_window(device: torch.device) -> None:
    row = replace(BASE, temperature=0.0, repeat_penalty=1e9, penalty_window=3)
    # history [0, 0, 1, 2]: the window is [0, 1, 2]; token 3 is the only one not penalized
    sampler = _sampler(device, [row], 4, [[0, 0, 1, 2]])
    flat = torch.tensor([[1.0, 1.0, 1.0, 0.5]], device=device)
    assert sampler.sample([0], flat.clone()).item() == 3
    history = [0, 0, 1, 2, 3]
    sampler.accept([0], [3], [history[:-1]])  # window [1, 2, 3]: 0 left it
    assert sampler.windows[0] == {1: 1, 2: 1, 3: 1}
    assert sampler.sample([0], flat.clone()).item() == 0


def test_a_batchs_penalties_equal_the_formula_over_the_whole_vocabulary(device: torch.device) -> None:
    """The windows' tokens, padded per row (a row without penalties is all padding; one whose window holds the whole
    vocabulary has none), penalized in place: the same bits as llama.cpp's formula applied to every logit with the
    counts of the window (zero outside it), and the greedy picks follow."""
    torch.manual_seed(0)
    vocab = 50
    rows = [replace(BASE, temperature=0.0, repeat_penalty=1.3, frequency_penalty=0.2, presence_penalty=0.1, penalty_window=8),
            replace(BASE, temperature=0.0),
            replace(BASE, temperature=0.0, repeat_penalty=0.7, penalty_window=64)]
    histories = [torch.randint(0, vocab, (20,)).tolist(), [1, 2, 3], [5] * 30 + list(range(vocab))]
    sampler = _sampler(device, rows, vocab, histories)
    logits = torch.randn(3, vocab, device=device) * 3
    counts = torch.zeros(3, vocab, device=device)
    for i, (row, history) in enumerate(zip(rows, histories, strict=True)):
        for token in history[len(history) - row.penalty_window :] if row.penalty_window else []:
            counts[i, token] += 1
    repeat, frequency, presence = (torch.tensor([getattr(r, name) for r in rows], device=device)[:, None]
                                   for name in ("repeat_penalty", "frequency_penalty", "presence_penalty"))
    present = counts > 0
    penalized = torch.where(logits <= 0, logits * repeat, logits / repeat)
    expected = torch.where(present, penalized, logits) - counts * frequency - present.float() * presence
    ids, window_counts = sampler._window_tensors(sampler.windows[:3], device)
    assert ids.shape == (3, vocab) and int(window_counts[2].min()) > 0 and int(window_counts[1].max()) == 0
    got = apply_penalties(logits.clone(), ids, window_counts, repeat[:, 0], frequency[:, 0], presence[:, 0])
    assert torch.equal(got, expected)
    assert sampler.sample([0, 1, 2], logits.clone()).cpu().tolist() == expected.argmax(dim=-1).cpu().tolist()


def test_moving_a_row_moves_its_state(device: torch.device) -> None:
    rows = [replace(BASE, temperature=0.0), replace(BASE, temperature=0.0, repeat_penalty=1e9, penalty_window=4)]
    sampler = _sampler(device, rows, 4, [[], [0]])
    sampler.move(1, 0)
    assert sampler.sample([0], torch.tensor([[1.0, 0.9, 0.0, 0.0]], device=device)).item() == 1
    with pytest.raises(ValueError, match="not admitted"):
        sampler.sample([1], torch.zeros(1, 4, device=device))


def test_nothing_is_read_back_from_the_device() -> None:
    """The sampler's step syncs nowhere: any ``.item()``/``.tolist()`` inside would show up here."""
    calls: list[str] = []
    sampler = _sampler(torch.device("cpu"), [replace(BASE, top_k=3, top_p=0.8, min_p=0.1, typical_p=0.9, seed=3),
                                             replace(BASE, repeat_penalty=1.3, penalty_window=8), replace(BASE, temperature=0.0)],
                       16, [[1, 2], [3, 3, 4], []])
    original_item, original_tolist = torch.Tensor.item, torch.Tensor.tolist
    try:
        torch.Tensor.item = lambda self: calls.append("item") or original_item(self)  # type: ignore[method-assign]
        torch.Tensor.tolist = lambda self: calls.append("tolist") or original_tolist(self)  # type: ignore[method-assign]
        sampler.sample([0, 1, 2], torch.randn(3, 16))
    finally:
        torch.Tensor.item, torch.Tensor.tolist = original_item, original_tolist  # type: ignore[method-assign]
    assert calls == []
