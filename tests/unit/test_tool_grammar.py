"""Constrained tool calls and ``format`` after thinking (``grammar/tools``, ``grammar/lark``,
``grammar/request``): table-driven accept/reject per markup, markers that are special tokens, random walks
whose every parsed call names a tool and validates, and the fallbacks that leave a response unconstrained.

Uses the tiny ChatML tokenizer trained offline (``tests/tiny_models.py``): a small vocabulary makes JSON
take many tokens, which exercises token boundaries inside markers and values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from jsonschema import Draft202012Validator

from ollama_torch.engine.grammar.compiler import (
    GrammarCompiler,
    GrammarState,
    apply_grammar_masks,
    parse_format,
)
from ollama_torch.engine.grammar.lark import Vocab, think_then_json, token_set
from ollama_torch.engine.grammar.request import request_grammar
from ollama_torch.engine.grammar.tools import (
    ToolGrammarRequest,
    ToolGrammarUnavailable,
    argument_keys,
    enforced_tools,
    tool_call_grammar,
)
from ollama_torch.engine.prompt import BuiltPrompt
from ollama_torch.engine.shaping import ResponsePlan, plan_response
from ollama_torch.tools import (
    BARE_JSON,
    HERMES,
    LLAMA3,
    MISTRAL,
    ToolCallParser,
    ToolFormat,
    parse_tool_calls,
)
from tests.tiny_models import chat_tokenizer

MARKERS = ["<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "<think>", "</think>", "<|tool_call|>"]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"type": "integer", "minimum": -12, "maximum": 12}}, "required": ["tz"]}}}
NOARGS = {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}
TOOLS: list[dict[str, Any]] = [WEATHER, TIME, NOARGS]
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


@pytest.fixture(scope="module")
def compiler() -> GrammarCompiler:
    return GrammarCompiler(chat_tokenizer(384), 384, [2])


@pytest.fixture(scope="module")
def special_compiler() -> GrammarCompiler:
    """Markers as single added tokens (as Qwen's ``<tool_call>`` or Mistral's ``[TOOL_CALLS]`` are)."""
    extra = ("<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "<think>", "</think>")
    tok = chat_tokenizer(384 + len(extra), extra_specials=extra)
    return GrammarCompiler(tok, len(tok), [2])


def vocab(compiler: GrammarCompiler) -> Vocab:
    return Vocab.of(compiler.ll_tokenizer, compiler.eos_token_ids, MARKERS, special_ids=compiler.special_ids())


def state(compiler: GrammarCompiler, fmt: ToolFormat, template: str = '"arguments"', **kw: Any) -> GrammarState:
    req = ToolGrammarRequest(fmt, tuple(enforced_tools(TOOLS)), template, **kw)
    return compiler.compile_lark(tool_call_grammar(req, vocab(compiler)), "tool calls").new_state()


def takes(st: GrammarState, text: str) -> str:
    """"end" (taken, may end), "open" (taken, cannot end yet) or "reject"; every token checked on the mask."""
    compiler = st.compiled.compiler
    for token in compiler.ll_tokenizer.tokenize_str(text):
        if token not in st.allowed_token_ids():
            return "reject"
        st.consume(token)
    return "end" if all(e in st.allowed_token_ids() for e in compiler.eos_token_ids) else "open"


TABLE: list[tuple[str, ToolFormat, dict[str, Any], str, str]] = [
    ("plain text", HERMES, {}, "Sure, it is sunny.", "end"),
    ("call", HERMES, {}, f"Let me check.<tool_call>\n{CALL}\n</tool_call>", "end"),
    ("two calls and text", HERMES, {}, f'<tool_call>{CALL}</tool_call>\n<tool_call>{{"name": "ping", "arguments": {{}}}}</tool_call> ok',
     "end"),
    ("unknown tool", HERMES, {}, '<tool_call>{"name": "get_stock"', "reject"),
    ("argument out of range", HERMES, {}, '<tool_call>{"name": "get_time", "arguments": {"tz": 13}}', "reject"),
    ("extra argument", HERMES, {}, '<tool_call>{"name": "get_weather", "arguments": {"city": "P", "x": 1}}', "reject"),
    ("string too long", HERMES, {}, '<tool_call>{"name": "get_weather", "arguments": {"city": "Parisparisparis"', "reject"),
    ("missing required", HERMES, {}, '<tool_call>{"name": "get_weather", "arguments": {}}', "reject"),
    ("unclosed call", HERMES, {}, f"<tool_call>{CALL}", "open"),
    ("key the template does not show", HERMES, {}, '<tool_call>{"name": "ping", "parameters"', "reject"),
    ("runaway whitespace", HERMES, {}, '<tool_call>{   "name"', "reject"),
    ("prompt opened the call", HERMES, {"in_call": True}, f"\n{CALL}\n</tool_call>", "end"),
    ("prompt opened the call: no text", HERMES, {"in_call": True}, "Hello", "reject"),
    ("bare json call", BARE_JSON, {}, f"{CALL}; {CALL}", "end"),
    ("bare json text", BARE_JSON, {}, "No call needed { really }", "end"),
    ("bare json: any other object", BARE_JSON, {}, '{"answer"', "reject"),
    ("bare json after text", BARE_JSON, {}, 'The JSON is {"answer": 1}', "end"),
    ("llama3 parameters", LLAMA3, {"template": ""}, '{"name": "get_time", "parameters": {"tz": -3}}', "end"),
    ("mistral list", MISTRAL, {}, f'[TOOL_CALLS][{CALL}, {{"name": "ping", "arguments": {{}}}}]', "end"),
    ("mistral empty list", MISTRAL, {}, "[TOOL_CALLS][]", "reject"),
    ("mistral [ARGS]", MISTRAL, {"template": "[ARGS]"}, '[TOOL_CALLS]get_time[ARGS]{"tz": 1}', "end"),
    ("mistral [ARGS] unknown", MISTRAL, {"template": "[ARGS]"}, "[TOOL_CALLS]get_tim[ARGS]", "reject"),
    ("granite list", ToolFormat.for_tag("<|tool_call|>"), {}, f"<|tool_call|>[{CALL}]", "end"),
    # tool_choice "required" (Anthropic's "any"/"tool"): a call comes first
    ("required: a call first", HERMES, {"required": True}, f"<tool_call>\n{CALL}\n</tool_call> More text.", "end"),
    ("required: no text first", HERMES, {"required": True}, "Sure", "reject"),
    ("required: the call must close", HERMES, {"required": True}, f"<tool_call>{CALL}", "open"),
    ("required: prompt opened the call", HERMES, {"required": True, "in_call": True}, f"\n{CALL}\n</tool_call>", "end"),
    ("required: bare json call", BARE_JSON, {"required": True}, CALL, "end"),
    ("required: bare json text", BARE_JSON, {"required": True}, "No call", "reject"),
    ("required: mistral", MISTRAL, {"required": True}, f"[TOOL_CALLS][{CALL}]", "end"),
    ("required: mistral text", MISTRAL, {"required": True}, "Hi", "reject"),
]


@pytest.mark.parametrize(("name", "fmt", "kw", "text", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_tool_call_table(compiler: GrammarCompiler, special_compiler: GrammarCompiler, name: str,
                         fmt: ToolFormat, kw: dict[str, Any], text: str, expected: str) -> None:
    for comp in (compiler, special_compiler):
        assert takes(state(comp, fmt, **kw), text) == expected, (name, comp is special_compiler)


def test_special_token_markers(special_compiler: GrammarCompiler) -> None:
    tok_id = special_compiler.ll_tokenizer.tokenize_str("<tool_call>")
    assert len(tok_id) == 1
    st = state(special_compiler, HERMES)
    assert tok_id[0] in st.allowed_token_ids()  # the model writes the marker as its one token
    st.consume(tok_id[0])
    decode = special_compiler.ll_tokenizer.decode_str
    assert all(set(decode([t])) <= set(" \n{") for t in st.allowed_token_ids())
    # other special tokens stay available in free text (as unconstrained), end-of-sequence only at an end
    free = state(special_compiler, HERMES)
    think = special_compiler.ll_tokenizer.tokenize_str("<think>")[0]
    assert think in free.allowed_token_ids() and 2 in free.allowed_token_ids()


def test_token_set() -> None:
    assert token_set([5, 1, 2, 3, 9]) == "<[1-3,5,9]>"
    assert token_set([]) is None


@pytest.mark.parametrize(("template", "fmt", "keys"), [
    ('{"name": <function-name>, "arguments": <args-json-object>}', HERMES, ("arguments",)),
    ('"parameters": {{ .Function.Arguments }}', BARE_JSON, ("parameters",)),
    ("", LLAMA3, ("parameters",)),
    ("", HERMES, ("arguments", "parameters")),
])
def test_argument_keys(template: str, fmt: ToolFormat, keys: tuple[str, ...]) -> None:
    assert argument_keys(fmt, template) == keys


def test_refs_inside_parameters_resolve(compiler: GrammarCompiler) -> None:
    tool = {"type": "function", "function": {"name": "move", "parameters": {
        "type": "object", "$defs": {"pt": {"type": "object", "properties": {"x": {"type": "integer", "maximum": 9}},
                                           "required": ["x"], "additionalProperties": False}},
        "properties": {"to": {"$ref": "#/$defs/pt"}}, "required": ["to"]}}}
    req = ToolGrammarRequest(HERMES, tuple(enforced_tools([WEATHER, tool])), '"arguments"')
    lark = tool_call_grammar(req, vocab(compiler))
    ok = '<tool_call>{"name": "move", "arguments": {"to": {"x": 3}}}</tool_call>'
    assert takes(compiler.compile_lark(lark, "t").new_state(), ok) == "end"
    assert takes(compiler.compile_lark(lark, "t").new_state(), ok.replace("3", "10")) == "reject"


@pytest.mark.parametrize(("tools", "message"), [
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}],
     "tool 'f': unsupported JSON schema in format: keyword \"not\" is not supported"),
    ([{"type": "function", "function": {}}], "a tool has no function name"),
])
def test_tools_that_cannot_be_enforced(tools: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ToolGrammarUnavailable, match=message):
        enforced_tools(tools)


def test_generic_markup_is_not_constrained(compiler: GrammarCompiler) -> None:
    req = ToolGrammarRequest(ToolFormat.for_tag("<｜tool▁calls▁begin｜>"), tuple(enforced_tools(TOOLS)), "")
    with pytest.raises(ToolGrammarUnavailable, match="only parsed generically"):
        tool_call_grammar(req, vocab(compiler))


@pytest.mark.parametrize("fmt", [HERMES, MISTRAL, BARE_JSON], ids=lambda f: f.kind.value)
def test_random_walks_only_make_valid_calls(compiler: GrammarCompiler, fmt: ToolFormat) -> None:
    """Uniform sampling among allowed tokens (random weights at their most random): whatever the parser
    finds in the output is a call to an offered tool with schema-valid arguments."""
    rng = np.random.default_rng(0)
    validators = {t["function"]["name"]: Draft202012Validator(t["function"]["parameters"]) for t in TOOLS}
    found = 0
    for walk in range(12):
        st = state(compiler, fmt, in_call=fmt is not BARE_JSON and walk % 2 == 0)
        text_ids: list[int] = []
        if fmt is BARE_JSON and walk % 2 == 0:  # a bare call must be the first output: start it
            brace = compiler.ll_tokenizer.tokenize_str("{")[0]
            st.consume(brace)
            text_ids.append(brace)
        for _ in range(250):
            logits = torch.zeros(1, compiler.vocab_size)
            apply_grammar_masks(logits, [(0, st)])
            allowed = torch.isfinite(logits[0]).nonzero().flatten().numpy()
            token = int(rng.choice(allowed))
            st.consume(token)
            if token in compiler.eos_token_ids:
                break
            text_ids.append(token)
        text = compiler.ll_tokenizer.decode_str(text_ids)
        prefix = fmt.tag if fmt is not BARE_JSON and walk % 2 == 0 else ""
        _, calls = parse_tool_calls(prefix + text, fmt, list(validators))
        for call in calls:
            validators[call["function"]["name"]].validate(call["function"]["arguments"])
        found += len(calls)
    assert found >= 6


THINK = ("<think>", "</think>")
OBJ = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize(("in_thinking", "text", "expected"), [
    (False, '{"a":1}', "end"),
    (False, '<think>maybe {x} or </thin</think>\n\n{"a":2}', "end"),
    (False, "<think>still thinking", "open"),
    (False, "Hello", "reject"),
    (False, '<think>x</think>{"a":"no"}', "reject"),
    (True, 'so {"a":1} it is</think>{"a":1}', "end"),
    (True, '{"a":1}', "open"),
])
def test_format_after_thinking(compiler: GrammarCompiler, special_compiler: GrammarCompiler, in_thinking: bool,
                               text: str, expected: str) -> None:
    for comp in (compiler, special_compiler):
        lark = think_then_json(vocab(comp), THINK, OBJ, comp.style, in_thinking=in_thinking)
        assert takes(comp.compile_lark(lark, "format after thinking").new_state(), text) == expected


def test_format_after_thinking_finishes_with_the_value(compiler: GrammarCompiler) -> None:
    st = compiler.compile_lark(think_then_json(vocab(compiler), THINK, OBJ, compiler.style, in_thinking=True), "t").new_state()
    assert takes(st, 'ok</think>{"a":7}') == "end" and st.is_finished()


def test_request_grammar_decisions(compiler: GrammarCompiler) -> None:
    spec = parse_format(OBJ)
    plain = request_grammar(compiler, ResponsePlan(), spec, None)
    assert plain is not None and plain.compiled.spec is spec
    thinking = request_grammar(compiler, ResponsePlan(think_tags=THINK), spec, None)
    assert thinking is not None and thinking.compiled.label == "format after thinking"
    tools_plan = ResponsePlan(tool_format=HERMES, tool_names=("get_weather",), template='"arguments"')
    with_tools = request_grammar(compiler, tools_plan, None, TOOLS)
    assert with_tools is not None and with_tools.compiled.label == "tool calls"
    assert request_grammar(compiler, tools_plan, None, TOOLS, constrain_tools=False) is None
    assert request_grammar(compiler, tools_plan, spec, TOOLS) is not None  # format wins: the JSON grammar
    bad = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}]
    assert request_grammar(compiler, tools_plan, None, bad) is None  # refused schema: parsed only
    assert request_grammar(compiler, ResponsePlan(), None, None) is None


def test_parser_starts_inside_a_call_when_the_prompt_opened_it() -> None:
    parser = ToolCallParser(HERMES, ["get_weather"], in_call=True, id_factory=lambda: "call_x")
    content, calls = parser.add(f"\n{CALL}\n</tool_call> done")
    tail, more = parser.finish()
    assert content + tail == " done"
    assert [c["function"]["arguments"] for c in calls + more] == [{"city": "Paris"}]


@pytest.mark.parametrize(("text", "think", "expected"), [
    ("<|im_start|>assistant\n<tool_call>\n", None, (None, False, True)),
    ("<|im_start|>assistant\n", None, (None, False, False)),
    ("<|im_start|>assistant\n<think>\n", True, (THINK, True, False)),
    ("<|im_start|>assistant\n", "high", (THINK, False, False)),
])
def test_plan_response(text: str, think: bool | str | None, expected: tuple[Any, bool, bool]) -> None:
    built = BuiltPrompt([], text, jinja_template="{{ tools }} <tool_call>")
    plan = plan_response(built, think, TOOLS)
    assert (plan.think_tags, plan.in_thinking, plan.in_call) == expected
    assert plan.tool_format == HERMES and plan.tool_names == ("get_weather", "get_time", "ping")
    assert plan_response(built, None, None).tool_format is None


def test_a_required_call_comes_after_the_reasoning(compiler: GrammarCompiler) -> None:
    think = ("<think>", "</think>")
    assert takes(state(compiler, HERMES, think_tags=think, required=True), f"<think>hmm</think><tool_call>{CALL}</tool_call>") == "end"
    assert takes(state(compiler, HERMES, think_tags=think, required=True), "<think>hmm</think>Hello") == "reject"
    tools_plan = ResponsePlan(tool_format=HERMES, tool_names=("get_weather",), template='"arguments"')
    assert request_grammar(compiler, tools_plan, None, TOOLS, constrain_tools=False, require_call=True) is None  # logged
    forced = request_grammar(compiler, tools_plan, None, TOOLS, require_call=True)
    assert forced is not None and takes(forced, "Sure") == "reject"
