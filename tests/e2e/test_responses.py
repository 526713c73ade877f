"""``/v1/responses`` through the official ``openai`` SDK's ``responses.create`` (and its ``stream``/``parse``
helpers, which check the event sequence), against the real server process: SmolLM2 for plain, streamed and
structured answers, tiny random-weight models for a function call round trip and reasoning items."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from jsonschema import Draft202012Validator
from openai import OpenAI
from pydantic import BaseModel, Field

from tests.e2e.conftest import upload_dir
from tests.e2e.test_anthropic import FREE_TEMPLATE
from tests.e2e.test_thinking import THINKING_TEMPLATE
from tests.e2e.test_tools import HERMES_TEMPLATE
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"  # a short answer (8 tokens) that ends on its own
WEATHER: Any = {"type": "function", "name": "get_weather", "description": "Current weather in a city", "strict": True,
                "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}}, "required": ["city"]}}
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=120)


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600) as client:
        yield client


@pytest.fixture(scope="module")
def tiny(client: ollama.Client, tiny_llama_dir: Path) -> dict[str, str]:
    client.create(model="tiny-responses-base", files=upload_dir(client, tiny_llama_dir))
    client.create(model="tiny-responses-tools", from_="tiny-responses-base", template=HERMES_TEMPLATE)
    client.create(model="tiny-responses-thinker", from_="tiny-responses-base", template=THINKING_TEMPLATE)
    client.create(model="tiny-responses-free", from_="tiny-responses-base", template=FREE_TEMPLATE)
    return {"tools": "tiny-responses-tools", "thinker": "tiny-responses-thinker", "free": "tiny-responses-free"}


def test_plain(oai: OpenAI, http: httpx.Client, smollm2: str) -> None:
    response = oai.responses.create(model=smollm2, input=QUESTION, instructions="You are concise.", temperature=0,
                                    max_output_tokens=400)
    assert response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    assert response.model == smollm2 and response.instructions == "You are concise." and response.output_text
    usage = response.usage
    assert usage is not None and usage.input_tokens > 10 and 0 < usage.output_tokens <= 400
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    native = http.post("/api/chat", json={"model": smollm2, "stream": False, "options": {"temperature": 0, "num_predict": 400},
                                          "messages": [{"role": "system", "content": "You are concise."},
                                                       {"role": "user", "content": QUESTION}]}).json()
    assert native["message"]["content"] == response.output_text
    cut = oai.responses.create(model=smollm2, input=QUESTION, temperature=0, max_output_tokens=5)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens" and cut.usage is not None and cut.usage.output_tokens == 5


def test_streamed(oai: OpenAI, smollm2: str) -> None:
    whole = oai.responses.create(model=smollm2, input="Say hi.", temperature=0, max_output_tokens=300)
    events = list(oai.responses.create(model=smollm2, input="Say hi.", temperature=0, max_output_tokens=300, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    with oai.responses.stream(model=smollm2, input="Say hi.", temperature=0, max_output_tokens=300) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()  # the SDK's accumulator checks every item's identity and order
    assert final.output_text == whole.output_text and final.status == "completed"


def test_structured(oai: OpenAI, smollm2: str) -> None:
    response = oai.responses.create(
        model=smollm2, input="Give the name and age of a person as JSON.", temperature=0, max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}},
    )
    Draft202012Validator(PERSON).validate(json.loads(response.output_text))
    assert response.text is not None and response.text.format is not None and response.text.format.type == "json_schema"
    parsed = oai.responses.parse(model=smollm2, input="Give the name and age of a person.", temperature=0,
                                 max_output_tokens=60, text_format=Person)
    assert isinstance(parsed.output_parsed, Person)


def test_function_call_round_trip(oai: OpenAI, tiny: dict[str, str]) -> None:
    ask: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    response = oai.responses.create(model=tiny["tools"], input=ask, tools=[WEATHER], temperature=0, max_output_tokens=80)
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls
    for call in calls:
        assert call.name == "get_weather" and call.call_id.startswith("call_") and call.status == "completed"
        Draft202012Validator(WEATHER["parameters"]).validate(json.loads(call.arguments))
    events = list(oai.responses.create(model=tiny["tools"], input=ask, tools=[WEATHER], temperature=0, max_output_tokens=80,
                                       stream=True))
    assert [e.delta for e in events if e.type == "response.function_call_arguments.delta"] == [c.arguments for c in calls]
    final = events[-1]
    assert final.type in ("response.completed", "response.incomplete")  # random weights may write until the budget ends
    assert [(i.name, i.arguments) for i in final.response.output if i.type == "function_call"] == [(c.name, c.arguments) for c in calls]
    history = [*ask, *[c.model_dump(exclude_none=True) for c in calls],
               *[{"type": "function_call_output", "call_id": c.call_id, "output": "Sunny, 22 degrees"} for c in calls]]
    follow_up = oai.responses.create(model=tiny["tools"], input=history, tools=[WEATHER], temperature=0, max_output_tokens=8)
    assert follow_up.status in ("completed", "incomplete") and follow_up.usage is not None and response.usage is not None
    assert follow_up.usage.input_tokens > response.usage.input_tokens  # the calls and their results are in the prompt
    plain = oai.responses.create(model=tiny["tools"], input=ask, tools=[WEATHER], tool_choice="none", temperature=0,
                                 max_output_tokens=8)
    assert not [i for i in plain.output if i.type == "function_call"]


def test_tool_choice_required_and_function(oai: OpenAI, tiny: dict[str, str]) -> None:
    """Random weights with a prompt that does not open a call answer in text; ``required`` makes the answer
    start with a call (the constrained tool-call grammar), a named function a call of that function."""
    def calls(**extra: Any) -> list[str]:
        response = oai.responses.create(model=tiny["free"], input="What is the weather in Paris?", tools=[WEATHER],
                                        temperature=0, max_output_tokens=120, **extra)
        return [item.name for item in response.output if item.type == "function_call"]

    assert calls() == []
    assert calls(tool_choice="required")
    assert set(calls(tool_choice={"type": "function", "name": "get_weather"})) == {"get_weather"}


def test_reasoning_item(oai: OpenAI, tiny: dict[str, str]) -> None:
    response = oai.responses.create(model=tiny["thinker"], input="hello", temperature=0, max_output_tokens=12,
                                    reasoning={"effort": "high"})
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary and reasoning.summary[0].text
    events = list(oai.responses.create(model=tiny["thinker"], input="hello", temperature=0, max_output_tokens=12,
                                       reasoning={"effort": "high"}, stream=True))
    assert "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta") == reasoning.summary[0].text


def test_errors(oai: OpenAI, smollm2: str) -> None:
    with pytest.raises(openai.NotFoundError, match="model 'no-such-model' not found"):
        oai.responses.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError, match="previous_response_id is not supported"):
        oai.responses.create(model=smollm2, input="hi", previous_response_id="resp_123")
    with pytest.raises(openai.BadRequestError, match="unknown input item type"):
        oai.responses.create(model=smollm2, input=[{"type": "bogus"}])  # type: ignore[list-item]
