"""Evaluating a Go template's expressions: pipelines, commands, fields, variables, function calls.

Follows Go's ``text/template/exec.go``: a pipeline passes each command's value as the last argument
of the next; ``.A.B`` looks up struct fields, map keys or ``GO_METHODS``; ``and``/``or`` evaluate
their arguments lazily; arguments are checked against a function's Go parameter types; and errors
read like Go's (``template: :1:5: executing "" at <.A.B>: nil pointer evaluating interface {}.B``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .errors import ExecError
from .funcs import ANY, BUILTINS, INT, STRING, Func, FuncError
from .gofmt import go_quote, sprint_value
from .literals import INT64_MAX, INT64_MIN
from .nodes import (
    BoolNode,
    ChainNode,
    CommandNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    NilNode,
    Node,
    NumberNode,
    PipeNode,
    StringNode,
    VariableNode,
    location,
)
from .values import go_method, go_type, is_int, is_map, is_struct, is_true

MissingKey = Literal["default", "zero", "error"]


class _Missing:
    """Go's ``missingVal``: no value was piped into a command."""


MISSING: Any = _Missing()


class _NilIface:
    """A nil found inside a value (a map entry or field holding nil): reaching through it is an error,
    unlike an absent value, which quietly yields ``<no value>``."""


NIL_IFACE: Any = _NilIface()


def plain(v: Any) -> Any:
    return None if v is NIL_IFACE else v


