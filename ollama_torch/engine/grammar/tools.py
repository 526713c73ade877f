"""Constrained tool calls (an ollama-torch extension): the called function always exists and its arguments
always validate against the tool's ``parameters`` schema.

The grammar lets the model write anything until it opens a tool call in its own markup; from there the
call is JSON limited to ``{"name": <one of the tools>, "arguments": <that tool's parameters>}`` up to the
closing marker, then free text again (more calls allowed). Per markup (``tools/formats.py``):

==========  ===========================================================================================
tagged      ``<tool_call>`` WS call-object WS ``</tool_call>``; a tag without closing tag (Granite's
            ``<|tool_call|>``) takes a JSON list of call objects
mistral     ``[TOOL_CALLS]`` then a JSON list of call objects, or ``name[ARGS]{arguments}`` when the
            template writes ``[ARGS]``
llama3/json a bare call object (or several, separated by ``,``/``;``/whitespace) as the first output;
            any other first character means plain text for the whole answer, as Ollama parses it
==========  ===========================================================================================

With ``required`` (a request's ``tool_choice`` that demands a call) the output starts with a call: the
marker first (after the reasoning block of a thinking model), or the call object for bare-JSON markup.

The argument key is the one the template shows (``"arguments"`` / ``"parameters"``), both when it shows
neither or both. A tool whose ``parameters`` lists ``properties`` but says nothing about
``additionalProperties`` gets ``additionalProperties: false``: a function has no parameters beyond its
signature (every output still validates against the schema as sent).

Not constrained (the response is parsed only, and the reason logged): markup the parser only knows
generically (``[TOOL_CALLS]``-less custom tags), and tools whose schemas the engine refuses for ``format``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import BadRequest
from ...tools import FormatKind, ToolFormat
from .format import JsonStyle, parse_format
from .lark import WS, FreeText, Vocab, assemble, json_rule, think_prefix

# Tool-call JSON: compact separators plus at most 2 spaces/newlines wherever JSON allows whitespace, so
# `{"name": "f", "arguments": {}}` as models write it is accepted and nothing can run away.
CALL_STYLE = JsonStyle(whitespace_pattern=r"[\x20\x0A]{0,2}")
SEP = r"/[ \n]{0,2}[,;]?[ \n]{0,2}/"
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})


class ToolGrammarUnavailable(Exception):
    """Why the tool calls of a request cannot be constrained (they are still parsed)."""


@dataclass(frozen=True)
class Tool:
    name: str
    parameters: dict[str, Any]  # the enforced schema (``grammar/schema.normalise_schema``)


def enforced_tools(tools: Sequence[dict[str, Any]]) -> list[Tool]:
    """The request's tools with their parameter schemas checked as ``format`` schemas are;
    :class:`ToolGrammarUnavailable` naming the tool and the refusal when one cannot be enforced."""
    out: list[Tool] = []
    seen: set[str] = set()
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise ToolGrammarUnavailable("a tool has no function name")
        if name in seen:
            continue
        seen.add(name)
        params = function.get("parameters") if isinstance(function, dict) else None
        schema = _closed(params if isinstance(params, dict) else {"type": "object"})
        try:
            spec = parse_format(schema)
        except BadRequest as exc:
            raise ToolGrammarUnavailable(f"tool {name!r}: {exc}") from None
        assert spec is not None
        out.append(Tool(name, json.loads(spec.enforced_text)))
    if not out:
        raise ToolGrammarUnavailable("no tools")
    return out


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    if "properties" in schema and "additionalProperties" not in schema and "patternProperties" not in schema:
        return {**schema, "additionalProperties": False}
    return schema


def argument_keys(fmt: ToolFormat, template: str) -> tuple[str, ...]:
    """The key(s) the model is shown for arguments: what the template writes, Llama's ``parameters`` for
    Llama 3 markup, else both."""
    shown = tuple(k for k in ("arguments", "parameters") if f'"{k}"' in template or f"\\\"{k}\\\"" in template)
    if len(shown) == 1:
        return shown
    if fmt.kind is FormatKind.LLAMA3 and not shown:
        return ("parameters",)
    return ("arguments", "parameters")


def call_object_schema(tools: Sequence[Tool], keys: Sequence[str], base: str = "#") -> dict[str, Any]:
    """``{"name": const, <key>: parameters}`` for each tool and key, as one ``anyOf``; ``base`` is where
    this schema will sit in the document, so the tools' own ``#/...`` references still resolve."""
    branches: list[dict[str, Any]] = []
    for tool in tools:
        for key in keys:
            where = f"{base}/anyOf/{len(branches)}/properties/{key}"
            branches.append({
                "type": "object",
                "properties": {"name": {"const": tool.name}, key: _rebase(tool.parameters, where)},
                "required": ["name", key],
                "additionalProperties": False,
            })
    return {"anyOf": branches}


