"""Structured outputs (``format``) through the real server: SmolLM2 and a tiny random-weight Llama, the
official client (Pydantic models round-trip), Ollama's 400s, refusals that name the keyword, streaming and
non-streaming agreeing for a seed, and a JSONSchemaBench subset whose completed outputs must all validate.

With random weights the grammar does all the work: whatever the model "wants", the output is valid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import ollama
import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from tests.e2e.conftest import upload_dir
from tests.e2e.structured_support import dev_schemas, run_many, validate
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                            "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"]}
BOUNDED = {"type": "object", "properties": {
    "id": {"type": "integer", "minimum": 1, "maximum": 999},
    "tag": {"type": "string", "maxLength": 6},
    "ok": {"type": "boolean"},
    "color": {"enum": ["red", "green", "blue"]},
    "scores": {"type": "array", "items": {"type": "number"}, "maxItems": 3}},
    "required": ["id", "tag", "ok", "color", "scores"], "additionalProperties": False}
ASK_PERSON = "Give the name and age of a person as a JSON object."
INVALID = '; expected "json" or a valid JSON Schema object'


@pytest.fixture(scope="module")
def tiny(client: ollama.Client, tiny_llama_dir: Path) -> str:
    client.create(model="tiny-structured", files=upload_dir(client, tiny_llama_dir))
    return "tiny-structured"


def test_json_and_schema_on_generate_and_chat(client: ollama.Client, smollm2: str) -> None:
    opts = {"temperature": 0, "num_predict": 40}
    for fmt in ("json", PERSON):
        gen = client.generate(model=smollm2, prompt=ASK_PERSON, format=fmt, options=opts)
        chat = client.chat(model=smollm2, messages=[{"role": "user", "content": ASK_PERSON}],
                           format=fmt, options=opts)
        for text, reason in ((gen.response or "", gen.done_reason), (chat.message.content or "", chat.done_reason)):
            assert reason == "stop", text
            value = json.loads(text)
            assert isinstance(value, dict)
            if fmt is PERSON:
                Draft202012Validator(PERSON).validate(value)


class Country(BaseModel):
    name: str = Field(max_length=40)
    capital: str = Field(max_length=40)
    languages: list[str] = Field(max_length=3)


class BoundedCountry(BaseModel):
    """``Country`` with every string bounded, so that random weights end too."""

    name: str = Field(max_length=20)
    capital: str = Field(max_length=20)
    languages: list[Annotated[str, Field(max_length=12)]] = Field(max_length=3)


def test_pydantic_model_round_trips(client: ollama.Client, smollm2: str) -> None:
    r = client.chat(model=smollm2, messages=[{"role": "user", "content": "Tell me about Canada."}],
                    format=Country.model_json_schema(), options={"temperature": 0, "num_predict": 80})
    assert r.done_reason == "stop"
    country = Country.model_validate_json(r.message.content or "")
    assert country.name and len(country.languages) <= 3
    assert list(json.loads(r.message.content or "")) == list(Country.model_fields)  # no keys of its own


def test_object_schemas_take_only_their_listed_keys(server: ServerProcess, tiny: str) -> None:
    """A schema listing ``properties`` without ``additionalProperties`` (every pydantic model) gets exactly
    those keys, as llama.cpp reads it: random weights added keys of their own before (JSON Schema allows
    them), the way a small model wrote extra ``country``/``capital_city`` keys and looped to ``length``."""
    schema = BoundedCountry.model_json_schema()
    with httpx.Client(base_url=server.url, timeout=300) as http:
        for seed in range(4):
            body = {"model": tiny, "messages": [{"role": "user", "content": "Canada?"}], "format": schema,
                    "stream": False, "options": {"seed": seed, "num_predict": 400}}
            data = http.post("/api/chat", json=body).json()
            assert data["done_reason"] == "stop", data
            assert list(json.loads(data["message"]["content"])) == ["name", "capital", "languages"], data


def test_stream_and_non_stream_agree_for_a_seed(client: ollama.Client, smollm2: str) -> None:
    opts = {"temperature": 1.0, "seed": 11, "num_predict": 40}
    whole = client.generate(model=smollm2, prompt="A person:", format=PERSON, options=opts)
    parts = list(client.generate(model=smollm2, prompt="A person:", format=PERSON, options=opts, stream=True))
    assert whole.response == "".join(p.response or "" for p in parts)
    assert whole.done_reason == parts[-1].done_reason


@pytest.mark.parametrize(("fmt", "message"), [
    ("yaml", 'invalid format: "\\"yaml\\""' + INVALID),
    (42, 'invalid format: "42"' + INVALID),
    ([1], 'invalid format: "[1]"' + INVALID),
    ({"type": "object", "not": {"required": ["a"]}}, 'keyword "not" is not supported (at #)'),
    ({"type": "array", "uniqueItems": True}, 'keyword "uniqueItems" is not supported (at #)'),
    ({"type": "object", "properties": {"d": {"type": "string", "format": "color"}}},
     '"format": "color" is not supported'),
])
def test_bad_formats_are_400s(http: httpx.Client, smollm2: str, fmt: Any, message: str) -> None:
    for path, body in (("/api/generate", {"prompt": "x"}), ("/api/chat", {"messages": [{"role": "user", "content": "x"}]})):
        r = http.post(path, json={"model": smollm2, "format": fmt, **body})
        assert r.status_code == 400, r.text
        assert message in r.json()["error"]


def test_random_weights_terminate_with_valid_json(server: ServerProcess, tiny: str) -> None:
    """Bounded schema + bounded whitespace: every seeded sample of random weights ends, and validates."""
    with httpx.Client(base_url=server.url, timeout=300) as http:
        for seed in range(6):
            body = {"model": tiny, "prompt": "x", "format": BOUNDED, "stream": False,
                    "options": {"seed": seed, "num_predict": 400}}
            data = http.post("/api/generate", json=body).json()
            assert data["done_reason"] == "stop", data
            assert validate(BOUNDED, data["response"]) is None, data["response"]


THINKING_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if .Think }}<think>
{{ end }}"""


