"""The ``/v1`` endpoints through the official ``openai`` SDK, against the real server process and real models
(SmolLM2 for chat/completions, all-MiniLM for embeddings)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.url + "/v1", api_key="ollama", max_retries=0, timeout=600) as client:
        yield client


def test_chat_completion(oai: OpenAI, smollm2: str) -> None:
    done = oai.chat.completions.create(model=smollm2, messages=QUESTION, max_tokens=24, temperature=0)
    assert done.id.startswith("chatcmpl-") and done.object == "chat.completion"
    assert done.model == smollm2 and done.system_fingerprint == "fp_ollama"
    choice = done.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert done.usage is not None and done.usage.prompt_tokens > 0 and 0 < done.usage.completion_tokens <= 24
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


def test_usage_counts_the_whole_prompt_and_reports_cache_hits(oai: OpenAI, smollm2: str) -> None:
    """OpenAI counts the whole prompt; a second identical request (served from the prefix cache) was
    reported as 1 prompt token. The cached part is in ``prompt_tokens_details.cached_tokens``."""
    ask = [{"role": "user", "content": "Name three colours of the rainbow, please."}]
    first = oai.chat.completions.create(model=smollm2, messages=ask, max_tokens=3, temperature=0)
    second = oai.chat.completions.create(model=smollm2, messages=ask, max_tokens=3, temperature=0)
    assert first.usage is not None and second.usage is not None
    assert second.usage.prompt_tokens == first.usage.prompt_tokens > 10
    details = second.usage.prompt_tokens_details
    assert details is not None and 0 < (details.cached_tokens or 0) < second.usage.prompt_tokens
    streamed = list(oai.chat.completions.create(model=smollm2, messages=ask, max_tokens=3, temperature=0, stream=True,
                                                stream_options={"include_usage": True}))
    usage = streamed[-1].usage
    assert usage is not None and usage.prompt_tokens == first.usage.prompt_tokens
    assert usage.prompt_tokens_details is not None and (usage.prompt_tokens_details.cached_tokens or 0) > 0
    text = oai.completions.create(model=smollm2, prompt="The capital of France is", max_tokens=2, temperature=0)
    again = oai.completions.create(model=smollm2, prompt="The capital of France is", max_tokens=2, temperature=0)
    assert text.usage is not None and again.usage is not None and again.usage.prompt_tokens == text.usage.prompt_tokens


def test_chat_max_tokens_is_length(oai: OpenAI, smollm2: str) -> None:
    done = oai.chat.completions.create(model=smollm2, messages=QUESTION, max_tokens=5, temperature=0)
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 5
    newer = oai.chat.completions.create(model=smollm2, messages=QUESTION, max_completion_tokens=3, temperature=0)
    assert newer.choices[0].finish_reason == "length" and newer.usage is not None and newer.usage.completion_tokens == 3


def test_chat_stream_matches_non_stream(oai: OpenAI, smollm2: str) -> None:
    whole = oai.chat.completions.create(model=smollm2, messages=QUESTION, max_tokens=24, temperature=0)
    chunks = list(oai.chat.completions.create(
        model=smollm2, messages=QUESTION, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in with_choices[1:])
    finishes = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]  # one dedicated finish chunk
    assert with_choices[-1].choices[0].finish_reason and with_choices[-1].choices[0].delta.content is None
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text and text == whole.choices[0].message.content  # greedy: the same tokens either way
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage is not None and whole.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (whole.usage.prompt_tokens, whole.usage.completion_tokens)


def test_chat_stream_wire_format(http: httpx.Client, smollm2: str) -> None:
    body = {"model": smollm2, "messages": QUESTION, "max_tokens": 4, "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    frames = [f for f in raw.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames) and frames[-1] == "data: [DONE]"
    finish = json.loads(frames[-2][len("data: "):])
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "length"}] and "usage" not in finish


def test_json_object_response_format(oai: OpenAI, smollm2: str) -> None:
    messages = [{"role": "user", "content": "Give the name and age of a person as a JSON object."}]
    done = oai.chat.completions.create(model=smollm2, messages=messages, response_format={"type": "json_object"}, temperature=0, max_tokens=200)  # type: ignore[arg-type]
    assert done.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(done.choices[0].message.content or ""), dict)


def test_completions(oai: OpenAI, smollm2: str) -> None:
    done = oai.completions.create(model=smollm2, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert done.id.startswith("cmpl-") and done.object == "text_completion" and done.model == smollm2
    assert done.choices[0].text and done.choices[0].finish_reason in ("stop", "length")
    assert done.usage is not None and done.usage.completion_tokens > 0
    chunks = list(oai.completions.create(model=smollm2, prompt="The capital of France is", max_tokens=8, temperature=0,
                                         stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == done.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == done.usage.completion_tokens


def test_logprobs(oai: OpenAI, smollm2: str) -> None:
    chat = oai.chat.completions.create(model=smollm2, messages=QUESTION, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == 6 and "".join(e.token for e in content) == chat.choices[0].message.content
    assert all(len(e.top_logprobs) == 2 and e.top_logprobs[0].logprob == e.logprob <= 0 for e in content)
    streamed = [e for c in oai.chat.completions.create(model=smollm2, messages=QUESTION, max_tokens=6, temperature=0,
                                                       logprobs=True, stream=True)
                if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]
    done = oai.completions.create(model=smollm2, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=2)
    lp = done.choices[0].logprobs
    assert lp is not None and "".join(lp.tokens) == done.choices[0].text and len(lp.token_logprobs) == 5
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(5)]
    assert all(len(top) == 2 and max(top.values()) == value for top, value in zip(lp.top_logprobs, lp.token_logprobs, strict=True))


def test_models(oai: OpenAI, smollm2: str) -> None:
    listed = {m.id: m for m in oai.models.list()}
    assert smollm2 in listed and listed[smollm2].owned_by == "library" and listed[smollm2].object == "model"
    assert listed[smollm2].created > 1_600_000_000
    one = oai.models.retrieve(smollm2)
    assert (one.id, one.owned_by, one.created) == (smollm2, "library", listed[smollm2].created)
    with pytest.raises(openai.NotFoundError) as err:
        oai.models.retrieve("no-such-model")
    assert err.value.status_code == 404 and "not found" in err.value.message


def test_errors(oai: OpenAI, smollm2: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        oai.chat.completions.create(model="does-not-exist", messages=QUESTION)
    assert missing.value.body == {"message": "model 'does-not-exist' not found", "type": "not_found_error", "param": None, "code": None}
    with pytest.raises(openai.NotFoundError):
        oai.completions.create(model="does-not-exist", prompt="hi")
    with pytest.raises(openai.BadRequestError) as empty:
        oai.chat.completions.create(model=smollm2, messages=[])
    assert "[] is too short - 'messages'" in empty.value.message
    with pytest.raises(openai.BadRequestError) as url:
        oai.chat.completions.create(model=smollm2, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "image URLs are not currently supported" in url.value.message


def test_embeddings(oai: OpenAI, http: httpx.Client, minilm: str) -> None:
    texts = ["hello world", "the sky is blue"]
    encoded = oai.embeddings.create(model=minilm, input=texts)  # the SDK asks for base64 and decodes it
    floats = oai.embeddings.create(model=minilm, input=texts, encoding_format="float")
    native = http.post("/api/embed", json={"model": minilm, "input": texts}).json()
    assert encoded.model == minilm and encoded.object == "list" and [d.index for d in encoded.data] == [0, 1]
    for got_b64, got_float, want in zip(encoded.data, floats.data, native["embeddings"], strict=True):
        assert len(got_float.embedding) == len(want) == 384
        assert got_float.embedding == pytest.approx(want, abs=1e-6)
        assert got_b64.embedding == pytest.approx(want, abs=1e-6)  # float32 precision
        assert math.isclose(math.fsum(v * v for v in got_float.embedding), 1.0, abs_tol=1e-5)
    assert encoded.usage.prompt_tokens == encoded.usage.total_tokens == native["prompt_eval_count"]
    single = oai.embeddings.create(model=minilm, input="", encoding_format="float")
    assert len(single.data) == 1
    with pytest.raises(openai.BadRequestError) as bad:
        oai.embeddings.create(model=minilm, input=[])
    assert "invalid input" in bad.value.message