def call_list_schema(tools: Sequence[Tool], keys: Sequence[str]) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "items": call_object_schema(tools, keys, "#/items")}


def _rebase(node: Any, where: str) -> Any:
    """A copy of ``node`` with document-local references (``#``, ``#/...``) moved under ``where``."""
    if isinstance(node, list):
        return [_rebase(v, where) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and (value == "#" or value.startswith("#/")):
            out[key] = where + value[1:]
        elif key in _DATA_KEYWORDS:
            out[key] = value
        else:
            out[key] = _rebase(value, where)
    return out


@dataclass(frozen=True)
class ToolGrammarRequest:
    """Everything that decides a request's tool grammar."""

    fmt: ToolFormat
    tools: tuple[Tool, ...]
    template: str  # the chat template text (Go or Jinja), for the argument key and Mistral's form
    in_call: bool = False  # the prompt ends with the tool-call marker: output starts inside a call
    think_tags: tuple[str, str] | None = None  # reasoning tags when thinking is on
    in_thinking: bool = False
    required: bool = False  # a call must come first (OpenAI's tool_choice "required", Anthropic's "any"/"tool")


def tool_call_grammar(req: ToolGrammarRequest, vocab: Vocab) -> str:
    """The Lark grammar for a response that may call ``req.tools``; :class:`ToolGrammarUnavailable` for
    markup that cannot be constrained."""
    fmt, keys = req.fmt, argument_keys(req.fmt, req.template)
    if fmt.kind in (FormatKind.JSON, FormatKind.LLAMA3):
        start, rules = _bare_json(req, keys, vocab)
    elif fmt.kind in (FormatKind.TAGGED, FormatKind.MISTRAL):
        start, rules = _tagged(req, keys, vocab)
    else:
        raise ToolGrammarUnavailable(f"tool-call markup {fmt.tag!r} is only parsed generically")
    if req.think_tags is not None and not req.in_call:
        rules = [*think_prefix(vocab, req.think_tags, in_thinking=req.in_thinking), *rules]
        start = f"think {start}"
    return assemble(start, rules)


def _tagged(req: ToolGrammarRequest, keys: Sequence[str], vocab: Vocab) -> tuple[str, list[str]]:
    fmt, tag = req.fmt, req.fmt.tag
    free = FreeText(vocab, exclude=(tag,), name="free")
    rules = [*free.rules(), *free.upto("upto_call", tag)]
    if fmt.kind is FormatKind.MISTRAL and "[ARGS]" in req.template:
        names = [f"name_{i}" for i in range(len(req.tools))]
        rules.append(f"call: {WS} ({' | '.join(names)})")
        for rule, tool in zip(names, req.tools, strict=True):
            rules.append(f"{rule}: {json.dumps(tool.name, ensure_ascii=False)} {vocab.literal('[ARGS]')} "
                         f"{json_rule(tool.parameters, CALL_STYLE)}")
    elif fmt.kind is FormatKind.MISTRAL or not fmt.end_tag:
        rules.append(f"call: {WS} {json_rule(call_list_schema(req.tools, keys), CALL_STYLE)}")
    else:
        rules.append(f"call: {WS} {json_rule(call_object_schema(req.tools, keys), CALL_STYLE)} {WS} "
                     f"{vocab.literal(fmt.end_tag)}")
    rules.append("called: upto_call call")
    first = "call " if req.in_call else f"{vocab.literal(tag)} call " if req.required else ""
    return f"{first}called* ({free.anything()})", rules


def _bare_json(req: ToolGrammarRequest, keys: Sequence[str], vocab: Vocab) -> tuple[str, list[str]]:
    free = FreeText(vocab, name="free")
    special = vocab.free_specials()
    rules = [*free.rules(), r"NB_TEXT: /(?s:.+)/ & ~/[ \t\r\n]*[\[{](?s:.*)/",
             "plain: NB_TEXT?" + (" (free_special TEXT?)*" if special is not None else "")]
    if req.fmt.tag == "[":
        rules.append(f"calls: {json_rule(call_list_schema(req.tools, keys), CALL_STYLE)}")
    else:
        rules.append(f"calls: call ({SEP} call)*")
        rules.append(f"call: {json_rule(call_object_schema(req.tools, keys), CALL_STYLE)}")
    return f"{WS} calls plain" + ("" if req.required else " | plain"), rules
