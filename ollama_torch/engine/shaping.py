"""Shaping generated text into what Ollama returns: reasoning split into ``thinking``, tool calls parsed
out of the content, everything else as ``content``/``response``. Pure text processing, no torch.

:func:`plan_response` decides, once per response from the rendered prompt, how output is split: which
reasoning tags (and whether the prompt already opened the block), which tool-call markup (and whether the
prompt already opened a call). The engine builds both the request's grammar and its :class:`ResponseShaper`
from the one plan, so the two always agree.

``ThinkingParser`` follows Ollama's ``thinking.Parser``: leading whitespace is skipped; output that opens
with the thinking tag (or a prompt that already ended with it) is reasoning until the closing tag; output
that starts with anything else has no reasoning block. Partial tags are held back across chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..templates import OllamaTemplate
from ..templates.inspect import thinking_tags
from ..tools import FormatKind, ToolCallParser, ToolFormat, detect_tool_format


class RenderedPrompt(Protocol):
    """What the plan reads of a rendered prompt (``prompt.BuiltPrompt``)."""

    @property
    def text(self) -> str: ...

    @property
    def go_template(self) -> OllamaTemplate | None: ...

    @property
    def jinja_template(self) -> str | None: ...


def _partial_tail(buf: str, tag: str) -> int:
    for n in range(min(len(tag) - 1, len(buf)), 0, -1):
        if buf.endswith(tag[:n]):
            return n
    return 0


class ThinkingParser:
    LOOKING, THINKING, CONTENT = range(3)

    def __init__(self, open_tag: str = "<think>", close_tag: str = "</think>", *, in_thinking: bool = False) -> None:
        self.open_tag, self.close_tag = open_tag, close_tag
        self.state = self.THINKING if in_thinking else self.LOOKING
        self.buf = ""
        self._strip_thinking_ws = in_thinking
        self._strip_content_ws = False

    def add(self, text: str) -> tuple[str, str]:
        """Returns (thinking, content) that can be emitted now."""
        self.buf += text
        thinking = content = ""
        while True:
            if self.state == self.LOOKING:
                stripped = self.buf.lstrip()
                if not stripped:
                    return thinking, content
                if stripped.startswith(self.open_tag):
                    self.buf = stripped[len(self.open_tag) :]
                    self.state = self.THINKING
                    self._strip_thinking_ws = True
                    continue
                if self.open_tag.startswith(stripped):
                    return thinking, content  # could still become the tag
                self.state = self.CONTENT
                continue
            if self.state == self.THINKING:
                if self._strip_thinking_ws:
                    self.buf = self.buf.lstrip()
                    if not self.buf:
                        return thinking, content
                    self._strip_thinking_ws = False
                i = self.buf.find(self.close_tag)
                if i >= 0:
                    thinking += self.buf[:i]
                    self.buf = self.buf[i + len(self.close_tag) :]
                    self.state = self.CONTENT
                    self._strip_content_ws = True
                    continue
                hold = _partial_tail(self.buf, self.close_tag)
                thinking += self.buf[: len(self.buf) - hold]
                self.buf = self.buf[len(self.buf) - hold :]
                return thinking, content
            if self._strip_content_ws:
                self.buf = self.buf.lstrip()
                if not self.buf:
                    return thinking, content
                self._strip_content_ws = False
            content += self.buf
            self.buf = ""
            return thinking, content

    def finish(self) -> tuple[str, str]:
        buf, self.buf = self.buf, ""
        if self.state == self.THINKING:
            return buf, ""
        return "", buf if self.state == self.CONTENT or buf.strip() else ""


@dataclass(frozen=True)
class ResponsePlan:
    """How one response is split; see :func:`plan_response`."""

    think_tags: tuple[str, str] | None = None  # (opening, closing) when thinking is on
    in_thinking: bool = False  # the prompt ends with the opening tag
    tool_format: ToolFormat | None = None  # when tools were sent
    tool_names: tuple[str, ...] = ()
    in_call: bool = False  # the prompt ends with the tool-call tag
    template: str = ""  # the template that rendered the prompt (Go or Jinja source)


def plan_response(built: RenderedPrompt, think: bool | str | None, tools: Sequence[dict[str, Any]] | None) -> ResponsePlan:
    """The plan for a response to ``built``: reasoning tags from the Go template (``<think>``/``</think>``
    otherwise), tool-call markup from the template (``tools.detect_tool_format``)."""
    template = built.go_template.raw if built.go_template is not None else (built.jinja_template or "")
    tail = built.text.rstrip()
    tags: tuple[str, str] | None = None
    if think:
        tags = ("<think>", "</think>")
        if built.go_template is not None:
            found = thinking_tags(built.go_template)
            if found[0] and found[1]:
                tags = found
    in_thinking = tags is not None and tail.endswith(tags[0])
    fmt: ToolFormat | None = None
    names: tuple[str, ...] = ()
    if tools:
        fmt = detect_tool_format(template, go_template=built.go_template is not None)
        names = tuple(str(t.get("function", {}).get("name", "")) for t in tools if isinstance(t, dict))
    in_call = (fmt is not None and fmt.kind is not FormatKind.JSON and not in_thinking
               and bool(fmt.tag) and tail.endswith(fmt.tag))
    return ResponsePlan(tags, in_thinking, fmt, names, in_call, template)


@dataclass
class Shaped:
    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # of the tokens behind this piece


class ResponseShaper:
    """Splits the stream of generated text into content / thinking / tool calls."""

    def __init__(
        self,
        *,
        thinking: ThinkingParser | None = None,
        tool_format: ToolFormat | None = None,
        tool_names: Sequence[str] = (),
        in_call: bool = False,
    ) -> None:
        self.thinking = thinking
        self.tools = (ToolCallParser(tool_format, list(tool_names), in_call=in_call)
                      if tool_format is not None and tool_names else None)

    @classmethod
    def from_plan(cls, plan: ResponsePlan) -> ResponseShaper:
        thinking = None
        if plan.think_tags is not None:
            thinking = ThinkingParser(*plan.think_tags, in_thinking=plan.in_thinking)
        return cls(thinking=thinking, tool_format=plan.tool_format, tool_names=plan.tool_names, in_call=plan.in_call)

    def add(self, text: str) -> list[Shaped]:
        thinking, content = self.thinking.add(text) if self.thinking else ("", text)
        return self._content(thinking, content, final=False)

    def finish(self) -> list[Shaped]:
        thinking, content = self.thinking.finish() if self.thinking else ("", "")
        return self._content(thinking, content, final=True)

    def _content(self, thinking: str, content: str, *, final: bool) -> list[Shaped]:
        out: list[Shaped] = []
        if thinking:
            out.append(Shaped(thinking=thinking))
        if self.tools is not None:
            text, calls = self.tools.add(content) if content else ("", [])
            if final:
                more_text, more_calls = self.tools.finish()
                text, calls = text + more_text, calls + more_calls
            if text:
                out.append(Shaped(content=text))
            if calls:
                out.append(Shaped(tool_calls=[dict(c) for c in calls]))
        elif content:
            out.append(Shaped(content=content))
        return out
