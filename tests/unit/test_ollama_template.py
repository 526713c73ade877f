"""Ollama's prompt building on Go templates, table-driven.

The templates are written here by hand in the style of the ones Ollama's library ships (ChatML,
Llama 3 with tools, Mistral with [AVAILABLE_TOOLS], Gemma, Phi-3, Qwen 2.5 with <tool_call>, a legacy
System/Prompt/Response template, fill-in-the-middle, a thinking template). Expected prompts were
checked against Ollama's own ``template.Execute`` (Go), with ollama#18391 applied so that
``{{ .Function }}`` prints JSON (see ``ollama_values.py``).
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from ollama_torch.templates.gotemplate import ExecError, TemplateError
from ollama_torch.templates.inspect import thinking_tags, tool_call_tag
from ollama_torch.templates.ollama import OllamaTemplate, Values, collate, think_fields
from ollama_torch.templates.prompt import chat_prompt, image_tagged

CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

LLAMA3_TOOLS = """{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

You can call these functions. Reply with JSON {"name": function name, "parameters": arguments}.
{{- range .Tools }}
{{ . }}
{{- end }}
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}

{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}
{{- if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

MISTRAL_TOOLS = """{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}
{{- if and $.Tools (le (len (slice $.Messages $i)) 2) }}[AVAILABLE_TOOLS] {{ json $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ if and $.System (eq (len (slice $.Messages $i)) 1) }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}
{{- else if .ToolCalls }}[TOOL_CALLS] [
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
{{- end }}]
{{- end }}</s>
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ .Content }}} [/TOOL_RESULTS]
{{- end }}
{{- end }}"""

GEMMA = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""

PHI3 = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|{{ .Role }}|>
{{ .Content }}
{{- if $last }}
{{- if ne .Role "assistant" }}<|end|>
<|assistant|>
{{ end }}
{{- else }}<|end|>
{{ end }}
{{- end }}"""

QWEN25 = """{{- if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""

LEGACY = """{{ if .System }}### System:
{{ .System }}

{{ end }}{{ if .Prompt }}### User:
{{ .Prompt }}

{{ end }}### Assistant:
{{ .Response }}

"""

LEGACY_NO_RESPONSE = "[INST] {{ if .System }}<<SYS>>{{ .System }}<</SYS>> {{ end }}{{ .Prompt }} [/INST]"

FIM = """{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>
{{- else }}{{ range .Messages }}{{ .Role }}: {{ .Content }}
{{ end }}assistant:{{ end }}"""

THINKING = """{{- $lastUser := -1 }}{{ range $i, $m := .Messages }}{{ if eq .Role "user" }}{{ $lastUser = $i }}{{ end }}{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "system" }}<|system|>{{ .Content }}
{{ else if eq .Role "user" }}<|user|>{{ .Content }}
{{ else if eq .Role "assistant" }}<|assistant|>
{{- if and $.IsThinkSet (gt $i $lastUser) .Thinking }}<think>{{ .Thinking }}</think>{{ end }}
{{- .Content }}{{ if not $last }}
{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|assistant|>
{{- if and $.IsThinkSet (not $.Think) }}<think></think>{{ else if $.Think }}<think level="{{ $.ThinkLevel }}">{{ end }}
{{- end }}
{{- end }}"""

TEMPLATES = {
    "chatml": CHATML,
    "llama3": LLAMA3_TOOLS,
    "mistral": MISTRAL_TOOLS,
    "gemma": GEMMA,
    "phi3": PHI3,
    "qwen25": QWEN25,
    "legacy": LEGACY,
    "legacy_no_response": LEGACY_NO_RESPONSE,
    "fim": FIM,
    "thinking": THINKING,
}

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather <now>",
            "parameters": {
                "type": "object",
                "properties": {
                    "unit": {"type": "string", "enum": ["c", "f"]},
                    "city": {"type": "string", "description": "The city"},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": ["number", "null"]},
                    "b": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                },
            },
        },
    },
]

MULTI: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello, how are you?"},
    {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
    {"role": "user", "content": "I'd like to show off how chat templating works!"},
]
OPEN: list[dict[str, Any]] = [*MULTI, {"role": "assistant", "content": "Sure, here"}]
TOOL_TURN: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c", "days": 3}}}
        ],
    },
    {"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"},
]
ASK = [{"role": "user", "content": "Weather in Paris?"}]
THINK_TURNS = [
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4", "thinking": "add them"},
    {"role": "user", "content": "and 3+3?"},
]
THINK_OPEN = [
    {"role": "user", "content": "3+3?"},
    {"role": "assistant", "content": "It is", "thinking": "easy"},
]
MESSAGES: dict[str, list[dict[str, Any]]] = {
    "multi": MULTI,
    "open": OPEN,
    "tool_turn": TOOL_TURN,
    "ask": ASK,
    "think": THINK_TURNS,
    "think_open": THINK_OPEN,
}

