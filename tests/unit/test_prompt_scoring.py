"""Prompt scoring (``prompt_logprobs``): the worker's values are the log-softmax of Transformers' own logits at
every prompt position, whether the request prefills alone (the solo path), beside plain requests in one
step, or after an identical prompt that the prefix cache would otherwise serve; and the grouping that keeps
the full-logits prefills apart and bounded."""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from ollama_torch.engine.api import TokenLogprob
from ollama_torch.engine.loader import LoadedModel
from ollama_torch.engine.logprobs import TokenBytes
from ollama_torch.engine.options import GenerationOptions
from ollama_torch.engine.prompt_scoring import PROMPT_LOGITS_BYTES, prefill_groups, score_prompt
from ollama_torch.engine.requests import (
    DoneEvent,
    ErrorEvent,
    Event,
    GenerationRequest,
    PromptEvent,
    TextEvent,
)
from ollama_torch.engine.worker import ModelWorker

PROMPTS = [
    "The sky is blue because of a process called Rayleigh scattering.",
    "Once upon a time there was a small robot",
    "Cats and dogs are the most common pets. A cat sleeps for most of the day and hunts at night.",
]


def test_prefill_groups_keep_scoring_apart_and_bounded() -> None:
    seqs = [("a", 10, False), ("b", 10, True), ("c", 20, False), ("d", 30, True), ("e", 5, True)]
    groups = prefill_groups(seqs, lambda s: s[2], lambda s: s[1], width=1000)
    assert groups == [[seqs[0], seqs[2]], [seqs[1], seqs[3], seqs[4]]]
    width = PROMPT_LOGITS_BYTES // (4 * 30 * 2)  # two rows of 30 positions fit, three do not
    groups = prefill_groups(seqs, lambda s: s[2], lambda s: s[1], width=width)
    assert groups == [[seqs[0], seqs[2]], [seqs[1], seqs[3]], [seqs[4]]]
    huge = [("x", 10**9, True), ("y", 1, True)]
    assert prefill_groups(huge, lambda s: s[2], lambda s: s[1], width=10) == [[huge[0]], [huge[1]]]  # too long alone: runs alone


def test_score_prompt_by_hand() -> None:
    class Bytes:
        def __call__(self, token: int) -> bytes:
            return f"<{token}>".encode()

    logits = torch.tensor([[0.0, 2.0, 1.0, 9.0], [1.0, 1.0, 3.0, 9.0], [5.0, 0.0, 0.0, 9.0]])  # column 3: padding
    first, entries = score_prompt(logits, [2, 1, 2], 1, 3, Bytes())  # type: ignore[arg-type]
    assert first == "<2>"
    logp = torch.log_softmax(logits[:, :3], -1)
    assert [e.token for e in entries] == ["<1>", "<2>"]
    assert [e.logprob for e in entries] == pytest.approx([float(logp[0, 1]), float(logp[1, 2])], abs=1e-6)
    assert [(t.token, t.logprob) for e in entries for t in e.top] == [("<1>", entries[0].logprob), ("<2>", entries[1].logprob)]
    assert score_prompt(logits[:1], [1], 2, 3, Bytes()) == ("<1>", ())  # type: ignore[arg-type]


def _loaded(directory: Path, batchable: bool) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return LoadedModel(
        name="tiny", model=model, tokenizer=tok, kind="causal", device=torch.device("cpu"), dtype=torch.float32,
        eos_ids=frozenset({int(tok.eos_token_id)}), pad_token_id=int(tok.pad_token_id), vocab_size=len(tok),
        context_length=512, batchable=batchable, size_bytes=0, model_dir=directory,
    )


