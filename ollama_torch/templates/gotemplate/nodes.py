"""The parse tree of a Go text/template: one dataclass per node kind of Go's ``text/template/parse``.

Node names, fields and ``str()`` forms follow Go's, because Ollama's prompt logic walks this tree
(``Identifiers``, ``deleteNode``, thinking-tag and tool-tag inference) and because execution errors
quote a node's source form (``executing "" at <.Foo.Bar>: ...``). ``pos`` is the offset of the node in
the template text, in characters; :func:`location` turns it into Go's ``line:byte-column``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from .gofmt import go_quote


@dataclass
class Node:
    pos: int

    def copy(self: _N) -> _N:
        return copy.deepcopy(self)


_N = TypeVar("_N", bound=Node)


@dataclass
class TextNode(Node):
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class ListNode(Node):
    nodes: list[Node] = field(default_factory=list)

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


@dataclass
class IdentifierNode(Node):
    """A function name."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass
class VariableNode(Node):
    """``$x.Field.Sub``: ident[0] is the variable (``$`` alone is the data root)."""

    ident: list[str]

    def __str__(self) -> str:
        return ".".join(self.ident)


@dataclass
class DotNode(Node):
    def __str__(self) -> str:
        return "."


@dataclass
class NilNode(Node):
    def __str__(self) -> str:
        return "nil"


@dataclass
class FieldNode(Node):
    """``.A.B``: ident holds ``["A", "B"]``."""

    ident: list[str]

    def __str__(self) -> str:
        return "".join("." + i for i in self.ident)


@dataclass
class BoolNode(Node):
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


Number: TypeAlias = int | float | complex


@dataclass
class NumberNode(Node):
    text: str
    value: Number

    def __str__(self) -> str:
        return self.text


@dataclass
class StringNode(Node):
    quoted: str
    text: str

    def __str__(self) -> str:
        return self.quoted


@dataclass
class PipeNode(Node):
    line: int
    decl: list[VariableNode] = field(default_factory=list)
    is_assign: bool = False
    cmds: list[CommandNode] = field(default_factory=list)

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


@dataclass
class ChainNode(Node):
    """A term followed by field accesses: ``(pipeline).Field``."""

    node: Node
    fields: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return head + "".join("." + f for f in self.fields)


@dataclass
class CommandNode(Node):
    args: list[Node] = field(default_factory=list)

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


@dataclass
class ActionNode(Node):
    line: int
    pipe: PipeNode

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


@dataclass
class BranchNode(Node):
    """Common shape of if / range / with."""

    line: int
    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None

    keyword = "branch"

    def __str__(self) -> str:
        s = "{{" + self.keyword + " " + str(self.pipe) + "}}" + str(self.list)
        if self.else_list is not None:
            s += "{{else}}" + str(self.else_list)
        return s + "{{end}}"


@dataclass
class IfNode(BranchNode):
    keyword = "if"


@dataclass
class RangeNode(BranchNode):
    keyword = "range"


@dataclass
class WithNode(BranchNode):
    keyword = "with"


@dataclass
class TemplateNode(Node):
    """``{{template "name" pipeline}}``; pipe is None when no pipeline was given."""

    line: int
    name: str
    pipe: PipeNode | None

    def __str__(self) -> str:
        s = "{{template " + go_quote(self.name)
        if self.pipe is not None:
            s += " " + str(self.pipe)
        return s + "}}"


@dataclass
class BreakNode(Node):
    line: int

    def __str__(self) -> str:
        return "{{break}}"


@dataclass
class ContinueNode(Node):
    line: int

    def __str__(self) -> str:
        return "{{continue}}"


@dataclass
class EndNode(Node):
    """``{{end}}``: produced while parsing, never left in a tree."""

    def __str__(self) -> str:
        return "{{end}}"


@dataclass
class ElseNode(Node):
    """``{{else}}``: produced while parsing, never left in a tree."""

    line: int

    def __str__(self) -> str:
        return "{{else}}"


def location(text: str, pos: int) -> str:
    """Go's ``line:column`` for an offset, the column counted in UTF-8 bytes from 0 as Go does."""
    before = text[:pos]
    line_start = before.rfind("\n") + 1
    column = len(before[line_start:].encode("utf-8", "surrogatepass"))
    return f"{before.count(chr(10)) + 1}:{column}"


# unicode.IsSpace: what Go's strings.TrimSpace / bytes.TrimSpace remove.
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def go_trim_space(s: str) -> str:
    return s.strip(GO_SPACE)


def is_empty_tree(node: Node | None) -> bool:
    """Go's ``parse.IsEmptyTree``: only whitespace text (so a ``define`` may replace it)."""
    if node is None:
        return True
    if isinstance(node, ListNode):
        return all(is_empty_tree(n) for n in node.nodes)
    if isinstance(node, TextNode):
        return go_trim_space(node.text) == ""
    return False