LLAMA3_TOOL_TURN = """<|start_header_id|>system<|end_header_id|>

Be brief.

You can call these functions. Reply with JSON {"name": function name, "parameters": arguments}.
{"type":"function","function":{"name":"get_weather","description":"Get the weather \\u003cnow\\u003e","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"The city"},"unit":{"type":"string","enum":["c","f"]}}}}}
{"type":"function","function":{"name":"add","description":"","parameters":{"type":"object","properties":{"a":{"type":["number","null"]},"b":{"anyOf":[{"type":"integer"},{"type":"string"}]}}}}}<|eot_id|><|start_header_id|>user<|end_header_id|>

Weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

{"name": "get_weather", "parameters": {"city":"Paris","days":3,"unit":"c"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>

{"temp": 21}<|eot_id|><|start_header_id|>assistant<|end_header_id|>

"""

QWEN_TOOL_TURN = """<|im_start|>system
Be brief.

# Tools

<tools>
{"type": "function", "function": {"name":"get_weather","description":"Get the weather \\u003cnow\\u003e","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"The city"},"unit":{"type":"string","enum":["c","f"]}}}}}
{"type": "function", "function": {"name":"add","description":"","parameters":{"type":"object","properties":{"a":{"type":["number","null"]},"b":{"anyOf":[{"type":"integer"},{"type":"string"}]}}}}}
</tools>

For each function call, return a json object within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
<|im_start|>user
Weather in Paris?<|im_end|>
<|im_start|>assistant
<tool_call>
{"name": "get_weather", "arguments": {"city":"Paris","days":3,"unit":"c"}}
</tool_call><|im_end|>
<|im_start|>user
<tool_response>
{"temp": 21}
</tool_response><|im_end|>
<|im_start|>assistant
"""

MULTI_CHATML = """<|im_start|>system
You are a helpful assistant.<|im_end|>
<|im_start|>user
Hello, how are you?<|im_end|>
<|im_start|>assistant
I'm doing great. How can I help you today?<|im_end|>
<|im_start|>user
I'd like to show off how chat templating works!<|im_end|>
"""

MISTRAL_TOOLS_BLOCK = (
    '[AVAILABLE_TOOLS] [{"type":"function","function":{"name":"get_weather","description":"Get the weather \\u003cnow\\u003e",'
    '"parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"The city"},'
    '"unit":{"type":"string","enum":["c","f"]}}}}},{"type":"function","function":{"name":"add","description":"",'
    '"parameters":{"type":"object","properties":{"a":{"type":["number","null"]},"b":{"anyOf":[{"type":"integer"},'
    '{"type":"string"}]}}}}}][/AVAILABLE_TOOLS]'
)

