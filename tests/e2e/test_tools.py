"""Tool calling through the real server: tools rendered by Go (``.Tools``) and Jinja (``tools=``) templates,
tool results (``role: tool`` + ``tool_name``) rendered back, calls parsed into ``message.tool_calls`` and
streamed as soon as each is complete, and the constrained-call extension: with a template whose
generation prompt opens a call, even random weights produce a call to a known tool whose arguments
validate against its schema.

Rich schemas are sent with plain HTTP: the official client's ``Tool`` model drops keywords such as
``minimum`` or ``maxLength`` (as Ollama's Go structs do), which would leave nothing to check.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from jsonschema import Draft202012Validator

from tests.e2e.conftest import upload_dir

pytestmark = pytest.mark.slow

HERMES_TEMPLATE = """{{- if .Tools }}<|im_start|>system
# Tools
<tools>
{{- range .Tools }}
{{ . }}
{{- end }}
</tools>
Call a function with <tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call><|im_end|>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}
{{- range .ToolCalls }}<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
</tool_call>
{{- end }}<|im_end|>
{{ else if eq .Role "tool" }}<|im_start|>user
<tool_response name="{{ .ToolName }}">{{ .Content }}</tool_response><|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
{{ if .Tools }}<tool_call>
{{ end }}"""

MISTRAL_TEMPLATE = """{{- range .Messages }}
{{- if eq .Role "user" }}[INST] {{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .ToolCalls }}[TOOL_CALLS][{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}{{ end }}]
{{- else }} {{ .Content }}</s>{{ end }}
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ .Content }}}[/TOOL_RESULTS]
{{- end }}
{{- end }}{{ if .Tools }}[AVAILABLE_TOOLS] {{ json .Tools }}[/AVAILABLE_TOOLS][TOOL_CALLS]{{ end }}"""

JINJA_TEMPLATE = """{%- if tools %}<|im_start|>system
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{%- for tc in message.tool_calls %}
<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response name="{{ message.name }}">{{ message.content }}</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if tools %}<tool_call>
{% endif %}{% endif %}"""

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string", "maxLength": 16, "description": "The city"},
               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone",
        "parameters": {"type": "object", "properties": {
            "utc_offset": {"type": "integer", "minimum": -12, "maximum": 14}}, "required": ["utc_offset"]}}}
TOOLS: list[dict[str, Any]] = [WEATHER, TIME]
VALIDATORS = {t["function"]["name"]: Draft202012Validator(t["function"]["parameters"]) for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def tiny_models(client: ollama.Client, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    client.create(model="tiny-tools-base", files=upload_dir(client, tiny_llama_dir))
    client.create(model="tiny-hermes", from_="tiny-tools-base", template=HERMES_TEMPLATE)
    client.create(model="tiny-mistral", from_="tiny-tools-base", template=MISTRAL_TEMPLATE)
    jinja_dir = tmp_path_factory.mktemp("tiny-jinja-tools")
    shutil.copytree(tiny_llama_dir, jinja_dir, dirs_exist_ok=True)
    config = json.loads((jinja_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = JINJA_TEMPLATE
    (jinja_dir / "tokenizer_config.json").write_text(json.dumps(config))
    (jinja_dir / "chat_template.jinja").unlink(missing_ok=True)
    client.create(model="tiny-jinja-tools", files=upload_dir(client, jinja_dir))
    return {"hermes": "tiny-hermes", "mistral": "tiny-mistral", "jinja": "tiny-jinja-tools"}


def chat(http: httpx.Client, model: str, **body: Any) -> list[dict[str, Any]]:
    """The streamed chunks of one /api/chat request."""
    lines = []
    with http.stream("POST", "/api/chat", json={"model": model, "messages": ASK, "tools": TOOLS, **body}) as r:
        assert r.status_code == 200, r.read()
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert "error" not in lines[-1], lines[-1]
    return lines


def calls_of(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for chunk in chunks for c in chunk["message"].get("tool_calls", [])]


def assert_valid_calls(calls: list[dict[str, Any]]) -> None:
    assert calls
    for i, call in enumerate(calls):
        assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"]) and call["function"]["index"] == i
        VALIDATORS[call["function"]["name"]].validate(call["function"]["arguments"])


@pytest.mark.parametrize("kind", ["hermes", "jinja", "mistral"])
def test_random_weights_make_valid_calls(http: httpx.Client, tiny_models: dict[str, str], kind: str) -> None:
    for seed in range(4):
        chunks = chat(http, tiny_models[kind], options={"seed": seed, "num_predict": 120})
        assert_valid_calls(calls_of(chunks))
        first = next(i for i, c in enumerate(chunks) if c["message"].get("tool_calls"))
        assert chunks[first]["message"]["content"] == "" and not chunks[first]["done"]  # streamed, not at the end
        # text after the call (random here) stays content
        folded = http.post("/api/chat", json={"model": tiny_models[kind], "messages": ASK, "tools": TOOLS, "stream": False,
                                              "options": {"seed": seed, "num_predict": 120}}).json()
        assert folded["message"]["content"] == "".join(c["message"]["content"] for c in chunks)
        assert [c["function"] for c in folded["message"]["tool_calls"]] == [c["function"] for c in calls_of(chunks)]


def test_the_constraint_can_be_switched_off(http: httpx.Client, tiny_models: dict[str, str]) -> None:
    chunks = chat(http, tiny_models["hermes"], options={"seed": 0, "num_predict": 60, "tool_grammar": False})
    assert not calls_of(chunks)  # random weights, unconstrained: no well-formed call
    assert "".join(c["message"]["content"] for c in chunks)


def test_tools_and_results_are_rendered(http: httpx.Client, tiny_models: dict[str, str]) -> None:
    history = [*ASK,
               {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
               {"role": "tool", "content": "18 degrees", "tool_name": "get_weather"}]
    for model in (tiny_models["hermes"], tiny_models["jinja"]):
        # one tool: the tiny model's 512-token context would otherwise drop the history (Ollama's truncation)
        body = {"model": model, "messages": history, "tools": [WEATHER], "stream": False, "_debug_render_only": True}
        rendered = http.post("/api/chat", json=body).json()["_debug_info"]["rendered_template"]
        assert '"name":"get_weather","description":"Currentweatherinacity"' in rendered.replace(" ", "")
        assert re.search(r'<tool_call>\n\{"name": "get_weather", "arguments": \{"city": ?"Paris"\}\}\n</tool_call>', rendered)
        assert '<tool_response name="get_weather">18 degrees</tool_response>' in rendered
        assert rendered.endswith("<|im_start|>assistant\n<tool_call>\n")


def test_official_client_with_a_python_function(client: ollama.Client, tiny_models: dict[str, str]) -> None:
    def switch_light(on: bool) -> str:
        """Turn the light on or off.

        Args:
          on: True for on
        """
        return "done"

    ask = [{"role": "user", "content": "Lights on, please."}]
    r = client.chat(model=tiny_models["hermes"], messages=ask, tools=[switch_light], options={"seed": 1, "num_predict": 60})
    calls = r.message.tool_calls or []
    assert calls and calls[0].function.name == "switch_light" and isinstance(calls[0].function.arguments["on"], bool)
    result = {"role": "tool", "content": switch_light(**calls[0].function.arguments), "tool_name": "switch_light"}
    follow = client.chat(model=tiny_models["hermes"], tools=[switch_light], options={"seed": 1, "num_predict": 4},
                         messages=[*ask, r.message, result])
    assert follow.done


def test_smollm2_calls_the_tool(client: ollama.Client, http: httpx.Client, smollm2: str) -> None:
    client.create(model="smol-tools", from_=smollm2, template=HERMES_TEMPLATE)
    chunks = chat(http, "smol-tools", options={"temperature": 0, "num_predict": 48})
    calls = calls_of(chunks)
    assert_valid_calls(calls)
    assert calls[0]["function"]["name"] == "get_weather"
