"""The parser of Go's text/template: tokens to parse trees, one per template name.

Mirrors Go's ``text/template/parse/parse.go`` closely enough that templates Go accepts parse to the
same trees and templates Go rejects fail with Go's message (``template: :1: unexpected "}" in
operand``, ``function "foo" not defined``, ``undefined variable "$x"``, ``unexpected EOF``...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import ParseError
from .gofmt import go_quote
from .lexer import T, Token, lex
from .literals import LiteralError, parse_number, unquote
from .nodes import (
    ActionNode,
    BoolNode,
    BranchNode,
    BreakNode,
    ChainNode,
    CommandNode,
    ContinueNode,
    DotNode,
    ElseNode,
    EndNode,
    FieldNode,
    IdentifierNode,
    IfNode,
    ListNode,
    NilNode,
    Node,
    NumberNode,
    PipeNode,
    RangeNode,
    StringNode,
    TemplateNode,
    TextNode,
    VariableNode,
    WithNode,
    is_empty_tree,
)

# Go allows 10,000 nested parentheses; Python's stack allows fewer.
MAX_DEPTH = 100
# Nested bodies ({{if}}, {{range}}, {{with}}, {{block}}, {{define}}): Go has no limit; this one does not depend
# on Python's recursion limit, which other code may raise for the whole process (torch.compile does).
MAX_NESTING = 100

_OPERAND_START = {
    T.BOOL, T.CHAR_CONSTANT, T.COMPLEX, T.DOT, T.FIELD, T.IDENTIFIER, T.NUMBER, T.NIL,
    T.RAW_STRING, T.STRING, T.VARIABLE, T.LEFT_PAREN,
}  # fmt: skip


class _Parser:
    """The token cursor shared by the top-level template and the ``define``/``block`` bodies in it."""

    def __init__(self, text: str, has_func: Callable[[str], bool]) -> None:
        self.tokens = lex(text)
        self.i = 0
        self.hi = 0  # furthest token read: Go reports errors at its line
        self.has_func = has_func
        self.trees: dict[str, ListNode] = {}
        # per-tree state (Go keeps these on each Tree; a define body starts them afresh)
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.action_line = 0
        self.depth = 0
        self.nesting = 0

    # --- token cursor -------------------------------------------------------------------------

    def next(self) -> Token:
        tok = self.tokens[min(self.i, len(self.tokens) - 1)]
        self.i += 1
        self.hi = max(self.hi, self.i - 1)
        return tok

    def backup(self, n: int = 1) -> None:
        self.i -= n

    def peek(self) -> Token:
        tok = self.next()
        self.backup()
        return tok

    def next_non_space(self) -> Token:
        tok = self.next()
        while tok.typ == T.SPACE:
            tok = self.next()
        return tok

    def peek_non_space(self) -> Token:
        tok = self.next_non_space()
        self.backup()
        return tok

    # --- errors ---------------------------------------------------------------------------------

    def errorf(self, msg: str) -> ParseError:
        line = self.tokens[min(self.hi, len(self.tokens) - 1)].line
        return ParseError(f"template: :{line}: {msg}")

    def unexpected(self, tok: Token, context: str) -> ParseError:
        if tok.typ == T.ERROR:
            extra = ""
            if self.action_line not in (0, tok.line):
                extra = f" in action started at :{self.action_line}"
                if tok.val.endswith(" action"):
                    extra = extra[len(" in action") :]
            return self.errorf(f"{tok}{extra}")
        return self.errorf(f"unexpected {tok} in {context}")

    def expect(self, typ: T, context: str) -> Token:
        tok = self.next_non_space()
        if tok.typ != typ:
            raise self.unexpected(tok, context)
        return tok

    @contextmanager
    def fresh_tree(self) -> Iterator[None]:
        """A define/block body: its own variables and range depth, as Go's new Tree has."""
        saved = (self.vars, self.range_depth)
        self.vars, self.range_depth = ["$"], 0
        try:
            yield
        finally:
            self.vars, self.range_depth = saved

    def add(self, name: str, root: ListNode) -> None:
        old = self.trees.get(name)
        if old is None or is_empty_tree(old):
            self.trees[name] = root
        elif not is_empty_tree(root):
            raise self.errorf(f"template: multiple definition of template {go_quote(name)}")

    # --- grammar --------------------------------------------------------------------------------

    def parse(self) -> dict[str, ListNode]:
        root = ListNode(self.peek().pos)
        while self.peek().typ != T.EOF:
            if self.peek().typ == T.LEFT_DELIM:
                mark = self.i
                self.next()
                if self.next_non_space().typ == T.DEFINE:
                    with self.fresh_tree():
                        self.parse_definition()
                    continue
                self.i = mark
            n = self.text_or_action()
            if isinstance(n, (EndNode, ElseNode)):
                raise self.errorf(f"unexpected {n}")
            root.nodes.append(n)
        self.add("", root)
        return self.trees

    def parse_definition(self) -> None:
        context = "define clause"
        tok = self.next_non_space()
        if tok.typ not in (T.STRING, T.RAW_STRING):
            raise self.unexpected(tok, context)
        name = self.unquote(tok.val)
        self.expect(T.RIGHT_DELIM, context)
        body, end = self.item_list()
        if not isinstance(end, EndNode):
            raise self.errorf(f"unexpected {end} in {context}")
        self.add(name, body)

    def item_list(self) -> tuple[ListNode, Node]:
        if self.nesting >= MAX_NESTING:
            raise ParseError("template: nesting too deep")
        self.nesting += 1
        try:
            lst = ListNode(self.peek_non_space().pos)
            while self.peek_non_space().typ != T.EOF:
                n = self.text_or_action()
                if isinstance(n, (EndNode, ElseNode)):
                    return lst, n
                lst.nodes.append(n)
            raise self.errorf("unexpected EOF")
        finally:
            self.nesting -= 1

    def text_or_action(self) -> Node:
        tok = self.next_non_space()
        if tok.typ == T.TEXT:
            return TextNode(tok.pos, tok.val)
        if tok.typ == T.LEFT_DELIM:
            self.action_line = tok.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        raise self.unexpected(tok, "input")

    def action(self) -> Node:
        tok = self.next_non_space()
        if tok.typ == T.BLOCK:
            return self.block_control()
        if tok.typ in (T.BREAK, T.CONTINUE):
            word = "break" if tok.typ == T.BREAK else "continue"
            t = self.next_non_space()
            if t.typ != T.RIGHT_DELIM:
                raise self.unexpected(t, "{{" + word + "}}")
            if self.range_depth == 0:
                raise self.errorf("{{" + word + "}} outside {{range}}")
            return BreakNode(tok.pos, tok.line) if tok.typ == T.BREAK else ContinueNode(tok.pos, tok.line)
        if tok.typ == T.ELSE:
            peek = self.peek_non_space()
            if peek.typ in (T.IF, T.WITH):
                return ElseNode(peek.pos, peek.line)
            t = self.expect(T.RIGHT_DELIM, "else")
            return ElseNode(t.pos, t.line)
        if tok.typ == T.END:
            return EndNode(self.expect(T.RIGHT_DELIM, "end").pos)
        if tok.typ == T.IF:
            return self.control(IfNode, "if")
        if tok.typ == T.RANGE:
            return self.control(RangeNode, "range")
        if tok.typ == T.WITH:
            return self.control(WithNode, "with")
        if tok.typ == T.TEMPLATE:
            return self.template_control()
        self.backup()
        tok = self.peek()
        return ActionNode(tok.pos, tok.line, self.pipeline("command", T.RIGHT_DELIM))

    def control(self, cls: type[BranchNode], context: str) -> BranchNode:
        nvars = len(self.vars)
        try:
            pipe = self.pipeline(context, T.RIGHT_DELIM)
            if context == "range":
                self.range_depth += 1
            body, nxt = self.item_list()
            if context == "range":
                self.range_depth -= 1
            else_list: ListNode | None = None
            if isinstance(nxt, ElseNode):
                if (context, self.peek().typ) in (("if", T.IF), ("with", T.WITH)):
                    self.next()
                    else_list = ListNode(nxt.pos, [self.control(cls, context)])
                else:
                    else_list, nxt = self.item_list()
                    if not isinstance(nxt, EndNode):
                        raise self.errorf(f"expected end; found {nxt}")
            return cls(pipe.pos, pipe.line, pipe, body, else_list)
        finally:
            del self.vars[nvars:]

    def block_control(self) -> Node:
        context = "block clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = self.pipeline(context, T.RIGHT_DELIM)
        with self.fresh_tree():
            body, end = self.item_list()
            if not isinstance(end, EndNode):
                raise self.errorf(f"unexpected {end} in {context}")
            self.add(name, body)
        return TemplateNode(tok.pos, tok.line, name, pipe)

    def template_control(self) -> Node:
        context = "template clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = None
        if self.next_non_space().typ != T.RIGHT_DELIM:
            self.backup()
            pipe = self.pipeline(context, T.RIGHT_DELIM)
        return TemplateNode(tok.pos, tok.line, name, pipe)

    def template_name(self, tok: Token, context: str) -> str:
        if tok.typ not in (T.STRING, T.RAW_STRING):
            raise self.unexpected(tok, context)
        return self.unquote(tok.val)

    def unquote(self, lit: str) -> str:
        try:
            return unquote(lit)
        except LiteralError as e:
            raise self.errorf(str(e)) from None

    def pipeline(self, context: str, end: T) -> PipeNode:
        tok = self.peek_non_space()
        pipe = PipeNode(tok.pos, tok.line)
        while self.peek_non_space().typ == T.VARIABLE:  # declarations: $x := / $i, $e :=
            mark = self.i
            v = self.next_non_space()
            nxt = self.peek_non_space()
            if nxt.typ in (T.ASSIGN, T.DECLARE):
                pipe.is_assign = nxt.typ == T.ASSIGN
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, [v.val]))
                self.vars.append(v.val)
            elif nxt.typ == T.CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, [v.val]))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (T.VARIABLE, T.RIGHT_DELIM, T.RIGHT_PAREN):
                        continue
                    raise self.errorf("range can only initialize variables")
                raise self.errorf(f"too many declarations in {context}")
            else:
                self.i = mark
            break
        while True:
            tok = self.next_non_space()
            if tok.typ == end:
                self.check_pipeline(pipe, context)
                return pipe
            if tok.typ not in _OPERAND_START:
                raise self.unexpected(tok, context)
            self.backup()
            pipe.cmds.append(self.command())

    def check_pipeline(self, pipe: PipeNode, context: str) -> None:
        if not pipe.cmds:
            raise self.errorf(f"missing value for {context}")
        for i, c in enumerate(pipe.cmds[1:]):
            if isinstance(c.args[0], (BoolNode, DotNode, NilNode, NumberNode, StringNode)):
                raise self.errorf(f"non executable command in pipeline stage {i + 2}")

    def command(self) -> CommandNode:
        cmd = CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.typ == T.SPACE:
                continue
            if tok.typ in (T.RIGHT_DELIM, T.RIGHT_PAREN):
                self.backup()
            elif tok.typ != T.PIPE:
                raise self.unexpected(tok, "operand")
            break
        if not cmd.args:
            raise self.errorf("empty command")
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None or self.peek().typ != T.FIELD:
            return node
        chain = ChainNode(self.peek().pos, node)
        while self.peek().typ == T.FIELD:
            chain.fields.append(self.next().val[1:])
        if isinstance(node, FieldNode):
            return FieldNode(chain.pos, node.ident + chain.fields)
        if isinstance(node, VariableNode):
            return VariableNode(chain.pos, node.ident + chain.fields)
        if isinstance(node, (BoolNode, StringNode, NumberNode, NilNode, DotNode)):
            raise self.errorf(f"unexpected . after term {go_quote(str(node))}")
        return chain

    def term(self) -> Node | None:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == T.IDENTIFIER:
            if not self.has_func(tok.val):
                raise self.errorf(f"function {go_quote(tok.val)} not defined")
            return IdentifierNode(tok.pos, tok.val)
        if typ == T.DOT:
            return DotNode(tok.pos)
        if typ == T.NIL:
            return NilNode(tok.pos)
        if typ == T.VARIABLE:
            ident = tok.val.split(".")
            if ident[0] not in self.vars:
                raise self.errorf(f"undefined variable {go_quote(ident[0])}")
            return VariableNode(tok.pos, ident)
        if typ == T.FIELD:
            return FieldNode(tok.pos, tok.val[1:].split("."))
        if typ == T.BOOL:
            return BoolNode(tok.pos, tok.val == "true")
        if typ in (T.CHAR_CONSTANT, T.COMPLEX, T.NUMBER):
            kind = {T.CHAR_CONSTANT: "char", T.COMPLEX: "complex"}.get(typ, "number")
            try:
                value, _ = parse_number(tok.val, kind)
            except LiteralError as e:
                raise self.errorf(str(e)) from None
            return NumberNode(tok.pos, tok.val, value)
        if typ == T.LEFT_PAREN:
            if self.depth >= MAX_DEPTH:
                raise self.errorf("max expression depth exceeded")
            self.depth += 1
            try:
                return self.pipeline("parenthesized pipeline", T.RIGHT_PAREN)
            finally:
                self.depth -= 1
        if typ in (T.STRING, T.RAW_STRING):
            return StringNode(tok.pos, tok.val, self.unquote(tok.val))
        self.backup()
        return None


def parse(text: str, has_func: Callable[[str], bool]) -> dict[str, ListNode]:
    """Parse template text into its trees: ``""`` for the text itself plus one per define/block."""
    return _Parser(text, has_func).parse()
