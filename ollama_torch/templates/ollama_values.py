"""What an Ollama template sees: messages and tools as Go values, and the functions Ollama registers.

Ollama converts ``api.Message``/``api.Tool`` into template types before executing a template
(``template/template.go``: ``templateMessage``, ``templateTool``...). The dataclasses here are those
types, built from the API's JSON-shaped dicts: fields keep Go's names (``.Role``, ``.ToolCalls``,
``.Function.Arguments``), keys Go's decoder would drop are dropped, numbers inside free-form values
become floats (Go decodes them as float64, which decides how they print), and values with a Go
``String()`` method print as JSON. ``.Function`` and ``.Function.Parameters`` print as JSON too: at
Ollama HEAD they print Go struct syntax, a regression (ollama#14601, fix in ollama#18391) that breaks
the Qwen templates' ``{{ .Function }}``; we follow the fix.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .gotemplate import ANY, STRING, Func, OrderedMap, marshal, to_json
from .gotemplate.gofmt import sprint

_STRING_METHOD = {"String": "go_string"}


def go_any(v: Any) -> Any:
    """A JSON value as Go's decoder leaves it in an ``any``: numbers are float64."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, Mapping):
        return {str(k): go_any(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [go_any(x) for x in v]
    return v


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _strings(v: Any) -> list[str]:
    return [x for x in v if isinstance(x, str)] if isinstance(v, (list, tuple)) else []


class NilableList(list[Any]):
    """A Go slice that remembers being nil: it prints as ``[]`` but encodes as JSON ``null``."""

    nil = False

    def go_json(self) -> Any:
        return None if self.nil else list(self)

    @classmethod
    def of(cls, items: Any) -> NilableList:
        out = cls(items or ())
        out.nil = not items
        return out


class PropertyType(list[str]):
    """``api.PropertyType``: a JSON-Schema type, one name or several."""

    GO_TYPE = "api.PropertyType"
    GO_METHODS: ClassVar[dict[str, str]] = _STRING_METHOD

    def go_string(self) -> str:
        if not self:
            return ""
        return self[0] if len(self) == 1 else sprint(list(self))

    def go_json(self) -> Any:
        return self[0] if len(self) == 1 else list(self)


_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
             "array": "any[]", "object": "Record<string, any>", "null": "null"}  # fmt: skip


@dataclass
class ToolProperty:
    """``api.ToolProperty``."""

    AnyOf: list[ToolProperty] = field(default_factory=list)
    Type: PropertyType = field(default_factory=PropertyType)
    Items: Any = None
    Description: str = ""
    Enum: list[Any] = field(default_factory=list)
    Properties: OrderedMap | None = None
    Required: list[str] = field(default_factory=list)

    GO_TYPE: ClassVar[str] = "api.ToolProperty"
    GO_METHODS: ClassVar[dict[str, str]] = {"ToTypeScriptType": "to_typescript_type"}

    @classmethod
    def from_api(cls, d: Any) -> ToolProperty:
        if not isinstance(d, Mapping):
            return cls()
        t = d.get("type")
        props = d.get("properties")
        return cls(
            AnyOf=[cls.from_api(x) for x in d.get("anyOf") or [] if isinstance(x, Mapping)],
            Type=PropertyType([t] if isinstance(t, str) else _strings(t)),
            Items=go_any(d.get("items")),
            Description=_str(d.get("description")),
            Enum=go_any(list(d.get("enum") or [])),
            Properties=_ordered_properties(props) if isinstance(props, Mapping) else None,
            Required=_strings(d.get("required")),
        )

    def go_json(self) -> OrderedMap:
        out = OrderedMap()
        if self.AnyOf:
            out["anyOf"] = self.AnyOf
        if self.Type:
            out["type"] = self.Type
        if self.Items is not None:
            out["items"] = self.Items
        if self.Description:
            out["description"] = self.Description
        if self.Enum:
            out["enum"] = self.Enum
        if self.Properties is not None:
            out["properties"] = self.Properties
        if self.Required:
            out["required"] = self.Required
        return out

    def to_typescript_type(self) -> str:
        if self.AnyOf:
            return " | ".join(p.to_typescript_type() for p in self.AnyOf)
        if not self.Type:
            return "any"
        return " | ".join(_TS_TYPES.get(t, "any") for t in self.Type)


def _ordered_properties(d: Mapping[str, Any]) -> OrderedMap:
    return OrderedMap((str(k), ToolProperty.from_api(v)) for k, v in d.items())


class _JSONMap(dict[str, Any]):
    """A Go map type with a JSON ``String()``; ``nil`` records a nil map (JSON ``null``)."""

    GO_METHODS: ClassVar[dict[str, str]] = _STRING_METHOD
    nil = False

    def go_string(self) -> str:
        return "{}" if self.nil else marshal(dict(self))

    def go_json(self) -> Any:
        return None if self.nil else dict(self)


class TemplateArgs(_JSONMap):
    """``templateArgs``: a tool call's arguments (``{{ .Function.Arguments }}`` prints JSON)."""

    GO_TYPE = "template.templateArgs"


class TemplateProperties(_JSONMap):
    """``templateProperties``: a tool's parameter properties, ranged in sorted name order."""

    GO_TYPE = "template.templateProperties"


@dataclass
class ToolFunctionParameters:
    Type: str = ""
    Defs: Any = None
    Items: Any = None
    Required: list[str] = field(default_factory=list)
    Properties: TemplateProperties = field(default_factory=TemplateProperties)

    GO_TYPE: ClassVar[str] = "template.templateToolFunctionParameters"
    GO_METHODS: ClassVar[dict[str, str]] = _STRING_METHOD

    def go_json(self) -> OrderedMap:
        out = OrderedMap(type=self.Type)
        if self.Defs is not None:
            out["$defs"] = self.Defs
        if self.Items is not None:
            out["items"] = self.Items
        if self.Required:
            out["required"] = self.Required
        out["properties"] = self.Properties
        return out

    def go_string(self) -> str:
        return marshal(self)


@dataclass
class ToolFunction:
    Name: str = ""
    Description: str = ""
    Parameters: ToolFunctionParameters = field(default_factory=ToolFunctionParameters)

    GO_TYPE: ClassVar[str] = "template.templateToolFunction"
    GO_METHODS: ClassVar[dict[str, str]] = _STRING_METHOD

    def go_json(self) -> OrderedMap:
        return OrderedMap(name=self.Name, description=self.Description, parameters=self.Parameters)

    def go_string(self) -> str:
        return marshal(self)


@dataclass
class Tool:
    """``templateTool``: ``{{ . }}`` in a range over ``.Tools`` prints the tool's JSON."""

    Type: str = ""
    Items: Any = None
    Function: ToolFunction = field(default_factory=ToolFunction)

    GO_TYPE: ClassVar[str] = "template.templateTool"
    GO_METHODS: ClassVar[dict[str, str]] = _STRING_METHOD

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Tool:
        fn = d.get("function") if isinstance(d.get("function"), Mapping) else {}
        assert isinstance(fn, Mapping)
        params = fn.get("parameters") if isinstance(fn.get("parameters"), Mapping) else {}
        assert isinstance(params, Mapping)
        props = params.get("properties")
        properties = TemplateProperties(
            (str(k), ToolProperty.from_api(v))
            for k, v in (props.items() if isinstance(props, Mapping) else ())
        )
        properties.nil = not isinstance(props, Mapping)
        return cls(
            Type=_str(d.get("type")),
            Items=go_any(d.get("items")),
            Function=ToolFunction(
                Name=_str(fn.get("name")),
                Description=_str(fn.get("description")),
                Parameters=ToolFunctionParameters(
                    Type=_str(params.get("type")),
                    Defs=go_any(params.get("$defs")),
                    Items=go_any(params.get("items")),
                    Required=_strings(params.get("required")),
                    Properties=properties,
                ),
            ),
        )

    def go_json(self) -> OrderedMap:
        out = OrderedMap(type=self.Type)
        if self.Items is not None:
            out["items"] = self.Items
        out["function"] = self.Function
        return out

    def go_string(self) -> str:
        return marshal(self)


class Tools(list[Tool]):
    """``templateTools``: ``{{ .Tools }}`` prints the JSON array."""

    GO_TYPE = "template.templateTools"
    GO_METHODS: ClassVar[dict[str, str]] = _STRING_METHOD
    nil = False

    def go_string(self) -> str:
        return marshal(self)

    def go_json(self) -> Any:
        return None if self.nil else list(self)

    @classmethod
    def from_api(cls, tools: Sequence[Mapping[str, Any]] | None) -> Tools:
        out = cls(Tool.from_api(t) for t in tools or () if isinstance(t, Mapping))
        out.nil = tools is None
        return out


@dataclass
class ToolCallFunction:
    Index: int = 0
    Name: str = ""
    Arguments: TemplateArgs = field(default_factory=TemplateArgs)

    GO_TYPE: ClassVar[str] = "template.templateToolCallFunction"


@dataclass
class ToolCall:
    ID: str = ""
    Function: ToolCallFunction = field(default_factory=ToolCallFunction)

    GO_TYPE: ClassVar[str] = "template.templateToolCall"

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> ToolCall:
        fn = d.get("function") if isinstance(d.get("function"), Mapping) else {}
        assert isinstance(fn, Mapping)
        raw = fn.get("arguments")
        if isinstance(raw, str):  # OpenAI-style clients send a JSON string
            try:
                raw = json.loads(raw)
            except ValueError:
                raw = None
        args = TemplateArgs(go_any(raw) if isinstance(raw, Mapping) else {})
        args.nil = not isinstance(raw, Mapping)
        index = fn.get("index")
        return cls(
            ID=_str(d.get("id")),
            Function=ToolCallFunction(
                Index=index if isinstance(index, int) and not isinstance(index, bool) else 0,
                Name=_str(fn.get("name")),
                Arguments=args,
            ),
        )


@dataclass
class Message:
    """``templateMessage``: one element of ``.Messages``."""

    Role: str = ""
    Content: str = ""
    Thinking: str = ""
    Images: list[Any] = field(default_factory=NilableList)
    ToolCalls: list[ToolCall] = field(default_factory=NilableList)
    ToolName: str = ""
    ToolCallID: str = ""

    GO_TYPE: ClassVar[str] = "*template.templateMessage"

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Message:
        calls = d.get("tool_calls") or []
        return cls(
            Role=_str(d.get("role")),
            Content=_str(d.get("content")),
            Thinking=_str(d.get("thinking")),
            Images=NilableList.of(list(d.get("images") or [])),
            ToolCalls=NilableList.of([ToolCall.from_api(c) for c in calls if isinstance(c, Mapping)]),
            ToolName=_str(d.get("tool_name")),
            ToolCallID=_str(d.get("tool_call_id")),
        )


def _today(*_: str) -> str:
    return datetime.date.today().isoformat()


def _yesterday(*_: str) -> str:
    return (datetime.date.today() - datetime.timedelta(days=1)).isoformat()


def _to_typescript_type(v: Any) -> str:
    return v.to_typescript_type() if isinstance(v, ToolProperty) else "any"


# The functions Ollama adds to every template (template/template.go ``funcs``).
OLLAMA_FUNCS: Mapping[str, Func] = {
    "json": Func(to_json, (ANY,)),
    "currentDate": Func(_today, (STRING,), variadic=True),
    "yesterdayDate": Func(_yesterday, (STRING,), variadic=True),
    "toTypeScriptType": Func(_to_typescript_type, (ANY,)),
}
