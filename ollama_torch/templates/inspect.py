"""What Ollama learns from a template's parse tree rather than from rendering it.

* :func:`thinking_tags` is ``thinking.InferTags``: the text around ``{{ .Thinking }}`` inside a
  ``range .Messages`` gives the opening/closing reasoning tags; both found means the model has the
  ``thinking`` capability and its output is split on them.
* :func:`tool_call_tag` is ``tools.parseTag``: the first text inside ``{{ if .ToolCalls }}`` up to a
  ``{`` is the marker that starts a tool call in the model's output (``"{"`` when there is none).
"""

from __future__ import annotations

from .gotemplate.nodes import (
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    IfNode,
    ListNode,
    Node,
    PipeNode,
    RangeNode,
    TemplateNode,
    TextNode,
    go_trim_space,
)
from .ollama import OllamaTemplate


def _children(n: Node) -> list[Node]:
    if isinstance(n, ListNode):
        return list(n.nodes)
    if isinstance(n, BranchNode):
        return [x for x in (n.pipe, n.list, n.else_list) if x is not None]
    if isinstance(n, (ActionNode, TemplateNode)):
        return [n.pipe] if n.pipe is not None else []
    if isinstance(n, PipeNode):
        return list(n.cmds)
    if isinstance(n, CommandNode):
        return list(n.args)
    return []


def _range_over_messages(r: RangeNode) -> bool:
    stack: list[Node] = [r.pipe]
    while stack:
        n = stack.pop()
        if isinstance(n, FieldNode) and n.ident[0] == "Messages":
            return True
        stack.extend(_children(n))
    return False


def thinking_tags(t: OllamaTemplate) -> tuple[str, str]:
    """``(opening, closing)`` reasoning tags, ``("", "")`` where the template shows none."""
    opening = closing = ""
    ancestors: list[Node] = []

    def visit(n: Node) -> None:
        nonlocal opening, closing
        ancestors.append(n)
        if isinstance(n, FieldNode) and n.ident and n.ident[0] == "Thinking":
            rng = next((a for a in reversed(ancestors) if isinstance(a, RangeNode)), None)
            if rng is not None and _range_over_messages(rng):
                lst = next(a for a in reversed(ancestors) if isinstance(a, ListNode))
                if isinstance(lst.nodes[0], TextNode):
                    opening = go_trim_space(lst.nodes[0].text)
                if isinstance(lst.nodes[-1], TextNode):
                    closing = go_trim_space(lst.nodes[-1].text)
        for c in _children(n):
            visit(c)
        ancestors.pop()

    visit(t.template.root)
    return opening, closing


def _tool_calls_if(nodes: list[Node]) -> IfNode | None:
    for n in nodes:
        if isinstance(n, IfNode):
            for cmd in n.pipe.cmds:
                if any(isinstance(a, FieldNode) and "ToolCalls" in a.ident for a in cmd.args):
                    return n
        if isinstance(n, ListNode):
            found = _tool_calls_if(n.nodes)
        elif isinstance(n, BranchNode):
            found = _tool_calls_if(n.list.nodes) or (
                _tool_calls_if(n.else_list.nodes) if n.else_list else None
            )
        else:
            found = None
        if found is not None:
            return found
    return None


def _first_text(nodes: list[Node]) -> TextNode | None:
    """Depth-first, stopping at the first action or at the end of the first branch entered."""
    for n in nodes:
        if isinstance(n, TextNode):
            if go_trim_space(n.text):
                return n
        elif isinstance(n, ListNode):
            found = _first_text(n.nodes)
            if found is not None:
                return found
        elif isinstance(n, BranchNode):
            return _first_text(n.list.nodes) or (_first_text(n.else_list.nodes) if n.else_list else None)
        elif isinstance(n, ActionNode):
            return None
    return None


def tool_call_tag(t: OllamaTemplate) -> str:
    """The text that opens a tool call in model output, e.g. ``<tool_call>`` or ``[TOOL_CALLS]``."""
    node = _tool_calls_if(t.template.root.nodes)
    text = _first_text(node.list.nodes) if node is not None else None
    if text is None:
        return "{"
    tag = go_trim_space(text.text.replace("\r\n", "\n").split("{", 1)[0])
    return tag or "{"
