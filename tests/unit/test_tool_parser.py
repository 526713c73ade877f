"""Tool-call parsing: the cases of Ollama's tools/tools_test.go and tools/template_test.go as tables, real
outputs of each format, and every case re-run split at every point, token by token and at random splits.

Where our answer differs from Ollama's on purpose (text Ollama drops silently), the case says so.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_torch.tools import (
    BARE_JSON,
    HERMES,
    LLAMA3,
    MISTRAL,
    FormatKind,
    ToolCallParseError,
    ToolCallParser,
    ToolFormat,
    detect_tool_format,
    find_tag,
)
from ollama_torch.tools.generic import find_arguments
from ollama_torch.tools.gotag import go_template_tag
from ollama_torch.tools.jsonscan import JsonScanner, ScanStatus

TOOLS = ["get_temperature", "get_conditions", "say_hello", "say_hello_world", "get_address", "add",
         "get_current_weather"]
ID = re.compile(r"call_[a-z0-9]{8}")

# The Go templates of Ollama's TestParser; detecting their format is part of each case.
GO = {
    "qwen": '{{if .ToolCalls}}<tool_call>{{range .ToolCalls}}{"name": "{{.Function.Name}}", "arguments": '
            "{{.Function.Arguments}}}{{end}}</tool_call>{{end}}",
    "deepseek": "{{if .ToolCalls}}<|tool▁calls▁begin|>{{range .ToolCalls}}<|tool▁call▁begin|>function<|tool▁sep|>"
                'get_current_weather\n```json\n{"location": "Tokyo"}\n```<|tool▁call▁end|>{{end}}'
                "<|tool▁calls▁end|><|end▁of▁sentence|>{{end}}",
    "json": '{{if .ToolCalls}}{{range .ToolCalls}}{"name": "{{.Function.Name}}", "arguments": '
            "{{.Function.Arguments}}}{{end}}{{end}}",
    "mistral": '{{if .ToolCalls}}[TOOL_CALLS] [{{range .ToolCalls}}{"name": "{{.Function.Name}}", "arguments": '
               "{{.Function.Arguments}}}{{end}}][/TOOL_CALLS]{{end}}",
    "list": '{{if .ToolCalls}}[{{range .ToolCalls}}{"name": "{{.Function.Name}}", "arguments": '
            "{{.Function.Arguments}}}{{end}}]{{end}}",
}
QWEN, DEEPSEEK, JSONF, MISTRALF, LIST = (detect_tool_format(GO[k], go_template=True) for k in GO)

SF = {"location": "San Francisco"}
LONDON_F = {"city": "London", "format": "fahrenheit"}
TOKYO = {"location": "Tokyo"}
WEATHER_CALL = '{"name": "get_temperature", "arguments": {"city": "London", "format": "fahrenheit"}}'
Calls = list[tuple[str, dict[str, Any]]]

# (id, format, chunks (or one string), expected content after finish(), expected calls)
CASES: list[tuple[str, ToolFormat, list[str] | str, str, Calls]] = [
    # --- Ollama tools_test.go TestParser --------------------------------------------------------------
    ("no tool calls", QWEN, "Hello, how can I help you today?", "Hello, how can I help you today?", []),
    ("empty input", QWEN, [""], "", []),
    ("tool call", QWEN, '<tool_call>{"name": "get_conditions", "arguments": {"location": "San Francisco"}}</tool_call>',
     "", [("get_conditions", SF)]),
    ("empty args", QWEN, '<tool_call>{"name": "get_conditions", "arguments": {}}</tool_call>', "",
     [("get_conditions", {})]),
    ("text before tool call", QWEN,
     'Let me check the weather. <tool_call>{"name": "get_temperature", "arguments": {"city": "New York"}}</tool_call>',
     "Let me check the weather. ", [("get_temperature", {"city": "New York"})]),
    ("qwen no args with text", QWEN, "Let me say hello to the user. I'll use the say_hello tool. ",
     "Let me say hello to the user. I'll use the say_hello tool. ", []),
    ("two tool calls in a list", MISTRALF,
     f'[TOOL_CALLS] [{WEATHER_CALL}, {{"name": "get_conditions", "arguments": {{"location": "Tokyo"}}}}][/TOOL_CALLS]',
     "", [("get_temperature", LONDON_F), ("get_conditions", TOKYO)]),
    ("qwen two tool calls", QWEN,
     f"Okay, let's call both tools! <tool_call>{WEATHER_CALL}</tool_call>"
     '<tool_call>{"name": "get_conditions", "arguments": {"location": "Tokyo"}}</tool_call>',
     "Okay, let's call both tools! ", [("get_temperature", LONDON_F), ("get_conditions", TOKYO)]),
    ("empty args followed by args", QWEN,
     'Let me say hello and check the weather. <tool_call>{"name": "say_hello", "arguments": {}}</tool_call>'
     f"<tool_call>{WEATHER_CALL}</tool_call>",
     "Let me say hello and check the weather. ", [("say_hello", {}), ("get_temperature", LONDON_F)]),
    ("qwen empty followed by args", QWEN,
     'Let me check the weather. <tool_call>{"name": "get_conditions", "arguments": {}}</tool_call>'
     '<tool_call>{"name": "get_conditions", "arguments": {"location": "Tokyo"}}',
     "Let me check the weather. ", [("get_conditions", {}), ("get_conditions", TOKYO)]),
    ("deepseek", DEEPSEEK,
     "<think>Wait, I need to call a tool</think><|tool▁calls▁begin|><|tool▁call▁begin|>function<|tool▁sep|>"
     'get_temperature\n```json\n{"city": "Tokyo"}\n```<|tool▁call▁end|><|tool▁calls▁end|><|end▁of▁sentence|>',
     "<think>Wait, I need to call a tool</think>", [("get_temperature", {"city": "Tokyo"})]),
    ("deepseek incremental", DEEPSEEK,
     ["<think>Wait", ", I need", " to call", " a tool</think><|too", "l▁calls▁begin", "|>",
      "<|tool▁call▁begin|>function<|tool▁sep|>get_temperature\n", "```json\n", '{"city": "Tokyo"}\n', "```",
      "<|tool▁c", "all▁end|>", "<|tool▁calls▁end|>", "<|end▁of▁sentence|>"],
     "<think>Wait, I need to call a tool</think>", [("get_temperature", {"city": "Tokyo"})]),
    ("json", JSONF, ["{", '"name": "get_temperature",', '"arguments": {', '"city": "Tokyo"', "}", "}"], "",
     [("get_temperature", {"city": "Tokyo"})]),
    # Ollama: content "" from Add, the buffer from Content() at the end: the same text in total.
    ("json maybe a tool call", JSONF, ["{", '"name": "get_temperature",', '"arguments": {'],
     '{"name": "get_temperature","arguments": {', []),
    ("json not a tool call", JSONF,
     ["{", '"name": "search", ', '"arguments": {', '"query": "What is the capital of Canada?"', "}", "}"],
     '{"name": "search", "arguments": {"query": "What is the capital of Canada?"}}', []),
    ("json object followed by tool call", JSONF,
     ['{"name": "jeff"}', '{"name": "get_conditions", "arguments": {"location": "San Francisco"}}'],
     '{"name": "jeff"}{"name": "get_conditions", "arguments": {"location": "San Francisco"}}', []),
    ("json object followed by tool call split", JSONF,
     ['{"name": "jeff"} {', '"name": "get_conditions", "arguments": {"location": "San Francisco"}}'],
     '{"name": "jeff"} {"name": "get_conditions", "arguments": {"location": "San Francisco"}}', []),
    ("json code", JSONF, 'for { fmt.Println("hello") }', 'for { fmt.Println("hello") }', []),
    ("list multiple", LIST,
     ["[", "{", '"name": "get_temperature", ', '"arguments": {', '"city": "London"', "}", "},", "{",
      '"name": "get_conditions", ', '"arguments": {', '"location": "Tokyo"', "}", "}]"],
     "", [("get_temperature", {"city": "London"}), ("get_conditions", TOKYO)]),
    ("list partial", LIST, ["[{", '"name": "get_conditions", ', '"arguments": {', '"location": "Tokyo"', "}", "}"],
     "", [("get_conditions", TOKYO)]),
    # Ollama: "" from Add, the buffer from Content(): the same text in total.
    ("list invalid", LIST,
     ["[", "{", '"name": "search", ', '"arguments": {', '"query": "What is the capital of Canada?"', "}", "}"],
     '[{"name": "search", "arguments": {"query": "What is the capital of Canada?"}}', []),
    ("list trailing ]", LIST,
     ["[", "{", '"name": "get_conditions", ', '"arguments": {', '"location": "Tokyo"', "}", "}", "]", "]"], "",
     [("get_conditions", TOKYO)]),
    ("list not a tool call", LIST, ["[special", " del", "ivery]"], "[special delivery]", []),
    ("tool name with collision", QWEN,
     ["<tool_call>", "{", '"name": "say_hello', '_world",', '"arguments": {}}', "}"], "", [("say_hello_world", {})]),
    ("tool name with collision multiple", QWEN,
     ["<tool_call>", "{", '"name": "say_hello', '_world",', '"arguments": {}}', "</tool_call>", "<tool_call>", "{",
      '"name": "say_hello', '",', '"arguments": {}}', "</tool_call>"], "", [("say_hello_world", {}), ("say_hello", {})]),
    # Deviation: Ollama drops a truncated block after its tag; we return it as content.
    ("tool name with collision non streaming", QWEN, '<tool_call>{"name": "say_hello',
     '<tool_call>{"name": "say_hello', []),
    ("tool name with collision non streaming multiple", QWEN,
     '<tool_call>{"name": "say_hello", "arguments": {}}</tool_call><tool_call>{"name": "say_hello_world", "arguments": {}}',
     "", [("say_hello", {}), ("say_hello_world", {})]),
    ("tool name with collision non streaming shorter", QWEN,
     '<tool_call>{"name": "say_hello", "arguments": {}}</tool_call>', "", [("say_hello", {})]),
    ("tool name with collision non streaming longer", QWEN,
     '<tool_call>{"name": "say_hello_world", "arguments": {}}</tool_call>', "", [("say_hello_world", {})]),
    ("tool name with substring of another (json)", JSONF,
     ["{", '"name": "get_address",', '"arguments": {', '"location": "London"', "}", "}"], "",
     [("get_address", {"location": "London"})]),
    ("tool name with substring of another (qwen)", QWEN,
     '<tool_call>{"name": "get_address", "arguments": {"location": "London"}}</tool_call>', "",
     [("get_address", {"location": "London"})]),
    ("args before name", QWEN, '<tool_call>{"arguments": {"a": "5", "b": "10"}, "name": "add"}</tool_call>', "",
     [("add", {"a": "5", "b": "10"})]),
    # --- Ollama TestContent, as what finish() flushes ------------------------------------------------------
    ("content: json object", BARE_JSON, '{"name": "get_temperature"}', '{"name": "get_temperature"}', []),
    ("content: list", LIST, '[{"name": "get_temperature"}]', '[{"name": "get_temperature"}]', []),
    ("content: code", BARE_JSON, '{ fmt.Println("hello")', '{ fmt.Println("hello")', []),
    ("content: whitespace", BARE_JSON, " \n ", " \n ", []),
    # --- real outputs of each format -------------------------------------------------------------------
    ("qwen2.5 two calls", HERMES,
     '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "San Francisco, CA, USA", "unit": '
     '"celsius"}}\n</tool_call>\n<tool_call>\n{"name": "get_temperature", "arguments": {"city": "San Francisco", '
     '"date": "2024-10-01"}}\n</tool_call>',
     "", [("get_current_weather", {"location": "San Francisco, CA, USA", "unit": "celsius"}),
          ("get_temperature", {"city": "San Francisco", "date": "2024-10-01"})]),
    ("hermes text before and after", HERMES,
     "I'll check the weather for you.\n<tool_call>\n"
     '{"arguments": {"location": "Paris"}, "name": "get_current_weather"}\n</tool_call>\nOne moment.',
     "I'll check the weather for you.\n\nOne moment.", [("get_current_weather", {"location": "Paris"})]),
    ("hermes stringified arguments", HERMES,
     '<tool_call>{"name": "add", "arguments": "{\\"a\\": \\"1\\", \\"b\\": \\"2\\"}"}</tool_call>', "",
     [("add", {"a": "1", "b": "2"})]),
    ("hermes openai-style function wrapper", HERMES,
     '<tool_call>{"type": "function", "function": {"name": "say_hello", "arguments": {}}}</tool_call>', "",
     [("say_hello", {})]),
    ("hermes no arguments key", HERMES, '<tool_call>{"name": "say_hello"}</tool_call>', "", [("say_hello", {})]),
    ("hermes nested braces and escaped quotes", HERMES,
     r'<tool_call>{"name": "add", "arguments": {"a": "{\"x\": \"}\"}", "b": "say \"hi\" {\\"}}</tool_call>',
     "", [("add", {"a": '{"x": "}"}', "b": 'say "hi" {\\'})]),
    ("hermes unicode", HERMES,
     '<tool_call>{"name": "get_current_weather", "arguments": {"location": "東京", "note": "naïve ☃ 🌧️ 👩‍👩‍👧",'
     ' "esc": "\\u00e9\\ud83d\\ude00"}}</tool_call>',
     "", [("get_current_weather", {"location": "東京", "note": "naïve ☃ 🌧️ 👩‍👩‍👧", "esc": "é😀"})]),
    ("hermes unicode content", HERMES, "Ça va? 🌧️ <b>a < b</b> <tool", "Ça va? 🌧️ <b>a < b</b> <tool", []),
    ("hermes unknown tool is content", HERMES,
     'Sure. <tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>',
     'Sure. <tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>', []),
    ("hermes array arguments is content", HERMES, '<tool_call>{"name": "add", "arguments": ["1", "2"]}</tool_call>',
     '<tool_call>{"name": "add", "arguments": ["1", "2"]}</tool_call>', []),
    ("hermes invalid json is content", HERMES, "<tool_call>{name: add}</tool_call> ok",
     "<tool_call>{name: add}</tool_call> ok", []),
    ("llama3.1 parameters", LLAMA3,
     '{"name": "get_current_weather", "parameters": {"location": "Paris", "unit": "celsius"}}', "",
     [("get_current_weather", {"location": "Paris", "unit": "celsius"})]),
    ("llama3.2 python_tag, two calls", LLAMA3,
     '<|python_tag|>{"name": "add", "parameters": {"a": 1, "b": 2}}; {"name": "say_hello", "parameters": {}}',
     "", [("add", {"a": 1, "b": 2}), ("say_hello", {})]),
    ("llama3 leading whitespace", LLAMA3, '\n\n{"name": "say_hello", "parameters": {}}\n', "", [("say_hello", {})]),
    ("llama3 text first disables", LLAMA3, 'Sure! {"name": "say_hello", "parameters": {}}',
     'Sure! {"name": "say_hello", "parameters": {}}', []),
    ("llama3 name only is content", LLAMA3, '{"name": "say_hello"}', '{"name": "say_hello"}', []),
    ("mistral array with ids", MISTRAL,
     '[TOOL_CALLS][{"name": "get_current_weather", "arguments": {"location": "Paris", "format": "celsius"}, '
     '"id": "abcDEF123"}, {"name": "add", "arguments": {"a": 2, "b": 3}, "id": "xyz987654"}]',
     "", [("get_current_weather", {"location": "Paris", "format": "celsius"}), ("add", {"a": 2, "b": 3})]),
    ("mistral v11 name[ARGS]", MISTRAL,
     '[TOOL_CALLS]get_current_weather[ARGS]{"location": "Paris"}[TOOL_CALLS]add[CALL_ID]a1B2c3D4e[ARGS]{"a": 1}',
     "", [("get_current_weather", {"location": "Paris"}), ("add", {"a": 1})]),
    ("mistral tag decoded away", MISTRAL, '[{"name": "add", "arguments": {"a": 1}}]', "", [("add", {"a": 1})]),
    ("mistral bare name-only list is content", MISTRAL, '[{"name": "add"}]', '[{"name": "add"}]', []),
    ("mistral name without [ARGS]", MISTRAL, '[TOOL_CALLS]say_hello{}', "", [("say_hello", {})]),
    ("mistral text and brackets", MISTRAL, "See [TOOL] and [TOOL_CALL docs [x]", "See [TOOL] and [TOOL_CALL docs [x]", []),
    ("mistral unknown name is content", MISTRAL, '[TOOL_CALLS]search[ARGS]{"q": 1}', '[TOOL_CALLS]search[ARGS]{"q": 1}',
     []),
    ("plain json object", BARE_JSON, '{"name": "add", "arguments": {"a": "1", "b": "2"}}', "",
     [("add", {"a": "1", "b": "2"})]),
    ("plain json array", BARE_JSON, '[{"name": "say_hello", "arguments": {}}, {"name": "add", "parameters": {"a": 1}}]',
     "", [("say_hello", {}), ("add", {"a": 1})]),
    ("plain json then text", BARE_JSON, '{"name": "say_hello", "arguments": {}} Done.', " Done.", [("say_hello", {})]),
    ("json that is not a tool call", BARE_JSON, '{"answer": 42, "why": "because {braces}"}',
     '{"answer": 42, "why": "because {braces}"}', []),
    ("json numbers list", BARE_JSON, "[1, 2.5e3, -0.1, true, null]", "[1, 2.5e3, -0.1, true, null]", []),
    ("json unicode not a call", BARE_JSON, '{"город": "Москва"} и всё', '{"город": "Москва"} и всё', []),
    ("generic firefunction", ToolFormat.for_tag("functools["),
     'functools[{"name": "get_conditions", "arguments": {"location": "Tokyo"}}]', "", [("get_conditions", TOKYO)]),
    ("generic with no call is content", DEEPSEEK, "x<|tool▁calls▁begin|>nothing here",
     "x<|tool▁calls▁begin|>nothing here", []),
]


def run(fmt: ToolFormat, chunks: list[str], names: list[str] = TOOLS, **kw: Any) -> tuple[str, Calls]:
    parser = ToolCallParser(fmt, names, **kw)
    content: list[str] = []
    calls: list[Any] = []
    for chunk in chunks:
        text, new = parser.add(chunk)
        content.append(text)
        calls += new
    text, new = parser.finish()
    content.append(text)
    calls += new
    assert [c["function"]["index"] for c in calls] == list(range(len(calls)))
    assert all(ID.fullmatch(c["id"]) for c in calls)
    return "".join(content), [(c["function"]["name"], c["function"]["arguments"]) for c in calls]


def check(got: tuple[str, Calls], content: str, calls: Calls) -> None:
    assert got[0] == content
    assert got[1] == calls
    # key order is the model's, not sorted
    assert [json.dumps(a) for _, a in got[1]] == [json.dumps(a) for _, a in calls]


def full(chunks: list[str] | str) -> str:
    return chunks if isinstance(chunks, str) else "".join(chunks)


def random_split(data: st.DataObject, text: str, max_cuts: int) -> list[str]:
    cuts = sorted(data.draw(st.sets(st.integers(0, len(text)), max_size=max_cuts)))
    return [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]


IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("name", "fmt", "chunks", "content", "calls"), CASES, ids=IDS)
def test_cases(name: str, fmt: ToolFormat, chunks: list[str] | str, content: str, calls: Calls) -> None:
    check(run(fmt, [chunks] if isinstance(chunks, str) else chunks), content, calls)


@pytest.mark.parametrize(("name", "fmt", "chunks", "content", "calls"), CASES, ids=IDS)
def test_cases_split_in_two_everywhere(name: str, fmt: ToolFormat, chunks: Any, content: str, calls: Calls) -> None:
    text = full(chunks)
    for i in range(len(text) + 1):
        check(run(fmt, [text[:i], text[i:]]), content, calls)


@pytest.mark.parametrize(("name", "fmt", "chunks", "content", "calls"), CASES, ids=IDS)
def test_cases_token_by_token(name: str, fmt: ToolFormat, chunks: Any, content: str, calls: Calls) -> None:
    text = full(chunks)
    for size in (1, 2, 3):
        check(run(fmt, [text[i : i + size] for i in range(0, len(text), size)]), content, calls)
    pattern = [1, 3, 2, 1, 1, 2, 3, 3]
    pieces, i, j = [], 0, 0
    while i < len(text):
        pieces.append(text[i : i + pattern[j % len(pattern)]])
        i, j = i + pattern[j % len(pattern)], j + 1
    check(run(fmt, pieces), content, calls)


@pytest.mark.parametrize(("name", "fmt", "chunks", "content", "calls"), CASES, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_cases_random_splits(name: str, fmt: ToolFormat, chunks: Any, content: str, calls: Calls,
                             data: st.DataObject) -> None:
    check(run(fmt, random_split(data, full(chunks), 12)), content, calls)


# --- properties: any arguments survive any split, in every format --------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(args=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4), ascii_only=st.booleans(),
       indent=st.sampled_from([None, 2]), prefix=st.text(max_size=20).filter(lambda s: "<tool_call>" not in s),
       data=st.data())
def test_any_arguments_any_split(args: dict[str, Any], ascii_only: bool, indent: int | None, prefix: str,
                                 data: st.DataObject) -> None:
    dumped = json.dumps(args, ensure_ascii=ascii_only, indent=indent)
    outputs = [
        (HERMES, f'{prefix}<tool_call>\n{{"name": "add", "arguments": {dumped}}}\n</tool_call>', prefix),
        (MISTRAL, f"[TOOL_CALLS]add[ARGS]{dumped}", ""),
        (MISTRAL, f'[TOOL_CALLS][{{"name": "add", "arguments": {dumped}}}]', ""),
        (LLAMA3, f'{{"name": "add", "parameters": {dumped}}}', ""),
        (BARE_JSON, f'[{{"name": "add", "arguments": {dumped}}}]', ""),
    ]
    for fmt, text, content in outputs:
        check(run(fmt, random_split(data, text, 10)), content, [("add", args)])


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=60), data=st.data())
def test_text_without_calls_is_content_whatever_the_split(text: str, data: st.DataObject) -> None:
    for fmt in (HERMES, MISTRAL, LLAMA3, BARE_JSON, DEEPSEEK):
        assert run(fmt, random_split(data, text, 8)) == (text, [])


SOUP = ["<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[/TOOL_CALLS]", "[ARGS]", "<|python_tag|>", "functools[",
        "<|tool▁calls▁begin|>", "{", "}", "[", "]", '"', ",", ";", ":", " ", "\n", "\\", '\\"', '"name"', '"arguments"',
        '"parameters"', '"add"', "say_hello", "add", "{}", "1", "-", "e", "true", "x", "é", "🌧️", "<", "<tool_",
        '{"name": "add", "arguments": {"a": 1}}', '{"name": "say_hello"}']
SOUP_FORMATS = [HERMES, MISTRAL, LLAMA3, BARE_JSON, DEEPSEEK, LIST, ToolFormat.for_tag("functools[")]


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(st.sampled_from(SOUP), max_size=14), fmt=st.sampled_from(SOUP_FORMATS), data=st.data())
def test_any_split_of_markup_soup_gives_the_same_answer(pieces: list[str], fmt: ToolFormat,
                                                       data: st.DataObject) -> None:
    text = "".join(pieces)
    whole = run(fmt, [text])
    assert run(fmt, random_split(data, text, 8)) == whole
    assert run(fmt, list(text)) == whole
    if not whole[1]:
        assert whole[0] == text  # nothing is dropped unless a call was made


# --- streaming behaviour --------------------------------------------------------------------------------


def test_call_is_emitted_as_soon_as_its_json_is_complete() -> None:
    p = ToolCallParser(HERMES, TOOLS)
    assert p.add("Sure.\n<tool_call>\n") == ("Sure.\n", [])
    assert p.add('{"name": "say_hello", "arguments": {}') == ("", [])
    content, calls = p.add("}")
    assert (content, [c["function"]["name"] for c in calls]) == ("", ["say_hello"])
    assert p.add("\n</tool_call>") == ("", [])
    assert p.finish() == ("", [])


def test_list_elements_are_emitted_one_by_one() -> None:
    p = ToolCallParser(MISTRAL, TOOLS)
    _, first = p.add('[TOOL_CALLS][{"name": "say_hello", "arguments": {}}, {"name": "add", ')
    assert [c["function"]["name"] for c in first] == ["say_hello"]
    _, second = p.add('"arguments": {"a": 1}}]')
    assert [(c["function"]["index"], c["function"]["name"]) for c in second] == [(1, "add")]


def test_only_a_possible_tag_is_held_back() -> None:
    p = ToolCallParser(HERMES, TOOLS)
    assert p.add("a < b, hello <tool_") == ("a < b, hello ", [])
    assert p.add("x") == ("<tool_x", [])
    assert p.add("<") == ("", [])
    assert p.finish() == ("<", [])


def test_bare_json_that_cannot_be_json_is_flushed_at_once() -> None:
    p = ToolCallParser(BARE_JSON, TOOLS)
    assert p.add("  {") == ("", [])
    assert p.add(" fmt") == ("  { fmt", [])
    assert p.add(' {"name": "say_hello", "arguments": {}}') == (' {"name": "say_hello", "arguments": {}}', [])


def test_no_tools_means_no_parsing() -> None:
    text = '<tool_call>{"name": "add", "arguments": {}}</tool_call>'
    assert run(HERMES, [text], names=[]) == (text, [])
    assert run(BARE_JSON, ['{"name": "add", "arguments": {}}'], names=[]) == ('{"name": "add", "arguments": {}}', [])


def test_ids_are_fresh_and_index_counts_the_response() -> None:
    text = "<tool_call>" + "</tool_call><tool_call>".join(['{"name": "say_hello", "arguments": {}}'] * 20)
    p = ToolCallParser(HERMES, TOOLS)
    calls = p.add(text)[1] + p.finish()[1]
    assert [c["function"]["index"] for c in calls] == list(range(20))
    assert len({c["id"] for c in calls}) == 20 and all(ID.fullmatch(c["id"]) for c in calls)
    fixed = ToolCallParser(HERMES, TOOLS, id_factory=lambda: "call_00000000")
    assert fixed.add(text)[1][0] == {"id": "call_00000000",
                                     "function": {"index": 0, "name": "say_hello", "arguments": {}}}


def test_long_arguments_stream_in_linear_time() -> None:
    body = json.dumps({"code": "x = {'a': \"}\"}\n" * 4000})
    text = f'<tool_call>{{"name": "add", "arguments": {body}}}</tool_call>'
    start = time.perf_counter()
    content, calls = run(HERMES, list(text))
    assert (content, len(calls)) == ("", 1)
    assert time.perf_counter() - start < 10  # ~0.1 s here; a quadratic rescan takes minutes


# --- strict: Ollama's builtin-parser error ------------------------------------------------------------

STRICT = [
    (HERMES, '<tool_call>{"name": "search", "arguments": {}}</tool_call>',
     """raw='<tool_call>{"name": "search", "arguments": {}}', err=unknown tool 'search'"""),
    (HERMES, '<tool_call>{"name": "add", "arguments": [1]}', "err='arguments' of 'add' must be a JSON object"),
    (HERMES, "<tool_call>{name}", "raw='<tool_call>{', err=invalid character 'n' in JSON"),
    (HERMES, '<tool_call>{"name": "add", "argu', """raw='<tool_call>{"name": "add", "argu', err=unexpected end"""),
    (MISTRAL, "[TOOL_CALLS]nope[ARGS]{}", "raw='[TOOL_CALLS]n', err=no tool name starts with 'n'"),
    (MISTRAL, "[TOOL_CALLS]say_hello_w[ARGS]{}", "raw='[TOOL_CALLS]say_hello_w', err=unknown tool 'say_hello_w'"),
]


@pytest.mark.parametrize(("fmt", "text", "message"), STRICT)
def test_strict_raises_ollamas_error(fmt: ToolFormat, text: str, message: str) -> None:
    p = ToolCallParser(fmt, TOOLS, strict=True)
    with pytest.raises(ToolCallParseError) as e:
        p.add(text)
        p.finish()
    assert str(e.value).startswith("error parsing tool call: raw='")
    assert message in str(e.value)
    assert e.value.status == 500


def test_strict_error_carries_what_came_before_it() -> None:
    p = ToolCallParser(HERMES, TOOLS, strict=True)
    with pytest.raises(ToolCallParseError) as e:
        p.add('Hi <tool_call>{"name": "say_hello", "arguments": {}}</tool_call><tool_call>{"name": "nope"}')
    assert e.value.content == "Hi "
    assert [c["function"]["name"] for c in e.value.calls] == ["say_hello"]


@pytest.mark.parametrize(("fmt", "text"), [(BARE_JSON, '{"name": "search", "arguments": {}}'),
                                           (LLAMA3, "<|python_tag|>brave_search.call(query='x')"),
                                           (DEEPSEEK, "<|tool▁calls▁begin|>nothing")])
def test_strict_never_fails_unmarked_or_generic_output(fmt: ToolFormat, text: str) -> None:
    assert run(fmt, [text], strict=True) == (text, [])


# --- Ollama TestFindTag ----------------------------------------------------------------------------------

FIND_TAG = [
    ("hello world", "<tool_call>", -1, False), ("<tool_call>", "<tool_call>", 0, True),
    ('    <tool_call>\n {"name": "bob"}', "<tool_call>", 4, True), ('<tool_call>{"name"', "<tool_call>", 0, True),
    ("text <tool_call>", "<tool_call>", 5, True), ("<tool_calls><tool_call>", "<tool_calls>", 0, True),
    ("<tool>", "<tool_call>", -1, False), ("", "<tool_call>", -1, False), ("test<", "<tool_call>", 4, False),
    ("hello <tool_", "<tool_call>", 6, False), ("calling tools: [", "[", 15, True),
    ('{"name": "bob"', "{", 0, True), ('\n\n{\n"name": "bob"', "{", 2, True),
]


@pytest.mark.parametrize(("buffer", "tag", "i", "found"), FIND_TAG)
def test_find_tag(buffer: str, tag: str, i: int, found: bool) -> None:
    assert find_tag(buffer, tag) == (i, found)


# --- Ollama TestFindArguments (the generic fallback) -------------------------------------------------------

SF_F = {"format": "fahrenheit", "location": "San Francisco, CA"}
SF_F_JSON = '{"format": "fahrenheit", "location": "San Francisco, CA"}'
FIND_ARGUMENTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("", "", None), ("   \n\t  ", "", None),
    ('{"format": "fahrenheit", "location": "San Francisco"', "", None),
    ('{"format": "fahrenheit"}}', "", {"format": "fahrenheit"}),
    ('{format: fahrenheit, location: "San Francisco"}', "", None),
    (f'{{"name": "get_temperature", "arguments": {SF_F_JSON}}}', "", SF_F),
    (f"[tool]get_temperature[args]{SF_F_JSON}[end]", "", SF_F),
    (f'[{{"name": "get_temperature", "arguments": {SF_F_JSON}}}', "", SF_F),
    (f'{{"function": {{"name": "get_temperature", "arguments": {SF_F_JSON}}}}}', "", SF_F),
    ('get_temperature({"location": "San Francisco, CA"})', "", {"location": "San Francisco, CA"}),
    (f'[{{"name": "get_temperature", "arguments": {SF_F_JSON}}}, {{"name": "get_weather", "arguments": {{}}}}]', "",
     SF_F),
    ('<|tool▁calls▁begin|><|tool▁call▁begin|>function<|tool▁sep|>get_temperature\n```json\n{"location": "Tokyo"}\n'
     "```<|tool▁call▁end|><|tool▁calls▁end|><|end▁of▁sentence|>", "", {"location": "Tokyo"}),
    ('"arguments": {"location": "Tokyo"}}</tool_call>', "", {"location": "Tokyo"}),
    ('{"name": "process_code", "arguments": {"code": "if (x > 0) { return true; }"}}', "",
     {"code": "if (x > 0) { return true; }"}),
    (r'{"name": "send_data", "arguments": {"payload": "{\"nested\": {\"key\": \"value\"}}"}}', "",
     {"payload": '{"nested": {"key": "value"}}'}),
    (r'{"name": "analyze", "arguments": {"text": "The JSON is: {\"key\": \"val{ue}\"}"}}', "",
     {"text": 'The JSON is: {"key": "val{ue}"}'}),
    ('{"name": "test", "arguments": {"query": "find } in text"}} {"name": "other"}', "", {"query": "find } in text"}),
    ('{"name": "search", "arguments": {"pattern": "regex: }"}}', "", {"pattern": "regex: }"}),
    (r'{"name": "analyze", "arguments": {"data": "{\"items\": [{\"value\": \"}\"}, {\"code\": \"if (x) { return y; }\"}]}"}}',
     "", {"data": '{"items": [{"value": "}"}, {"code": "if (x) { return y; }"}]}'}),
    (r'{"name": "format", "arguments": {"template": "{\n  \"key\": \"value\"\n}"}}', "",
     {"template": '{\n  "key": "value"\n}'}),
    (r'{"name": "test", "arguments": {"text": "Unicode: \u007B and \u007D"}}', "", {"text": "Unicode: { and }"}),
    ('{"name": "batch", "arguments": ["item1", "item2", "{\\"nested\\": true}"]}', "", None),
    (r'{"name": "path", "arguments": {"dir": "C:\\Program Files\\{App}\\"}}', "", {"dir": "C:\\Program Files\\{App}\\"}),
    ("""{"name": "query", "arguments": {"sql": "SELECT * FROM users WHERE name = '{admin}'"}}""", "",
     {"sql": "SELECT * FROM users WHERE name = '{admin}'"}),
    ('{"name": "test", "arguments": {"data": "some {"', "", None),
    (r'{"name": "echo", "arguments": {"msg": "He said \"Hello {World}\" loudly"}}', "",
     {"msg": 'He said "Hello {World}" loudly'}),
    ('{"name": "code", "arguments": {"snippet": "// This is a comment with { and }"}}', "",
     {"snippet": "// This is a comment with { and }"}),
    (r'{"name": "test", "arguments": {"path": "C:\\\\{folder}\\\\"}}', "", {"path": "C:\\\\{folder}\\\\"}),
    ('{"name": "test", "arguments": {"a": "", "b": "{value}"}}', "", {"a": "", "b": "{value}"}),
    ('{"name": "test", "arguments": {"key{": "value", "key}": "value2"}}', "", {"key{": "value", "key}": "value2"}),
    ('{"name": "test", "arguments": {"data": "' + "a{b}c" * 100 + '"}}', "", {"data": "a{b}c" * 100}),
    (r'{"name": "test", "arguments": {"code": "\tif (true) {\n\t\treturn;\n\t}"}}', "",
     {"code": "\tif (true) {\n\t\treturn;\n\t}"}),
    (r'{"name": "test", "arguments": {"data": "before\u0000{after}"}}', "", {"data": "before\x00{after}"}),
    (r'{"name": "test", "arguments": {"data": "text with quote at end\\\""}}', "", {"data": 'text with quote at end\\"'}),
    ('{"name": "test", "arguments": {"items": ["{", "}", {"key": "value"}]}}', "",
     {"items": ["{", "}", {"key": "value"}]}),
    ('{"name": "get_temperature", "arguments": "{\\"format\\": \\"fahrenheit\\", \\"location\\": \\"San Francisco, CA\\"}"}',
     "", SF_F),
    ('{"name": "get_temperature", "parameters": "{\\"format\\": \\"fahrenheit\\", \\"location\\": \\"San Francisco, CA\\"}"}',
     "", SF_F),
    (f'{{"get_temperature": {SF_F_JSON}}}', "get_temperature", SF_F),
    ('{"get_temperature": "{\\"format\\": \\"fahrenheit\\", \\"location\\": \\"San Francisco, CA\\"}"}',
     "get_temperature", SF_F),
]


@pytest.mark.parametrize(("buffer", "tool", "want"), FIND_ARGUMENTS)
def test_find_arguments(buffer: str, tool: str, want: dict[str, Any] | None) -> None:
    assert find_arguments(buffer, tool)[0] == want


# --- Ollama TestDone, as the JSON scanner's verdicts --------------------------------------------------------

SCAN = [
    ('{"name": "get_weather"', ScanStatus.INCOMPLETE, None), ('{"name": "get_weather"}', ScanStatus.COMPLETE, 23),
    ("{}", ScanStatus.COMPLETE, 2), ('[{"name": "get_weather"', ScanStatus.INCOMPLETE, None),
    ('[{"name": "get_weather"}]', ScanStatus.COMPLETE, 25), ("[]", ScanStatus.COMPLETE, 2),
    ('{"note": "a}b"', ScanStatus.INCOMPLETE, None), ('{"note": "a}b"}', ScanStatus.COMPLETE, 15),
    ('[{"note": "x]y"}', ScanStatus.INCOMPLETE, None), ('{"a": 1} trailing', ScanStatus.COMPLETE, 8),
    ('{"a": [1, -2.5e-3, true, false, null, "\\u00e9\\n"]}', ScanStatus.COMPLETE, 50),
    ("{ fmt", ScanStatus.INVALID, 2), ("[special", ScanStatus.INVALID, 1), ('{"a": tru}', ScanStatus.INVALID, 9),
    ('{"a": 01}', ScanStatus.INVALID, 8), ('{"a": "\\x"}', ScanStatus.INVALID, 8),
    ('{"a": "\\u12G4"}', ScanStatus.INVALID, 11), ('{"a": 1,}', ScanStatus.INVALID, 8),
    ('{"a": 1]', ScanStatus.INVALID, 7), ("[" * 600, ScanStatus.INVALID, 512), ('"str"', ScanStatus.INVALID, 0),
]


@pytest.mark.parametrize(("text", "status", "offset"), SCAN)
def test_json_scanner(text: str, status: ScanStatus, offset: int | None) -> None:
    for pieces in ([text], list(text)):
        sc = JsonScanner()
        for piece in pieces:
            sc.feed(piece)
        assert sc.status is status
        if offset is not None:
            assert sc.consumed == offset


# --- Ollama TestParseTag (template_test.go) ------------------------------------------------------------------

JSON_RANGE = '{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}'
PARSE_TAG = [
    ("", "{"), ("{{if .ToolCalls}}{{end}}", "{"), ("{{if .ToolCalls}}{{range .ToolCalls}}{{ . }}{{end}}{{end}}", "{"),
    ("{{if .ToolCalls}}```json\n{{end}}", "```json"),
    ("{{if .ToolCalls}}[{{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "["),
    ("{{if .ToolCalls}}\n [ {{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "["),
    ("{{if .ToolCalls}}{{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "{"),
    ("{{if .ToolCalls}} {{range .ToolCalls}}{{ . }}{{end}}{{end}}", "{"),
    ("{{if .ToolCalls}}{{range .ToolCalls}}\n{{ . }}\n{{end}}{{end}}", "{"),
    (f"{{{{if .ToolCalls}}}}{{{{range .ToolCalls}}}}{JSON_RANGE}{{{{end}}}}{{{{end}}}}", "{"),
    (f"{{{{if .ToolCalls}}}}{{{{range .ToolCalls}}}}\n{JSON_RANGE}{{{{end}}}}{{{{end}}}}", "{"),
    (f"{{{{if .ToolCalls}}}}{{{{range .ToolCalls}}}}\r\n{JSON_RANGE}{{{{end}}}}{{{{end}}}}", "{"),
    (f"{{{{if .ToolCalls}}}}\n{{{{range .ToolCalls}}}}\n{JSON_RANGE}\r\n{{{{end}}}}\r\n{{{{end}}}}", "{"),
    ("{{if .ToolCalls}}<|tool▁calls▁begin|>{{range .ToolCalls}}<|tool▁call▁begin|>functionget_current_weather\n```json\n"
     '{"location": "Tokyo"}\n```<|tool▁call▁end|>\n{{end}}<|tool▁calls▁end|>{{end}}', "<|tool▁calls▁begin|>"),
    (f"{{{{if .ToolCalls}}}}{{{{range .ToolCalls}}}}<tool_call>{JSON_RANGE}</tool_call>{{{{end}}}}{{{{end}}}}",
     "<tool_call>"),
    (f"{{{{if .ToolCalls}}}}\n{{{{range .ToolCalls}}}}<tool_call>{JSON_RANGE}</tool_call>{{{{end}}}}{{{{end}}}}",
     "<tool_call>"),
    (f"{{{{if .ToolCalls}}}}{{{{range .ToolCalls}}}}<tool_call>{JSON_RANGE}<tool_call>{{{{end}}}}{{{{end}}}}",
     "<tool_call>"),
    ("{{if .ToolCalls}}First text{{if .Something}}inner{{end}}Second text{{end}}", "First text"),
    ("{{if .ToolCalls}}Action: ```json{{end}}", "Action: ```json"),
    ("{{if .ToolCalls}}functools[{{end}}", "functools["),
    ("{{if .ToolCalls}}[TOOL_CALL] [{{end}}", "[TOOL_CALL] ["),
    ("{{if .ToolCalls}}[TOOL_CALL][{{end}}", "[TOOL_CALL]["),
    # ours: trim markers, comments, quoted "}}", else-if chains, with, and the range-only extension
    ("{{- /* tools */ -}}\n{{- if .ToolCalls -}}\n  <tool_call>\n{{- end }}", "<tool_call>"),
    ('{{ if eq .Role "}}" }}x{{ end }}{{ if .ToolCalls }}<tool_call>{{ end }}', "<tool_call>"),
    ('{{ if eq .Role "user" }}u{{ else if .ToolCalls }}[TOOL_CALLS][{{ end }}', "[TOOL_CALLS]["),
    ("{{ with .Message }}{{ if .Message.ToolCalls }}<|python_tag|>{{ end }}{{ end }}", "<|python_tag|>"),
    ("{{ range .Messages }}{{ range .ToolCalls }}<tool_call>{{ .Function.Name }}{{ end }}{{ end }}", "<tool_call>"),
    ("{{ if .ToolCalls }}<tool_call>", "{"),  # no {{end}}: not a template Go would parse
    ("{{ if .Tools }}<tools>{{ end }}{{ if not .Content }}x{{ end }}", "{"),
]


@pytest.mark.parametrize(("template", "tag"), PARSE_TAG)
def test_go_template_tag(template: str, tag: str) -> None:
    assert go_template_tag(template) == tag


# --- detect_tool_format: Go templates and Hugging Face Jinja templates --------------------------------------

GO_QWEN25 = """{{- range $i, $_ := .Messages }}
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
{{- end }}
{{- end }}"""
GO_LLAMA31 = """{{- range $i, $_ := .Messages }}
{{- if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}
{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}
{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- end }}
{{- end }}"""
GO_MISTRAL = """{{- range $index, $_ := .Messages }}
{{- if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}
{{- else if .ToolCalls }}[TOOL_CALLS][
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{- end }}]
{{- end }}</s>
{{- end }}
{{- end }}"""
GO_COMMAND_R = """{{- range .Messages }}{{- if eq .Role "user" }}<|USER_TOKEN|>{{ .Content }}
{{- else if eq .Role "assistant" }}<|CHATBOT_TOKEN|>
{{- if .Content }}{{ .Content }}
{{- else if .ToolCalls }}
Action: ```json
[
{{- range .ToolCalls }}
    {"tool_name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}
{{- end }}
]```
{{- end }}
{{- end }}{{- end }}"""

J_QWEN25 = """{%- for message in messages %}
    {%- if message.role == "assistant" and message.tool_calls %}
        {{- '<|im_start|>' + message.role }}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}
        {%- endfor %}
    {%- endif %}
{%- endfor %}"""
J_HERMES = """{{- 'You may call one or more functions. For each call return a json object within <tool_call></tool_call> XML tags' }}
{%- for message in messages %}{%- if message.role == "assistant" and message.tool_calls is defined %}
{%- for tool_call in message.tool_calls %}{{- '<tool_call>\\n' }}{{ tool_call.function | tojson }}{{- '\\n</tool_call>' }}
{%- endfor %}{%- endif %}{%- endfor %}"""
J_LLAMA31 = """{%- elif 'tool_calls' in message %}
    {%- set tool_call = message.tool_calls[0].function %}
    {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- "<|python_tag|>" + tool_call.name + ".call(" }}
    {%- else %}
        {{- '{"name": "' + tool_call.name + '", ' }}{{- '"parameters": ' }}{{- tool_call.arguments | tojson }}{{- "}" }}
    {%- endif %}"""
J_LLAMA32 = """{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", "parameters": ' + tool_call.arguments | tojson + "}" }}
    {%- endif %}
{%- endfor %}"""
J_MISTRAL_V3 = """{%- elif message.tool_calls is defined and message.tool_calls is not none %}
    {{- "[TOOL_CALLS] [" }}
    {%- for tool_call in message.tool_calls %}
        {%- set out = tool_call.function|tojson %}{{- out[:-1] }}{{- ', "id": "' + tool_call.id + '"}' }}
    {%- endfor %}
    {{- "]" + eos_token }}"""
J_MISTRAL_V11 = """{%- elif message['role'] == 'assistant' and message['tool_calls'] %}
    {%- for tool in message['tool_calls'] %}
        {{- '[TOOL_CALLS]' + tool['function']['name'] + '[ARGS]' + tool['function']['arguments'] | tojson }}
    {%- endfor %}{{- eos_token }}"""
J_GRANITE = """{%- elif message['role'] == 'assistant' and message.tool_calls %}
    {{- '<|start_of_role|>assistant<|end_of_role|><|tool_call|>' + message.tool_calls | tojson + '<|end_of_text|>' }}"""
J_CUSTOM = """{%- if message.tool_calls %}{%- for tc in message.tool_calls %}
    {{- '\\n' }}{{- '<function_call>' }}{{ tc.function | tojson }}{{- '</function_call>' }}
{%- endfor %}{%- endif %}"""
J_NEGATED = """{%- if not message.tool_calls %}{{- '<|assistant|>' + message.content }}{%- else %}
{%- for tc in message.tool_calls %}{{- '{"name": "' + tc.function.name + '"}' }}{%- endfor %}{%- endif %}"""
J_NON_LITERAL = "{% for tc in message.tool_calls %}{{ tc | tojson }}{{ '<x>' }}{% endfor %}"
J_SMOLLM2 = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
             "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

DETECT = [
    ("go qwen2.5", GO_QWEN25, True, HERMES),
    ("go llama3.1", GO_LLAMA31, True, BARE_JSON),
    ("go mistral", GO_MISTRAL, True, MISTRAL),
    ("go command-r", GO_COMMAND_R, True, ToolFormat(FormatKind.GENERIC, "Action: ```json\n[")),
    ("go deepseek", GO["deepseek"], True, ToolFormat(FormatKind.GENERIC, "<|tool▁calls▁begin|>")),
    ("go list", GO["list"], True, ToolFormat(FormatKind.JSON, "[")),
    ("go no tools", "{{ range .Messages }}{{ .Content }}{{ end }}", True, BARE_JSON),
    ("jinja qwen2.5", J_QWEN25, False, HERMES),
    ("jinja hermes", J_HERMES, False, HERMES),
    ("jinja llama3.1", J_LLAMA31, False, LLAMA3),
    ("jinja llama3.2", J_LLAMA32, False, LLAMA3),
    ("jinja mistral v3", J_MISTRAL_V3, False, MISTRAL),
    ("jinja mistral v11", J_MISTRAL_V11, False, MISTRAL),
    ("jinja granite", J_GRANITE, False, ToolFormat(FormatKind.TAGGED, "<|tool_call|>")),
    ("jinja custom tag", J_CUSTOM, False, ToolFormat(FormatKind.TAGGED, "<function_call>", "</function_call>")),
    ("jinja negated condition", J_NEGATED, False, BARE_JSON),
    ("jinja non-literal first", J_NON_LITERAL, False, BARE_JSON),
    ("jinja smollm2 chatml", J_SMOLLM2, False, BARE_JSON),
    ("jinja empty", "", False, BARE_JSON),
]


@pytest.mark.parametrize(("name", "template", "go", "fmt"), DETECT, ids=[d[0] for d in DETECT])
def test_detect_tool_format(name: str, template: str, go: bool, fmt: ToolFormat) -> None:
    assert detect_tool_format(template, go_template=go) == fmt


def test_detected_formats_parse_their_own_rendering() -> None:
    """What each detected template renders for a call is what its parser reads back."""
    rendered = [  # (template, is a Go template, what it renders for add(a=1), content left over)
        (GO_QWEN25, True, '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>', ""),
        (GO_LLAMA31, True, '\n{"name": "add", "parameters": {"a": 1}}', ""),
        (GO_MISTRAL, True, '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}]', ""),
        (GO["deepseek"], True, '<|tool▁calls▁begin|><|tool▁call▁begin|>function<|tool▁sep|>add\n```json\n{"a": 1}\n```',
         ""),
        (GO_COMMAND_R, True, 'Action: ```json\n[\n    {"tool_name": "add", "parameters": {"a": 1}}\n]```', ""),
        (J_MISTRAL_V11, False, '[TOOL_CALLS]add[ARGS]{"a": 1}', ""),
        (J_GRANITE, False, '<|tool_call|>[{"name": "add", "arguments": {"a": 1}}]', ""),
        # text before the first tag is content, whitespace too, as in Ollama
        (J_CUSTOM, False, '\n<function_call>{"name": "add", "arguments": {"a": 1}}</function_call>', "\n"),
    ]
    for template, go, text, content in rendered:
        check(run(detect_tool_format(template, go_template=go), list(text)), content, [("add", {"a": 1})])
