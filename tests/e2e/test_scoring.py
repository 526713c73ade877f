"""Evaluation-grade scoring through ``/v1/completions`` on the real server and SmolLM2: ``echo`` with
``logprobs`` scores every prompt token, and the values are Transformers' own (log-softmax of the logits of a
plain forward pass over the same weights), for string and token-id prompts, several prompts in one request
(batched together), streamed or not; the tokenizer endpoints give the ids a completion runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.e2e.conftest import derived_dir
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

TEXTS = [
    "The capital of France is Paris.",
    "Question: What color is the sky on a clear day?\nAnswer: blue",
    "1 2 3 4 5 6 7 8 9 10 11 12",
]


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.url + "/v1", api_key="ollama", max_retries=0, timeout=600) as client:
        yield client


@pytest.fixture(scope="module")
def hf(server: ServerProcess, smollm2: str) -> Any:
    """Transformers on the same weights: ``score(ids)`` is each token's log-probability given those before it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = derived_dir(server)
    tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()

    def score(ids: list[int]) -> list[float]:
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        return [float(logp[i, t]) for i, t in enumerate(ids[1:])]

    score.tokenizer = tok  # type: ignore[attr-defined]
    return score


def test_echo_scores_string_prompts_as_transformers_does(oai: OpenAI, smollm2: str, hf: Any) -> None:
    done = oai.completions.create(model=smollm2, prompt=TEXTS, echo=True, logprobs=1, max_tokens=0, temperature=0)
    assert [c.index for c in done.choices] == [0, 1, 2]
    for text, choice in zip(TEXTS, done.choices, strict=True):
        ids = hf.tokenizer.encode(text)  # raw: no chat template (SmolLM2 adds no BOS)
        lp = choice.logprobs
        assert choice.text == text and choice.finish_reason == "length" and lp is not None
        assert lp.tokens == [hf.tokenizer.decode([t]) for t in ids] and "".join(lp.tokens) == text
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert lp.token_logprobs[1:] == pytest.approx(hf(ids), abs=1e-4)
        assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(ids))]
        assert all(len(top) == 1 and max(top.values()) >= value - 1e-6 for top, value in zip(lp.top_logprobs[1:], lp.token_logprobs[1:], strict=True))
    assert done.usage is not None and done.usage.completion_tokens == 0
    assert done.usage.prompt_tokens == sum(len(hf.tokenizer.encode(t)) for t in TEXTS)


def test_echo_of_token_ids_then_generated_tokens(oai: OpenAI, smollm2: str, hf: Any) -> None:
    """lm-evaluation-harness's request: token ids, echo, logprobs 1, max_tokens 1; it reads the prompt's
    entries and drops the last (generated) one."""
    ids = [hf.tokenizer.encode(t) for t in TEXTS[:2]]
    done = oai.completions.create(model=smollm2, prompt=ids, echo=True, logprobs=1, max_tokens=1, temperature=0, seed=1234)
    for prompt, choice in zip(ids, done.choices, strict=True):
        lp = choice.logprobs
        assert lp is not None and len(lp.tokens) == len(prompt) + 1
        assert choice.text == hf.tokenizer.decode(prompt) + lp.tokens[-1]
        assert lp.token_logprobs[1:-1] == pytest.approx(hf(prompt), abs=1e-4)
        assert lp.token_logprobs[-1] == pytest.approx(max(lp.top_logprobs[-1].values()), abs=1e-6)  # greedy
    again = oai.completions.create(model=smollm2, prompt=ids[0], echo=True, logprobs=1, max_tokens=0)
    # alone vs in a batch of two: the same values up to float32 rounding (the batch's shapes change the sums)
    assert again.choices[0].logprobs.token_logprobs[0] is None  # type: ignore[union-attr]
    assert again.choices[0].logprobs.token_logprobs[1:] == pytest.approx(  # type: ignore[union-attr]
        done.choices[0].logprobs.token_logprobs[1:-1], abs=1e-5)  # type: ignore[union-attr]


def test_echo_streamed(oai: OpenAI, smollm2: str, hf: Any) -> None:
    chunks = list(oai.completions.create(model=smollm2, prompt=TEXTS[:2], echo=True, logprobs=2, max_tokens=3, temperature=0,
                                         stream=True))
    for index, text in enumerate(TEXTS[:2]):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        assert mine[0].text == text  # the prompt comes first, as one chunk
        entries = [v for c in mine if c.logprobs for v in c.logprobs.token_logprobs]
        assert entries[0] is None and entries[1:-3] == pytest.approx(hf(hf.tokenizer.encode(text)), abs=1e-4)
        assert len(entries) == len(hf.tokenizer.encode(text)) + 3


def test_echo_never_cuts_the_prompt(oai: OpenAI, http: httpx.Client, smollm2: str) -> None:
    long = " ".join(["word"] * 5000)  # past the default num_ctx
    with pytest.raises(openai.BadRequestError) as err:
        oai.completions.create(model=smollm2, prompt=long, echo=True, logprobs=1, max_tokens=0)
    assert "the input length exceeds the context length" in err.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        oai.completions.create(model=smollm2, prompt=[1, 2, 10**9], echo=True, max_tokens=0)
    assert "invalid prompt: token id 1000000000 is outside the model's vocabulary (0..49151)" in bad.value.message


def test_tokenizer_endpoints_give_the_ids_a_completion_runs(http: httpx.Client, smollm2: str, hf: Any) -> None:
    text = TEXTS[1]
    tokens = http.post("/tokenize", json={"model": smollm2, "prompt": text, "add_special_tokens": False}).json()
    assert tokens["tokens"] == hf.tokenizer.encode(text) and tokens["count"] == len(tokens["tokens"])
    assert tokens["max_model_len"] == 8192
    back = http.post("/detokenize", json={"model": smollm2, "tokens": tokens["tokens"]}).json()
    assert back["prompt"] == text
    info = http.get("/tokenizer_info", params={"model": smollm2}).json()
    assert info["eos_token"] == hf.tokenizer.eos_token and info["tokenizer_class"]
    assert info["chat_template"] == hf.tokenizer.chat_template
