"""Executing a parsed Go template against Python data (see ``values.py`` for the value mapping).

Statements, as Go's ``text/template/exec.go`` runs them: text is copied, actions print their value
with Go's rules (a missing value prints ``<no value>``), ``if``/``with`` test Go truth, ``range``
walks lists, maps (sorted keys) and ints with ``else``/``break``/``continue``, ``template`` runs a
defined template with a fresh ``$``, and variables declared in a control structure end with it.
Expressions are ``evaluate.py``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .evaluate import NIL_IFACE, Evaluator, MissingKey, plain
from .funcs import Func
from .gofmt import go_quote, sprint_value
from .nodes import (
    ActionNode,
    BreakNode,
    ContinueNode,
    IfNode,
    ListNode,
    Node,
    RangeNode,
    TemplateNode,
    TextNode,
    WithNode,
)
from .values import go_type, is_int, is_list, is_map, is_struct, is_true, sorted_items

__all__ = ["MissingKey", "State", "execute"]

# Go allows 100,000 nested {{template}} calls; Python's stack allows far fewer.
MAX_TEMPLATE_DEPTH = 100


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class State(Evaluator):
    def __init__(
        self,
        text: str,
        name: str,
        templates: Mapping[str, ListNode],
        funcs: Mapping[str, Func],
        missingkey: MissingKey,
        out: list[str],
        data: Any,
        depth: int = 0,
    ) -> None:
        super().__init__(text, name, funcs, missingkey, data)
        self.templates, self.out, self.depth = templates, out, depth

    def walk(self, dot: Any, node: Node) -> None:
        self.node = node
        if isinstance(node, ActionNode):
            val = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.print_value(node, val)
        elif isinstance(node, TextNode):
            self.out.append(node.text)
        elif isinstance(node, ListNode):
            for n in node.nodes:
                self.walk(dot, n)
        elif isinstance(node, (IfNode, WithNode)):
            mark = len(self.vars)
            val = self.eval_pipeline(dot, node.pipe)
            if is_true(plain(val)):
                self.walk(val if isinstance(node, WithNode) else dot, node.list)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
            del self.vars[mark:]
        elif isinstance(node, RangeNode):
            self.walk_range(dot, node)
        elif isinstance(node, TemplateNode):
            self.walk_template(dot, node)
        elif isinstance(node, BreakNode):
            raise _Break
        elif isinstance(node, ContinueNode):
            raise _Continue
        else:
            raise self.error(f"unknown node: {node}")

    def walk_range(self, dot: Any, r: RangeNode) -> None:
        self.node = r
        outer = len(self.vars)
        val = plain(self.eval_pipeline(dot, r.pipe))
        mark = len(self.vars)
        decl, assign = r.pipe.decl, r.pipe.is_assign

        def one(index: Any, elem: Any) -> None:
            if decl:
                if assign:
                    self.set_var(decl[0].ident[0], index if len(decl) > 1 else elem)
                else:
                    self.vars[-1][1] = elem
            if len(decl) > 1:
                if assign:
                    self.set_var(decl[1].ident[0], elem)
                else:
                    self.vars[-2][1] = index
            try:
                self.walk(elem, r.list)
            except _Continue:
                pass
            finally:
                del self.vars[mark:]

        items: list[tuple[Any, Any]]
        if is_int(val):
            if len(decl) > 1:
                raise self.error(f"can't use {sprint_value(val)} to iterate over more than one variable")
            items = [(None, i) for i in range(val)]
        elif is_list(val):
            items = list(enumerate(val))
        elif is_map(val):
            items = sorted_items(val)
        elif val is None:
            items = []
        else:
            raise self.error(f"range can't iterate over {sprint_value(val)}")
        try:
            for index, elem in items:
                one(index, NIL_IFACE if elem is None else elem)
        except _Break:
            pass
        if not items and r.else_list is not None:
            self.walk(dot, r.else_list)
        del self.vars[outer:]

    def walk_template(self, dot: Any, t: TemplateNode) -> None:
        self.node = t
        tree = self.templates.get(t.name)
        if tree is None:
            raise self.error(f"template {go_quote(t.name)} not defined")
        if self.depth >= MAX_TEMPLATE_DEPTH:
            raise self.error(f"exceeded maximum template depth ({MAX_TEMPLATE_DEPTH})")
        dot = plain(self.eval_pipeline(dot, t.pipe))
        sub = State(
            self.text, t.name, self.templates, self.funcs, self.missingkey, self.out, dot, self.depth + 1
        )
        sub.walk(dot, tree)

    def print_value(self, node: Node, v: Any) -> None:
        self.node = node
        v = plain(v)
        if v is None:
            self.out.append("<no value>")
        elif callable(v) and not is_struct(v) and not is_map(v):
            raise self.error(f"can't print {node} of type {go_type(v)}")
        else:
            self.out.append(sprint_value(v))

    # --- evaluation -----------------------------------------------------------------------------


def execute(
    text: str,
    name: str,
    root: ListNode,
    templates: Mapping[str, ListNode],
    funcs: Mapping[str, Func],
    data: Any,
    missingkey: MissingKey = "default",
) -> str:
    """Run one tree (``root``) with ``data`` as dot; ``templates`` serve ``{{template}}`` calls."""
    out: list[str] = []
    State(text, name, templates, funcs, missingkey, out, data).walk(data, root)
    return "".join(out)