# (template, messages, tools, think, expected prompt)
CHAT_CASES: list[tuple[str, str, bool, Any, str]] = [
    ("chatml", "multi", False, None, MULTI_CHATML + "<|im_start|>assistant\n"),
    (
        "chatml",
        "open",
        False,
        None,
        MULTI_CHATML + "<|im_start|>assistant\nSure, here<|im_end|>\n<|im_start|>assistant\n",
    ),
    ("llama3", "tool_turn", True, None, LLAMA3_TOOL_TURN),
    (
        "llama3",
        "multi",
        False,
        None,
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello, how are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nI'm doing great. How can I help you today?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nI'd like to show off how chat templating works!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    ("mistral", "ask", True, None, MISTRAL_TOOLS_BLOCK + "[INST] Weather in Paris?[/INST]"),
    (
        "mistral",
        "tool_turn",
        True,
        None,
        '[INST] Weather in Paris?[/INST][TOOL_CALLS] [{"name": "get_weather", "arguments": {"city":"Paris","days":3,"unit":"c"}}]</s>'
        '[TOOL_RESULTS] {"content": {"temp": 21}} [/TOOL_RESULTS]',
    ),
    (
        "mistral",
        "multi",
        False,
        None,
        "[INST] Hello, how are you?[/INST] I'm doing great. How can I help you today?</s>"
        "[INST] You are a helpful assistant.\n\nI'd like to show off how chat templating works![/INST]",
    ),
    (
        "gemma",
        "multi",
        False,
        None,
        "<start_of_turn>user\nYou are a helpful assistant.<end_of_turn>\n<start_of_turn>user\nHello, how are you?<end_of_turn>\n"
        "<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
        "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>\n<start_of_turn>model\n",
    ),
    (
        "gemma",
        "open",
        False,
        None,
        "<start_of_turn>user\nYou are a helpful assistant.<end_of_turn>\n<start_of_turn>user\nHello, how are you?<end_of_turn>\n"
        "<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
        "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>\n<start_of_turn>model\nSure, here",
    ),
    (
        "phi3",
        "multi",
        False,
        None,
        "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello, how are you?<|end|>\n"
        "<|assistant|>\nI'm doing great. How can I help you today?<|end|>\n"
        "<|user|>\nI'd like to show off how chat templating works!<|end|>\n<|assistant|>\n",
    ),
    (
        "phi3",
        "open",
        False,
        None,
        "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello, how are you?<|end|>\n"
        "<|assistant|>\nI'm doing great. How can I help you today?<|end|>\n"
        "<|user|>\nI'd like to show off how chat templating works!<|end|>\n<|assistant|>\nSure, here",
    ),
    ("qwen25", "tool_turn", True, None, QWEN_TOOL_TURN),
    ("qwen25", "multi", False, None, MULTI_CHATML + "<|im_start|>assistant\n"),
    (
        "legacy",
        "multi",
        False,
        None,
        "### System:\nYou are a helpful assistant.\n\n### User:\nHello, how are you?\n\n"
        "### Assistant:\nI'm doing great. How can I help you today?\n\n"
        "### User:\nI'd like to show off how chat templating works!\n\n### Assistant:\n",
    ),
    (
        "legacy",
        "open",
        False,
        None,
        "### System:\nYou are a helpful assistant.\n\n### User:\nHello, how are you?\n\n"
        "### Assistant:\nI'm doing great. How can I help you today?\n\n"
        "### User:\nI'd like to show off how chat templating works!\n\n### Assistant:\nSure, here",
    ),
    (
        "legacy_no_response",
        "multi",
        False,
        None,
        "[INST] <<SYS>>You are a helpful assistant.<</SYS>> Hello, how are you? [/INST]"
        "I'm doing great. How can I help you today?[INST] I'd like to show off how chat templating works! [/INST]",
    ),
    ("fim", "ask", False, None, "user: Weather in Paris?\nassistant:"),
    (
        "thinking",
        "think",
        False,
        True,
        '<|user|>2+2?\n<|assistant|>4\n<|user|>and 3+3?\n<|assistant|><think level="medium">',
    ),
    (
        "thinking",
        "think",
        False,
        "high",
        '<|user|>2+2?\n<|assistant|>4\n<|user|>and 3+3?\n<|assistant|><think level="high">',
    ),
    (
        "thinking",
        "think",
        False,
        False,
        "<|user|>2+2?\n<|assistant|>4\n<|user|>and 3+3?\n<|assistant|><think></think>",
    ),
    ("thinking", "think", False, None, "<|user|>2+2?\n<|assistant|>4\n<|user|>and 3+3?\n<|assistant|>"),
    ("thinking", "think_open", False, True, "<|user|>3+3?\n<|assistant|><think>easy</think>It is"),
]


@pytest.mark.parametrize(
    ("template", "messages", "tools", "think", "want"),
    CHAT_CASES,
    ids=[f"{c[0]}-{c[1]}-tools={c[2]}-think={c[3]}" for c in CHAT_CASES],
)
def test_render_chat(template: str, messages: str, tools: bool, think: Any, want: str) -> None:
    t = OllamaTemplate.parse(TEMPLATES[template])
    assert t.render_chat(MESSAGES[messages], tools=TOOLS if tools else None, think=think) == want


def test_legacy_and_messages_templates_render_alike() -> None:
    # Ollama's TestExecuteWithMessages: three spellings of one Mistral template, one prompt.
    spellings = [
        "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] ",
        "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] {{ .Response }}",
        "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}\n{{- range .Messages }}\n"
        '{{- if eq .Role "user" }}{{ .Content }}[/INST] {{ else if eq .Role "assistant" }}{{ .Content }}[INST] {{ end }}\n'
        "{{- end }}",
    ]
    msgs = [
        {"role": "system", "content": "You are a helpful assistant!"},
        {"role": "user", "content": "Hello friend!"},
        {"role": "assistant", "content": "Hello human!"},
        {"role": "user", "content": "What is your name?"},
    ]
    want = "[INST] You are a helpful assistant!\n\nHello friend![/INST] Hello human![INST] What is your name?[/INST] "
    for text in spellings:
        assert OllamaTemplate.parse(text).render_chat(msgs) == want


LEGACY_CASES: list[tuple[str, list[dict[str, str]], str]] = [
    # everything after the first .Response of the last turn is cut; the response stays open
    (
        "U:{{ .Prompt }} A:{{ .Response }}</s>",
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        "U:a A:b</s>U:c A:",
    ),
    (
        "U:{{ .Prompt }} A:{{ .Response }}</s>",
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "par"}],
        "U:a A:par",
    ),
    # a system message after a user turn starts a new turn; tool messages are skipped
    (
        "{{ if .System }}S:{{ .System }} {{ end }}U:{{ .Prompt }} A:{{ .Response }}|",
        [
            {"role": "user", "content": "u1"},
            {"role": "system", "content": "s"},
            {"role": "tool", "content": "ignored"},
            {"role": "user", "content": "u2"},
        ],
        "U:u1 A:|S:s U:u2 A:",
    ),
    # consecutive messages of one role are merged with a blank line
    (
        "U:{{ .Prompt }} A:{{ .Response }}|",
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        "U:a\n\nb A:",
    ),
    # a command that loses its arguments to the cut takes its action with it
    ('A:{{ .Response | printf "%s" }}<end>', [{"role": "user", "content": "x"}], "A:"),
    # the cut keeps the branch it happens in; no .Response in the text: Ollama appends one
    (
        "{{ if .Prompt }}U:{{ .Prompt }} A:{{ .Response }}<eos>{{ end }} tail",
        [{"role": "user", "content": "q"}],
        "U:q A:",
    ),
    ("<{{ .Prompt }}>", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}], "<q>r"),
]


