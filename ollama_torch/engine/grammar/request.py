"""Which grammar, if any, constrains a request: the decision between ``format``, thinking and tools.

=======================================  ================================================================
request                                  grammar
=======================================  ================================================================
``format``                               the JSON schema (``grammar/compiler.py``), the value is the whole output
``format`` + thinking on                 optional reasoning block (or its rest, when the prompt opened
                                         it), then the JSON value (``grammar/lark.think_then_json``):
                                         Ollama's "structured outputs restart" in one pass
``tools`` (no ``format``)                free text; calls constrained to the tools (``grammar/tools``),
                                         unless the ``tool_grammar`` option is ``false``, the markup is
                                         unknown, or a tool's schema cannot be enforced (logged; the
                                         response is then parsed only, as Ollama does)
``tools`` + ``format``                   the ``format`` grammar; calls are parsed from the output only
``tools`` + a call required              as ``tools``, the output starting with a call (``tool_choice``
                                         ``required``/``any``); where the calls cannot be constrained
                                         the requirement cannot be either (logged), as for ``tools``
=======================================  ================================================================

``format`` errors were answered with a 400 by the HTTP layer already (``parse_format``); tool schemas the
engine cannot enforce never fail a request, they only turn the constraint off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from ...errors import InternalError
from ..shaping import ResponsePlan
from .compiler import GrammarCompiler, GrammarState
from .format import FormatSpec
from .lark import Vocab, think_then_json
from .tools import ToolGrammarRequest, ToolGrammarUnavailable, enforced_tools, tool_call_grammar

log = logging.getLogger(__name__)

TOOL_GRAMMAR_OPTION = "tool_grammar"


def request_grammar(
    compiler: GrammarCompiler,
    plan: ResponsePlan,
    format_spec: FormatSpec | None,
    tools: Sequence[dict[str, Any]] | None,
    *,
    constrain_tools: bool = True,
    require_call: bool = False,
) -> GrammarState | None:
    """A fresh grammar state for one request, ``None`` when its output is unconstrained."""
    if format_spec is not None:
        if plan.think_tags is None:
            return compiler.new_state(format_spec)
        vocab = _vocab(compiler, plan.think_tags)
        schema = json.loads(format_spec.enforced_text)
        lark = think_then_json(vocab, plan.think_tags, schema, compiler.style, in_thinking=plan.in_thinking)
        return compiler.compile_lark(lark, "format after thinking").new_state()
    if not tools or plan.tool_format is None:
        return None
    if not constrain_tools:
        if require_call:
            log.warning("tool_choice asks for a call, but the tool_grammar option is off: calls are parsed only")
        return None
    try:
        req = ToolGrammarRequest(plan.tool_format, tuple(enforced_tools(tools)), plan.template, in_call=plan.in_call,
                                 think_tags=plan.think_tags, in_thinking=plan.in_thinking, required=require_call)
        markers = [plan.tool_format.tag, plan.tool_format.end_tag, "[ARGS]", *(plan.think_tags or ())]
        lark = tool_call_grammar(req, _vocab(compiler, markers))
        return compiler.compile_lark(lark, "tool calls").new_state()
    except (ToolGrammarUnavailable, InternalError) as exc:
        log.warning("tool calls are parsed but not constrained: %s", exc)
        return None


def _vocab(compiler: GrammarCompiler, markers: Sequence[str]) -> Vocab:
    return Vocab.of(compiler.ll_tokenizer, compiler.eos_token_ids, [m for m in markers if m],
                    special_ids=compiler.special_ids())
