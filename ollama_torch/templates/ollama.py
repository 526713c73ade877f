"""Ollama's prompt semantics for Go ``TEMPLATE``\\s (Ollama's ``template/template.go``).

:class:`OllamaTemplate` parses a template the way Ollama does (appending ``{{ .Response }}`` when the
template names neither ``.Messages`` nor ``.Response``), reports the variables it uses, and renders:

* with ``.Prompt`` and ``.Suffix`` for fill-in-the-middle, when both are set;
* once, with ``.Messages``/``.System``/``.Tools``, when the template references ``.Messages``;
* otherwise the legacy way: messages are collated, the template runs once per user/assistant turn
  with ``.System``/``.Prompt``/``.Response``, and the last run is cut right after the first
  ``.Response`` so the reply is left open for the model to continue.

Messages and tools are the API's dicts (``{"role", "content", "images", "tool_calls": [{"function":
{"name", "arguments"}}], "tool_name", "thinking"}``); ``ollama_values`` turns them into Go values.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .gotemplate import ParseError, Template
from .gotemplate.nodes import (
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    ListNode,
    Node,
    PipeNode,
    TemplateNode,
    VariableNode,
)
from .ollama_values import OLLAMA_FUNCS, Message, Tools

ThinkValue = bool | str | None
THINK_LEVELS = ("high", "medium", "low", "max")


def think_fields(think: ThinkValue) -> tuple[bool, str, bool]:
    """``(.Think, .ThinkLevel, .IsThinkSet)`` for a request's ``think`` (``api.ThinkValue``):
    ``true`` means level ``"medium"``, a level string means thinking is on."""
    if think is None:
        return False, "", False
    if isinstance(think, bool):
        return think, "medium" if think else "", True
    return think in THINK_LEVELS, think, True


@dataclass(frozen=True)
class Values:
    """Ollama's ``template.Values``: everything a template can be rendered from."""

    messages: Sequence[Mapping[str, Any]] = ()
    tools: Sequence[Mapping[str, Any]] | None = None
    prompt: str = ""
    suffix: str = ""
    think: bool = False
    think_level: str = ""
    is_think_set: bool = False
    force_legacy: bool = field(default=False, repr=False)  # render a .Messages template the legacy way

    @classmethod
    def with_think(cls, think: ThinkValue, **kwargs: Any) -> Values:
        t, level, is_set = think_fields(think)
        return cls(think=t, think_level=level, is_think_set=is_set, **kwargs)