@pytest.fixture(scope="module")
def reference(tiny_llama_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()

    def score(ids: list[int]) -> list[float]:
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        return [float(logp[i, t]) for i, t in enumerate(ids[1:])]

    score.tokenizer = tok  # type: ignore[attr-defined]
    return score


def _run(worker: ModelWorker, prompts: list[list[int]], scored: list[bool], top: int = 2) -> list[list[Event]]:
    """Submit every request at once (so they are admitted in one step) and collect each one's events."""
    deadline = time.monotonic() + 10
    while worker.thread.running and time.monotonic() < deadline:  # idle_exit 0: the thread is leaving
        time.sleep(0.01)
    inboxes: list[queue.SimpleQueue[Event]] = [queue.SimpleQueue() for _ in prompts]
    requests = [
        GenerationRequest(ids, GenerationOptions(num_ctx=512, temperature=0, num_predict=1), inbox.put,
                          logprobs=True, top_logprobs=top, prompt_logprobs=wants)
        for ids, wants, inbox in zip(prompts, scored, inboxes, strict=True)
    ]
    for req in requests:
        worker.inbox.put(req)  # queued before the loop starts, so one step admits them all
        worker.active += 1
    worker.thread.wake()
    out: list[list[Event]] = []
    for inbox in inboxes:
        events = [inbox.get(timeout=60)]
        while not isinstance(events[-1], (DoneEvent, ErrorEvent)):
            events.append(inbox.get(timeout=60))
        out.append(events)
    return out


def _check(events: list[Event], ids: list[int], want: list[float], tok: Any) -> None:
    assert isinstance(events[0], PromptEvent), events  # before any text of the request
    prompt = events[0]
    assert prompt.first == tok.decode(ids[:1])
    assert [e.token for e in prompt.logprobs] == [tok.decode([t]) for t in ids[1:]]
    assert [e.logprob for e in prompt.logprobs] == pytest.approx(want, abs=1e-4)
    assert all(len(e.top) == 2 and e.top[0].logprob >= e.logprob - 1e-6 for e in prompt.logprobs)
    generated: list[TokenLogprob] = [e for ev in events if isinstance(ev, TextEvent) for e in ev.logprobs]
    assert len(generated) == 1 and isinstance(events[-1], DoneEvent) and events[-1].eval_count == 1


@pytest.mark.parametrize("batchable", [True, False], ids=["batched", "solo"])
def test_worker_scores_prompts_as_transformers_does(tiny_llama_dir: Path, reference: Any, batchable: bool) -> None:
    tok = reference.tokenizer
    prompts = [tok.encode(p) for p in PROMPTS]
    worker = ModelWorker(_loaded(tiny_llama_dir, batchable), max_rows=4)
    worker.thread.idle_exit = 0  # so that each _run starts the thread with all its requests queued
    try:
        # a plain request beside two scoring ones (of different lengths: left padding), admitted together
        first = _run(worker, prompts, [True, False, True])
        _check(first[0], prompts[0], reference(prompts[0]), tok)
        _check(first[2], prompts[2], reference(prompts[2]), tok)
        assert not any(isinstance(e, PromptEvent) for e in first[1])
        # the same prompts again: the plain one's prefix is cached, a scoring one must not read it
        longer = prompts[1] + tok.encode(" who lived in a quiet town")
        again = _run(worker, [longer, prompts[0]], [True, True])
        _check(again[0], longer, reference(longer), tok)
        _check(again[1], prompts[0], reference(prompts[0]), tok)
        if batchable:
            assert worker.prefix_cache is not None and worker.prefix_cache.entries  # the plain request's, kept
            kept = [entry[0] for entry in worker.prefix_cache.entries.values()]
            assert all(k[: len(prompts[0])] != tuple(prompts[0]) for k in kept)  # scored prompts are not stored
    finally:
        worker.close()


def test_a_long_scored_prompt_is_not_read_in_chunks(tiny_llama_dir: Path, reference: Any) -> None:
    """Chunked prefill reads a long prompt that arrives while others decode into a cache of its own, computing
    no logits: a scored prompt prefills whole instead, and is still scored as Transformers scores it."""
    tok = reference.tokenizer
    worker = ModelWorker(_loaded(tiny_llama_dir, True), max_rows=4, prefill_chunk=4)
    try:
        decoding: queue.SimpleQueue[Event] = queue.SimpleQueue()
        worker.submit(GenerationRequest(tok.encode(PROMPTS[1]), GenerationOptions(num_ctx=512, temperature=0, num_predict=40),
                                        decoding.put))
        first = decoding.get(timeout=60)
        assert isinstance(first, TextEvent)  # it is decoding now
        ids = tok.encode(PROMPTS[2])  # far longer than a 4-token chunk
        scored: queue.SimpleQueue[Event] = queue.SimpleQueue()
        worker.submit(GenerationRequest(ids, GenerationOptions(num_ctx=512, temperature=0, num_predict=1), scored.put,
                                        top_logprobs=2, prompt_logprobs=True))
        events = [scored.get(timeout=60)]
        while not isinstance(events[-1], (DoneEvent, ErrorEvent)):
            events.append(scored.get(timeout=60))
        assert isinstance(events[0], PromptEvent), events
        assert [e.logprob for e in events[0].logprobs] == pytest.approx(reference(ids), abs=1e-4)
    finally:
        worker.close()


def test_token_bytes_of_the_first_token(tiny_llama_dir: Path, reference: Any) -> None:
    tok = reference.tokenizer
    ids = tok.encode("héllo wörld")
    logits = torch.zeros(len(ids), len(tok))
    first, entries = score_prompt(logits, ids, 0, len(tok), TokenBytes(tok))
    assert first == TokenBytes(tok)(ids[0]).decode("utf-8", errors="replace") and len(entries) == len(ids) - 1