@pytest.mark.parametrize(("text", "messages", "want"), LEGACY_CASES, ids=[c[0] for c in LEGACY_CASES])
def test_legacy_rendering(text: str, messages: list[dict[str, str]], want: str) -> None:
    assert OllamaTemplate.parse(text).render_chat(messages) == want


def test_legacy_last_turn_has_no_ollama_functions() -> None:
    # Ollama re-wraps the cut tree in a bare template: its functions are gone in the last turn.
    t = OllamaTemplate.parse("{{ json .Prompt }} A:{{ .Response }}</s>")
    with pytest.raises(ExecError, match='"json" is not a defined function'):
        t.render_chat([{"role": "user", "content": "q"}])


def test_suffix_renders_prompt_and_suffix_only() -> None:
    t = OllamaTemplate.parse(FIM)
    assert t.uses_suffix
    assert t.render_generate("def add(", suffix="return x", system="ignored") == (
        "<|fim_prefix|>def add(<|fim_suffix|>return x<|fim_middle|>"
    )
    assert t.render_generate("hello", system="sys") == "system: sys\nuser: hello\nassistant:"
    # Ollama's TestExecuteWithSuffix
    t = OllamaTemplate.parse(
        "{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n{{- else }}{{ .Prompt }}\n{{- end }}"
    )
    assert t.render_chat([{"role": "user", "content": "hello"}]) == "hello"
    assert t.execute(Values(prompt="def add(", suffix="return x")) == "<PRE> def add( <SUF>return x <MID>"