def collate(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Merge consecutive messages of one role (not ``tool``) with a blank line between their
    contents, and join every system message's content: ``(system, messages)``. Inputs are not changed.
    A run's contents are joined once at its end: appending to the string message by message copied the
    run so far each time (quadratic in a long run of one role)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    parts: list[list[str]] = []  # the contents of each message in out
    for m in messages:
        role, content = m.get("role", ""), m.get("content") or ""
        if role == "system":
            system.append(content)
        if out and out[-1].get("role", "") == role and role != "tool":
            parts[-1].append(content)
        else:
            out.append(dict(m))
            parts.append([m.get("content") or ""])
    for msg, contents in zip(out, parts, strict=True):
        if len(contents) > 1:
            msg["content"] = "\n\n".join(contents)
    return "\n\n".join(system), out


def identifiers(node: Node | None) -> list[str]:
    """Ollama's ``Identifiers``: field and variable names referenced by a node, unlowered."""
    if isinstance(node, ListNode):
        return [i for n in node.nodes for i in identifiers(n)]
    if isinstance(node, TemplateNode):
        if node.pipe is None:
            raise ParseError("undefined template specified")
        return identifiers(node.pipe)
    if isinstance(node, ActionNode):
        return identifiers(node.pipe)
    if isinstance(node, BranchNode):
        return identifiers(node.pipe) + identifiers(node.list) + identifiers(node.else_list)
    if isinstance(node, PipeNode):
        return [i for c in node.cmds for a in c.args for i in identifiers(a)]
    if isinstance(node, (FieldNode, VariableNode)):
        return list(node.ident)
    return []


def _response_action() -> ActionNode:
    field_node = FieldNode(0, ["Response"])
    return ActionNode(0, 0, PipeNode(0, 0, cmds=[CommandNode(0, [field_node])]))


def cut_after_response(root: ListNode) -> ListNode:
    """A copy of ``root`` without anything after the first ``.Response`` field (Ollama's
    ``deleteNode``): conditions are not searched, and a command that loses all its arguments takes
    its whole action with it. Where Go would crash (an ``else`` after a cut inside its ``if``), the
    ``else`` is dropped."""
    cut = False

    def walk(n: Node) -> Node | None:
        nonlocal cut
        if isinstance(n, FieldNode) and "Response" in n.ident:
            cut = True
            return n
        if cut:
            return None
        if isinstance(n, ListNode):
            n.nodes = [c for c in (walk(c) for c in n.nodes) if c is not None]
        elif isinstance(n, BranchNode):
            n.list = walk(n.list)  # type: ignore[assignment]  # a list is never cut itself here
            if n.else_list is not None:
                n.else_list = walk(n.else_list)  # type: ignore[assignment]
        elif isinstance(n, ActionNode):
            pipe = walk(n.pipe)
            if pipe is None:
                return None
            n.pipe = pipe  # type: ignore[assignment]
        elif isinstance(n, PipeNode):
            cmds = []
            for c in n.cmds:
                args = [a for a in (walk(a) for a in c.args) if a is not None]
                if not args:
                    return None
                c.args = args
                cmds.append(c)
            n.cmds = cmds
        return n

    out = walk(root.copy())
    assert isinstance(out, ListNode)
    return out


class OllamaTemplate:
    """A model's Go ``TEMPLATE``, parsed and rendered as Ollama does."""

    def __init__(self, raw: str, template: Template) -> None:
        self.raw = raw
        self.template = template

    @classmethod
    def parse(cls, text: str) -> OllamaTemplate:
        """Parse Ollama-style; a bad template raises :class:`TemplateError` with Go's message."""
        tmpl = Template.parse(text, OLLAMA_FUNCS, missingkey="zero")
        t = cls(text, tmpl)
        names = t.vars()
        if "messages" not in names and "response" not in names:
            tmpl.root.nodes.append(_response_action())
            t.__dict__.pop("_vars", None)
        return t

    @classmethod
    def default(cls) -> OllamaTemplate:
        """Ollama's ``DefaultTemplate``: ``{{ .Prompt }}``."""
        return _default()

    def __str__(self) -> str:
        return self.raw

    @functools.cached_property
    def _vars(self) -> list[str]:
        names = {
            i.lower() for tree in self.template.trees.values() for n in tree.nodes for i in identifiers(n)
        }
        return sorted(names)

    def vars(self) -> list[str]:
        """Referenced names, lower-cased and sorted, as Ollama's ``Vars()`` (``$`` included)."""
        return list(self._vars)

    def contains(self, s: str) -> bool:
        return s in self.raw

    @property
    def uses_messages(self) -> bool:
        return "messages" in self._vars

    @property
    def uses_tools(self) -> bool:
        """Ollama's ``tools`` capability."""
        return "tools" in self._vars

    @property
    def uses_suffix(self) -> bool:
        """Ollama's ``insert`` capability."""
        return "suffix" in self._vars

    @property
    def uses_thinking(self) -> bool:
        """Whether the template reads ``.Thinking``, ``.Think``, ``.ThinkLevel`` or ``.IsThinkSet``
        (Ollama's ``thinking`` capability is :func:`inspect.thinking_tags` finding tags)."""
        return bool({"thinking", "think", "thinklevel", "isthinkset"} & set(self._vars))

    @property
    def uses_response(self) -> bool:
        return "response" in self._vars

    def execute(self, v: Values) -> str:
        """Ollama's ``Template.Execute``."""
        system, msgs = collate(v.messages)
        think = {"Think": v.think, "ThinkLevel": v.think_level, "IsThinkSet": v.is_think_set}
        if v.prompt and v.suffix:
            return self.template.execute({"Prompt": v.prompt, "Suffix": v.suffix, "Response": "", **think})
        if self.uses_messages and not v.force_legacy:
            data = {
                "System": system,
                "Messages": [Message.from_api(m) for m in msgs],
                "Tools": Tools.from_api(v.tools),
                "Response": "",
                **think,
            }
            return self.template.execute(data)
        return self._execute_legacy(msgs, think)

    def _execute_legacy(self, msgs: list[dict[str, Any]], think: dict[str, Any]) -> str:
        out: list[str] = []
        turn = {"System": "", "Prompt": "", "Response": ""}

        def flush() -> None:
            out.append(self.template.execute({**turn, **think}))
            turn.update(System="", Prompt="", Response="")

        for m in msgs:
            role, content = m.get("role"), m.get("content") or ""
            if role == "system":
                if turn["Prompt"] or turn["Response"]:
                    flush()
                turn["System"] = content
            elif role == "user":
                if turn["Response"]:
                    flush()
                turn["Prompt"] = content
            elif role == "assistant":
                turn["Response"] = content
        # The last turn runs without Ollama's functions or defined templates and with the default
        # missingkey, as Ollama re-wraps the cut tree in a bare template.
        root = cut_after_response(self.template.root)
        out.append(
            self.template.execute_tree(root, {**turn, **think}, funcs={}, templates={}, missingkey="default")
        )
        return "".join(out)

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        think: ThinkValue = None,
    ) -> str:
        """The prompt for a chat turn (``/api/chat``, before truncation)."""
        return self.execute(Values.with_think(think, messages=messages, tools=tools))

    def render_generate(
        self,
        prompt: str,
        *,
        system: str = "",
        suffix: str = "",
        images: Sequence[Any] = (),
        messages: Sequence[Mapping[str, Any]] = (),
        think: ThinkValue = None,
    ) -> str:
        """The prompt for ``/api/generate``: with a suffix, ``.Prompt``/``.Suffix`` only (the system
        prompt is not used, as in Ollama); otherwise a system message (the request's or the model's),
        the model's ``MESSAGE``\\s, then the prompt as a user message carrying ``images``."""
        if suffix:
            return self.execute(Values.with_think(think, prompt=prompt, suffix=suffix))
        msgs: list[Mapping[str, Any]] = [{"role": "system", "content": system}] if system else []
        msgs += list(messages)
        user: dict[str, Any] = {"role": "user", "content": prompt}
        if images:
            user["images"] = list(images)
        msgs.append(user)
        # Ollama renders this through chatPrompt with an empty, non-nil tool list.
        return self.execute(Values.with_think(think, messages=msgs, tools=[]))


@functools.cache
def _default() -> OllamaTemplate:
    return OllamaTemplate.parse("{{ .Prompt }}")