class Evaluator:
    """Expression evaluation over a variable stack; :class:`execute.State` adds the statements."""

    def __init__(
        self, text: str, name: str, funcs: Mapping[str, Func], missingkey: MissingKey, data: Any
    ) -> None:
        self.text, self.name, self.funcs, self.missingkey = text, name, funcs, missingkey
        self.vars: list[list[Any]] = [["$", data]]
        self.node: Node | None = None

    def error(self, msg: str) -> ExecError:
        if self.node is None:
            return ExecError(f"template: {self.name}: {msg}")
        loc = location(self.text, self.node.pos)
        return ExecError(f"template: :{loc}: executing {go_quote(self.name)} at <{self.node}>: {msg}")

    def set_var(self, name: str, value: Any) -> None:
        for v in reversed(self.vars):
            if v[0] == name:
                v[1] = value
                return
        raise self.error(f"undefined variable: {name}")

    def var_value(self, name: str) -> Any:
        for v in reversed(self.vars):
            if v[0] == name:
                return v[1]
        raise self.error(f"undefined variable: {name}")

    def eval_pipeline(self, dot: Any, pipe: PipeNode | None) -> Any:
        if pipe is None:
            return None
        self.node = pipe
        value: Any = MISSING
        for cmd in pipe.cmds:
            value = plain(self.eval_command(dot, cmd, value))
        for v in pipe.decl:
            if pipe.is_assign:
                self.set_var(v.ident[0], value)
            else:
                self.vars.append([v.ident[0], value])
        return value

    def not_a_function(self, args: list[Node], final: Any) -> None:
        if len(args) > 1 or final is not MISSING:
            raise self.error(f"can't give argument to non-function {args[0]}")

    def eval_command(self, dot: Any, cmd: CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, FieldNode):
            self.node = first
            return self.eval_field_chain(dot, dot, first, first.ident, cmd.args, final)
        if isinstance(first, ChainNode):
            return self.eval_chain(dot, first, cmd.args, final)
        if isinstance(first, IdentifierNode):
            return self.eval_function(dot, first, cmd, cmd.args, final)
        if isinstance(first, PipeNode):
            self.not_a_function(cmd.args, final)
            return self.eval_pipeline(dot, first)
        if isinstance(first, VariableNode):
            return self.eval_variable(dot, first, cmd.args, final)
        self.node = first
        self.not_a_function(cmd.args, final)
        if isinstance(first, BoolNode):
            return first.value
        if isinstance(first, DotNode):
            return dot
        if isinstance(first, NilNode):
            raise self.error("nil is not a command")
        if isinstance(first, NumberNode):
            return self.ideal_constant(first)
        if isinstance(first, StringNode):
            return first.text
        raise self.error(f"can't evaluate command {go_quote(str(first))}")

    def ideal_constant(self, n: NumberNode) -> Any:
        self.node = n
        if isinstance(n.value, int) and not INT64_MIN <= n.value <= INT64_MAX:
            raise self.error(f"{n.text} overflows int")
        return n.value

    def eval_chain(self, dot: Any, chain: ChainNode, args: list[Node], final: Any) -> Any:
        self.node = chain
        if isinstance(chain.node, NilNode):
            raise self.error(f"indirection through explicit nil in {chain}")
        recv = self.eval_arg(dot, ANY, chain.node)
        return self.eval_field_chain(dot, recv, chain, chain.fields, args, final)

    def eval_variable(self, dot: Any, var: VariableNode, args: list[Node], final: Any) -> Any:
        self.node = var
        value = self.var_value(var.ident[0])
        if len(var.ident) == 1:
            self.not_a_function(args, final)
            return value
        return self.eval_field_chain(dot, value, var, var.ident[1:], args, final)

    def eval_field_chain(
        self, dot: Any, recv: Any, node: Node, ident: list[str], args: list[Node], final: Any
    ) -> Any:
        iface = False  # a value found in a map is typed interface{} in Go (it shows in messages)
        for name in ident[:-1]:
            nxt = self.eval_field(dot, name, node, [], MISSING, recv, iface)
            iface, recv = is_map(recv), nxt
        return self.eval_field(dot, ident[-1], node, args, final, recv, iface)

    def eval_field(
        self, dot: Any, name: str, node: Node, args: list[Node], final: Any, recv: Any, iface: bool = False
    ) -> Any:
        if recv is None:
            if self.missingkey == "error":
                raise self.error(f"nil data; no entry for key {go_quote(name)}")
            return None
        if recv is NIL_IFACE:
            raise self.error(f"nil pointer evaluating interface {{}}.{name}")
        method = go_method(recv, name)
        if method is not None:
            return self.eval_call(dot, Func(method, (ANY,), variadic=True), False, node, name, args, final)
        has_args = len(args) > 1 or final is not MISSING
        if is_struct(recv) and name in getattr(recv, "__dataclass_fields__", {}):
            if has_args:
                raise self.error(f"{name} has arguments but cannot be invoked as function")
            v = getattr(recv, name)
            return NIL_IFACE if v is None else v
        if is_map(recv):
            if has_args:
                raise self.error(f"{name} is not a method but has arguments")
            if name in recv:
                v = recv[name]
                return NIL_IFACE if v is None else v
            if self.missingkey == "error":
                raise self.error(f"map has no entry for key {go_quote(name)}")
            # missingkey=zero yields a typed nil (reaching through it fails); default, an absent value
            return NIL_IFACE if self.missingkey == "zero" else None
        raise self.error(f"can't evaluate field {name} in type {'interface {}' if iface else go_type(recv)}")

    def eval_function(self, dot: Any, node: IdentifierNode, cmd: Node, args: list[Node], final: Any) -> Any:
        self.node = node
        fn = self.funcs.get(node.name) or BUILTINS.get(node.name)
        if fn is None:
            raise self.error(f"{go_quote(node.name)} is not a defined function")
        return self.eval_call(
            dot, fn, node.name in BUILTINS and node.name not in self.funcs, cmd, node.name, args, final
        )

    def eval_call(
        self, dot: Any, fn: Func, builtin: bool, node: Node, name: str, args: list[Node], final: Any
    ) -> Any:
        args = args[1:]
        num_in = len(args) + (0 if final is MISSING else 1)
        params = fn.params
        num_fixed = len(args)
        if fn.variadic:
            num_fixed = len(params) - 1
            if num_in < num_fixed:
                raise self.error(
                    f"wrong number of args for {name}: want at least {num_fixed} got {len(args)}"
                )
        elif num_in != len(params):
            raise self.error(f"wrong number of args for {name}: want {len(params)} got {num_in}")

        if builtin and name in ("and", "or"):
            v: Any = None
            for arg in args:
                v = plain(self.eval_arg(dot, ANY, arg))
                if is_true(v) == (name == "or"):
                    return v
            return v if final is MISSING else final

        def ptype(i: int) -> str:
            return params[i] if i < len(params) - 1 or not fn.variadic else params[-1]

        argv = [self.eval_arg(dot, ptype(i), a) for i, a in enumerate(args)]
        if final is not MISSING:
            argv.append(self.validate_type(final, ptype(len(argv))))
        argv = [plain(a) for a in argv]
        try:
            if builtin and name == "call":
                return self.call(args[0] if args else None, final, argv)
            return fn.fn(*argv)
        except FuncError as e:
            self.node = node
            raise self.error(f"error calling {name}: {e}") from None
        except ExecError:
            raise
        except Exception as e:  # a Go function's panic is recovered the same way
            self.node = node
            raise self.error(f"error calling {name}: {e}") from None

    def call(self, callee: Node | None, final: Any, argv: list[Any]) -> Any:
        fn, rest = argv[0], argv[1:]
        label = str(callee) if callee is not None else sprint_value(final)
        if fn is None:
            raise FuncError("call of nil")
        if not callable(fn) or is_struct(fn):
            raise FuncError(f"non-function {label} of type {go_type(fn)}")
        return fn(*rest)

    def validate_type(self, value: Any, typ: str) -> Any:
        if typ == ANY:
            return value
        value = plain(value)
        if value is None:
            raise self.error(f"invalid value; expected {typ}")
        ok = isinstance(value, str) if typ == STRING else is_int(value)
        if not ok:
            raise self.error(f"wrong type for value; expected {typ}; got {go_type(value)}")
        return value

    def eval_arg(self, dot: Any, typ: str, n: Node) -> Any:
        self.node = n
        if isinstance(n, DotNode):
            return self.validate_type(dot, typ)
        if isinstance(n, NilNode):
            if typ == ANY:
                return None
            raise self.error(f"cannot assign nil to {typ}")
        if isinstance(n, FieldNode):
            return self.validate_type(self.eval_field_chain(dot, dot, n, n.ident, [n], MISSING), typ)
        if isinstance(n, VariableNode):
            return self.validate_type(self.eval_variable(dot, n, [], MISSING), typ)
        if isinstance(n, PipeNode):
            return self.validate_type(self.eval_pipeline(dot, n), typ)
        if isinstance(n, IdentifierNode):
            return self.validate_type(self.eval_function(dot, n, n, [], MISSING), typ)
        if isinstance(n, ChainNode):
            return self.validate_type(self.eval_chain(dot, n, [], MISSING), typ)
        if typ == STRING:
            if isinstance(n, StringNode):
                return n.text
            raise self.error(f"expected string; found {n}")
        if typ == INT:
            if isinstance(n, NumberNode) and is_int(n.value):
                return n.value
            raise self.error(f"expected integer; found {n}")
        if isinstance(n, BoolNode):
            return n.value
        if isinstance(n, NumberNode):
            return self.ideal_constant(n)
        if isinstance(n, StringNode):
            return n.text
        raise self.error(f"can't handle assignment of {n} to empty interface argument")
