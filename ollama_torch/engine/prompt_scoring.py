"""Scoring a prompt: the log-probability of every prompt token given the tokens before it (``echo`` with
``logprobs`` on ``/v1/completions``, which is how lm-evaluation-harness asks for a loglikelihood).

The prefill forward computes the hidden state of every prompt position anyway; a plain request turns only
the last one into logits (``logits_to_keep=1``), a scoring one keeps them all, ``[rows, q, V]``. With V in
the tens or hundreds of thousands that tensor is large, so scoring requests prefill apart from the others,
as many together as fit :data:`PROMPT_LOGITS_BYTES` (:func:`prefill_groups`), and the log-softmax runs over
slices of positions (:func:`score_prompt`). A cached prefix computes no logits at all, so the worker lets
scoring requests neither read the prefix cache nor fill it.

The values are the model's own, in the same terms as generated tokens' (``logprobs.batch_logprobs``): the
log-softmax of the raw logits over the tokenizer's vocabulary (padded embedding rows left out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from .api import TokenLogprob
from .logprobs import TokenBytes, batch_logprobs, entry_from_row

T = TypeVar("T")

PROMPT_LOGITS_BYTES = 256 << 20  # float32 logits kept by one scoring prefill (one long prompt may exceed it alone)
SLICE = 256  # prompt positions per log-softmax: bounds the float32 copy it makes


def prefill_groups(seqs: Sequence[T], scores: Callable[[T], bool], length: Callable[[T], int], width: int) -> list[list[T]]:
    """``seqs`` admitted in one step, as the prefill forwards to run: the plain ones together, the scoring ones
    in groups whose full logits (rows x longest prompt x ``width``, float32) fit :data:`PROMPT_LOGITS_BYTES`;
    a prompt too long for the budget alone still runs, in a group of its own. Order is kept within each."""
    plain = [s for s in seqs if not scores(s)]
    groups: list[list[T]] = [plain] if plain else []
    current: list[T] = []
    longest = 0
    for seq in (s for s in seqs if scores(s)):
        n = max(longest, length(seq))
        if current and (len(current) + 1) * n * width * 4 > PROMPT_LOGITS_BYTES:
            groups.append(current)
            current, n = [], length(seq)
        current.append(seq)
        longest = n
    if current:
        groups.append(current)
    return groups


def score_prompt(
    logits: torch.Tensor, tokens: Sequence[int], top: int, vocab: int, token_bytes: TokenBytes,
) -> tuple[str, tuple[TokenLogprob, ...]]:
    """``logits`` [n, W]: the raw logits at the prompt's n positions (position i predicts token i + 1) for the
    prompt ``tokens`` (n ids). Returns the first token's text (nothing precedes it: it has no logprob) and one
    entry per later token, with the ``top`` most likely alternatives at its position."""
    if not tokens:
        return "", ()
    first = token_bytes(tokens[0]).decode("utf-8", errors="replace")
    targets = torch.tensor(tokens[1:], device=logits.device)  # [n - 1]
    predicting = logits[: len(tokens) - 1, :vocab]  # [n - 1, V]: the last position predicts past the prompt
    rows: list[list[float]] = []
    for lo in range(0, len(tokens) - 1, SLICE):
        raw = predicting[lo : lo + SLICE]  # [s, V]: a view; batch_logprobs makes the float32 copy
        rows += batch_logprobs(raw, targets[lo : lo + SLICE], top).tolist()  # one host transfer per slice
    entries = tuple(entry_from_row(row, t, top, token_bytes) for row, t in zip(rows, tokens[1:], strict=True))
    return first, entries