def test_format_applies_after_thinking(client: ollama.Client, tiny: str) -> None:
    """A thinking model reasons freely, then the JSON follows (Ollama's "structured outputs restart", done
    here as one grammar); with ``think: false`` the grammar applies from the first token."""
    client.create(model="tiny-structured-thinker", from_=tiny, template=THINKING_TEMPLATE)
    ask = [{"role": "user", "content": "x"}]
    off = client.chat(model="tiny-structured-thinker", messages=ask, format=BOUNDED, think=False,
                      options={"seed": 0, "num_predict": 400})
    assert off.done_reason == "stop" and not off.message.thinking
    assert validate(BOUNDED, off.message.content or "") is None
    # The prompt opened <think>: random weights never close it, so all of the output is free reasoning.
    on = client.chat(model="tiny-structured-thinker", messages=ask, format=BOUNDED, options={"seed": 0, "num_predict": 40})
    assert on.done_reason == "length" and on.message.thinking and on.message.content == ""


@pytest.mark.parametrize("model_fixture", ["tiny", "smollm2"])
def test_jsonschemabench_subset(server: ServerProcess, request: pytest.FixtureRequest, model_fixture: str) -> None:
    """A few dev schemas per split, concurrently: accepted ones run, refused ones say why, and every output
    that completed (``done_reason: stop``) validates."""
    model = request.getfixturevalue(model_fixture)
    per_split, num_predict = (2, 128) if model_fixture == "tiny" else (1, 40)
    outcomes = run_many(server.url, model, dev_schemas(per_split), num_predict=num_predict)
    assert not [o for o in outcomes if o.status == "error"]
    for o in outcomes:
        if o.status == "refused":
            assert o.detail.startswith(("unsupported JSON schema in format: ", "invalid JSON schema in format: "))
        elif o.status == "stop":
            assert o.valid, (o.schema.name, o.detail, o.text)
    assert sum(o.status != "refused" for o in outcomes) >= 0.8 * len(outcomes)
    assert sum(o.status == "stop" for o in outcomes) >= 3