def test_render_generate_builds_messages() -> None:
    t = OllamaTemplate.parse(CHATML)
    model_messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    out = t.render_generate("why?", system="be nice", messages=model_messages, images=["aW1n"])
    assert out == (
        "<|im_start|>system\nbe nice<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
        "<|im_start|>user\nwhy?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert OllamaTemplate.default().render_generate("raw text", system="s") == "raw text"


VARS: list[tuple[str, list[str]]] = [
    ("{{ .Prompt }}", ["prompt", "response"]),
    ("{{ .System }} {{ .Prompt }} {{ .Response }}", ["prompt", "response", "system"]),
    (
        "{{ with .Tools }}{{ . }}{{ end }} {{ .System }} {{ .Prompt }}",
        ["prompt", "response", "system", "tools"],
    ),
    ("{{ range .Messages }}{{ .Role }} {{ .Content }}{{ end }}", ["content", "messages", "role"]),
    (
        '{{ range .Messages }}{{ if eq .Role "tool" }}Tool Result: {{ .ToolName }} {{ .Content }}{{ end }}{{ end }}',
        ["content", "messages", "role", "toolname"],
    ),
    ("{{ range $i, $m := $.Messages }}{{ $m.Content }}{{ end }}", ["$", "$m", "content", "messages"]),
    ('{{ define "t" }}{{ .Suffix }}{{ end }}{{ range .Messages }}{{ end }}', ["messages", "suffix"]),
]


@pytest.mark.parametrize(("text", "want"), VARS, ids=[v[0] for v in VARS])
def test_vars(text: str, want: list[str]) -> None:
    assert OllamaTemplate.parse(text).vars() == want


def test_capability_flags() -> None:
    assert OllamaTemplate.parse(LLAMA3_TOOLS).uses_tools
    assert not OllamaTemplate.parse(CHATML).uses_tools
    assert OllamaTemplate.parse(THINKING).uses_thinking
    assert not OllamaTemplate.parse(LEGACY).uses_messages
    assert OllamaTemplate.parse(LEGACY).uses_response


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ .Prompt ", "unclosed action"),
        ('{{define "x"}}{{template "x"}}{{end}}{{template "x"}}', "undefined template specified"),
        ("{{ nope .Prompt }}", 'function "nope" not defined'),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        OllamaTemplate.parse(text)


def test_collate() -> None:
    msgs = [
        {"role": "system", "content": "You are helpful"},
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Hello"},
        {"role": "user", "content": "How are you?"},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        {"role": "tool", "content": "72F", "tool_name": "get_temperature"},
    ]
    system, out = collate(msgs)
    assert system == "You are helpful\n\nBe brief"
    assert [(m["role"], m["content"], m.get("tool_name")) for m in out] == [
        ("system", "You are helpful\n\nBe brief", None),
        ("user", "Hello\n\nHow are you?", None),
        ("tool", "sunny", "get_weather"),
        ("tool", "72F", "get_temperature"),
    ]
    assert msgs[0]["content"] == "You are helpful"  # inputs untouched


def test_tool_call_arguments_print_as_json_and_range_sorted() -> None:
    t = OllamaTemplate.parse(
        "{{- range .Messages }}{{- range .ToolCalls }}{{ .Function.Arguments }}|"
        "{{- range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }};{{- end }}{{- end }}{{- end }}"
    )
    msgs = [
        {
            "role": "assistant",
            "tool_calls": [
                {"function": {"name": "f", "arguments": {"unit": "c", "n": 1234567, "city": "<T>"}}}
            ],
        }
    ]
    # numbers are Go float64s: JSON prints 1234567, %v prints 1.234567e+06
    assert (
        t.render_chat(msgs)
        == '{"city":"\\u003cT\\u003e","n":1234567,"unit":"c"}|city=<T>;n=1.234567e+06;unit=c;'
    )


def test_tool_properties_print_as_json_and_range() -> None:
    t = OllamaTemplate.parse(
        "{{- range .Messages }}{{- end }}{{- range .Tools }}{{ .Function.Parameters.Properties }}|"
        "{{- range $name, $p := .Function.Parameters.Properties }}{{ $name }}:{{ $p.Type }}:{{ toTypeScriptType $p }};{{- end }}{{- end }}"
    )
    assert t.render_chat(ASK, tools=TOOLS[:1]) == (
        '{"city":{"type":"string","description":"The city"},"unit":{"type":"string","enum":["c","f"]}}|'
        "city:string:string;unit:string:string;"
    )
    t = OllamaTemplate.parse(
        "{{ range .Messages }}{{ end }}{{ range .Tools }}{{ range $n, $p := .Function.Parameters.Properties }}"
        "{{ $n }}={{ $p.ToTypeScriptType }};{{ end }}{{ end }}"
    )
    assert t.render_chat(ASK, tools=TOOLS[1:]) == "a=number | null;b=number | string;"


def test_date_functions() -> None:
    t = OllamaTemplate.parse(
        "{{- range .Messages }}{{ .Content }}{{ end }} {{ currentDate }} {{ yesterdayDate }}"
    )
    today = datetime.date.today()
    yesterday = today - datetime.timedelta(days=1)
    assert (
        t.render_chat([{"role": "user", "content": "Hi"}])
        == f"Hi {today.isoformat()} {yesterday.isoformat()}"
    )


def test_think_fields() -> None:
    assert think_fields(None) == (False, "", False)
    assert think_fields(True) == (True, "medium", True)
    assert think_fields(False) == (False, "", True)
    assert think_fields("low") == (True, "low", True)


def test_thinking_tags_and_tool_call_tag() -> None:
    assert thinking_tags(OllamaTemplate.parse(THINKING)) == ("<think>", "</think>")
    assert thinking_tags(OllamaTemplate.parse(CHATML)) == ("", "")
    assert tool_call_tag(OllamaTemplate.parse(QWEN25)) == "<tool_call>"
    assert tool_call_tag(OllamaTemplate.parse(MISTRAL_TOOLS)) == "[TOOL_CALLS] ["
    assert tool_call_tag(OllamaTemplate.parse(LLAMA3_TOOLS)) == "{"
    assert tool_call_tag(OllamaTemplate.parse(CHATML)) == "{"


def test_image_tags() -> None:
    msgs = [
        {"role": "user", "content": "old", "images": ["x"]},
        {"role": "user", "content": "see [img] and", "images": ["a", "b"]},
    ]
    tagged, images = image_tagged(msgs, start=1)
    assert [m["content"] for m in tagged] == ["old", "[img-1]see [img-0] and"]
    assert images == ["a", "b"]


def test_chat_prompt_truncates_oldest_keeping_system_and_last() -> None:
    t = OllamaTemplate.parse(CHATML)
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "one " * 20},
        {"role": "assistant", "content": "two " * 20},
        {"role": "user", "content": "three"},
    ]

    def words(p: str) -> int:
        return len(p.split())

    full = chat_prompt(t, msgs, count_tokens=words, num_ctx=1000)
    assert full.first_kept == 0 and full.prompt == t.render_chat(msgs)
    cut = chat_prompt(t, msgs, count_tokens=words, num_ctx=10)
    assert cut.first_kept == 3
    assert cut.prompt == t.render_chat([msgs[0], msgs[3]])
    off = chat_prompt(t, msgs, count_tokens=words, num_ctx=10, truncate=False)
    assert off.prompt == full.prompt
    with_image = [{"role": "user", "content": "look", "images": ["aW1n"]}]
    p = chat_prompt(t, with_image, count_tokens=words, num_ctx=10, tokens_per_image=768)
    assert p.images == ["aW1n"] and "[img-0]look" in p.prompt
