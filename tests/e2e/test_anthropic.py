"""``/v1/messages`` and ``/v1/messages/count_tokens`` through the official ``anthropic`` SDK, against the real
server process: SmolLM2 for text (create, stream, count_tokens, stop sequences, sampling options the
current SDK no longer names), tiny random-weight models for a tool round trip (constrained calls make
even random weights call a tool) and for thinking blocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import pytest
from jsonschema import Draft202012Validator

from tests.e2e.conftest import upload_dir
from tests.e2e.test_thinking import THINKING_TEMPLATE
from tests.e2e.test_tools import HERMES_TEMPLATE
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "Why is the sky blue?"}]
GREEDY: dict[str, Any] = {"temperature": 0}  # the current SDK dropped temperature/top_p/top_k: sent as extra fields
# Hermes markup whose prompt does not open the call: the model chooses between text and a call
FREE_TEMPLATE = HERMES_TEMPLATE.replace("{{ if .Tools }}<tool_call>\n{{ end }}", "")
TIME: Any = {"name": "get_time", "input_schema": {"type": "object", "properties": {"tz": {"type": "integer"}}, "required": ["tz"]}}
WEATHER: Any = {"name": "get_weather", "description": "Current weather in a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 16}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def claude(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=600) as client:
        yield client


@pytest.fixture(scope="module")
def tiny(client: ollama.Client, tiny_llama_dir: Path) -> dict[str, str]:
    client.create(model="tiny-anthropic-base", files=upload_dir(client, tiny_llama_dir))
    client.create(model="tiny-anthropic-tools", from_="tiny-anthropic-base", template=HERMES_TEMPLATE)
    client.create(model="tiny-anthropic-thinker", from_="tiny-anthropic-base", template=THINKING_TEMPLATE)
    client.create(model="tiny-anthropic-free", from_="tiny-anthropic-base", template=FREE_TEMPLATE)
    return {"tools": "tiny-anthropic-tools", "thinker": "tiny-anthropic-thinker", "free": "tiny-anthropic-free"}


def test_create(claude: anthropic.Anthropic, http: httpx.Client, smollm2: str) -> None:
    message = claude.messages.create(model=smollm2, max_tokens=12, system="You are concise.", messages=ASK, extra_body=GREEDY)
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == smollm2 and message.stop_reason in ("end_turn", "max_tokens")
    [block] = message.content
    assert block.type == "text" and block.text
    usage = message.usage
    assert 0 < usage.output_tokens <= 12 and usage.input_tokens + (usage.cache_read_input_tokens or 0) > 10
    # the same conversation on /api/chat, greedy: the translation changed nothing
    native = http.post("/api/chat", json={"model": smollm2, "stream": False, "options": {"temperature": 0, "num_predict": 12},
                                          "messages": [{"role": "system", "content": "You are concise."}, *ASK]}).json()
    assert native["message"]["content"] == block.text


def test_stream_and_count_tokens(claude: anthropic.Anthropic, smollm2: str) -> None:
    whole = claude.messages.create(model=smollm2, max_tokens=10, messages=ASK, extra_body=GREEDY)
    with claude.messages.stream(model=smollm2, max_tokens=10, messages=ASK, extra_body=GREEDY) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds
    assert final.content[0].type == "text" and whole.content[0].type == "text"
    assert final.content[0].text == whole.content[0].text and final.stop_reason == whole.stop_reason
    counted = claude.messages.count_tokens(model=smollm2, messages=ASK)
    # the prompt the generation ran: evaluated + served from the prefix cache
    assert counted.input_tokens == final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) > 10
    more = [*ASK, {"role": "assistant", "content": "Rayleigh scattering."}, {"role": "user", "content": "Explain more."}]
    assert claude.messages.count_tokens(model=smollm2, messages=more).input_tokens > counted.input_tokens


def test_stop_sequences_and_sampling_options(claude: anthropic.Anthropic, smollm2: str) -> None:
    first = claude.messages.create(model=smollm2, max_tokens=16, messages=ASK, extra_body=GREEDY)
    assert first.content[0].type == "text"
    text = first.content[0].text
    word = text.split()[3]
    cut = claude.messages.create(model=smollm2, max_tokens=16, messages=ASK, stop_sequences=[word], extra_body=GREEDY)
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == word
    assert cut.content[0].type == "text" and text.startswith(cut.content[0].text + word)
    sampled = [claude.messages.create(model=smollm2, max_tokens=8, messages=ASK,
                                      extra_body={"temperature": 1.5, "top_k": 50, "top_p": 0.95}) for _ in range(3)]
    texts = {m.content[0].text for m in sampled if m.content[0].type == "text"}
    assert len(texts) > 1  # sampled, not greedy: the options reached the sampler


def test_tool_round_trip(claude: anthropic.Anthropic, tiny: dict[str, str]) -> None:
    ask: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    message = claude.messages.create(model=tiny["tools"], max_tokens=80, messages=ask, tools=[WEATHER], extra_body=GREEDY)
    calls = [b for b in message.content if b.type == "tool_use"]
    assert calls and message.stop_reason == "tool_use"
    for call in calls:
        assert call.name == "get_weather" and call.id.startswith("call_")
        Draft202012Validator(WEATHER["input_schema"]).validate(call.input)
    with claude.messages.stream(model=tiny["tools"], max_tokens=80, messages=ask, tools=[WEATHER], extra_body=GREEDY) as stream:
        streamed = stream.get_final_message()
    assert [(b.name, b.input) for b in streamed.content if b.type == "tool_use"] == [(c.name, c.input) for c in calls]
    answered = [*ask, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "Sunny, 22 degrees"}]}]
    follow_up = claude.messages.create(model=tiny["tools"], max_tokens=8, messages=answered, tools=[WEATHER], extra_body=GREEDY)
    assert follow_up.role == "assistant" and follow_up.usage.output_tokens > 0
    # the result is in the prompt: the conversation with it counts more tokens than without
    before = claude.messages.count_tokens(model=tiny["tools"], messages=ask, tools=[WEATHER]).input_tokens
    after = claude.messages.count_tokens(model=tiny["tools"], messages=answered, tools=[WEATHER]).input_tokens
    assert after > before
    # tool_choice none: no tools are offered, so nothing is called
    plain = claude.messages.create(model=tiny["tools"], max_tokens=8, messages=ask, tools=[WEATHER],
                                   tool_choice={"type": "none"}, extra_body=GREEDY)
    assert not [b for b in plain.content if b.type == "tool_use"] and plain.stop_reason != "tool_use"


def test_thinking_blocks(claude: anthropic.Anthropic, tiny: dict[str, str]) -> None:
    ask: list[Any] = [{"role": "user", "content": "hello"}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    message = claude.messages.create(model=tiny["thinker"], max_tokens=12, messages=ask, thinking=thinking, extra_body=GREEDY)
    assert message.content[0].type == "thinking" and message.content[0].thinking
    with claude.messages.stream(model=tiny["thinker"], max_tokens=12, messages=ask, thinking=thinking, extra_body=GREEDY) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "thinking_delta" in deltas and final.content[0].type == "thinking"
    assert final.content[0].thinking == message.content[0].thinking
    off = claude.messages.create(model=tiny["thinker"], max_tokens=12, messages=ask, thinking={"type": "disabled"}, extra_body=GREEDY)
    assert [b.type for b in off.content] == ["text"]


def test_errors(claude: anthropic.Anthropic, smollm2: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=ASK)
    assert missing.value.body == {"type": "error", "error": {"type": "not_found_error", "message": "model 'no-such-model' not found"},
                                  "request_id": missing.value.body["request_id"]}  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match="max_tokens is required and must be positive"):
        claude.messages.create(model=smollm2, max_tokens=0, messages=ASK)
    with pytest.raises(anthropic.BadRequestError, match="Only base64 images are supported"):
        claude.messages.create(model=smollm2, max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}])


def test_tool_choice_any_and_tool_require_a_call(claude: anthropic.Anthropic, tiny: dict[str, str]) -> None:
    """Random weights with a prompt that does not open a call answer in text; ``any`` makes the answer start
    with a call (the constrained tool-call grammar), ``tool`` a call of that tool."""
    ask: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    assert FREE_TEMPLATE != HERMES_TEMPLATE

    def calls(**extra: Any) -> list[tuple[str, Any]]:
        message = claude.messages.create(model=tiny["free"], max_tokens=120, messages=ask, tools=[WEATHER, TIME],
                                         extra_body=GREEDY, **extra)
        found = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
        assert (message.stop_reason == "tool_use") == bool(found)
        return found

    assert calls() == []
    forced = calls(tool_choice={"type": "any"})
    assert forced and all(name in ("get_weather", "get_time") for name, _ in forced)
    chosen = calls(tool_choice={"type": "tool", "name": "get_time"})
    assert chosen and all(name == "get_time" for name, _ in chosen)
    for _, arguments in chosen:
        Draft202012Validator(TIME["input_schema"]).validate(arguments)
