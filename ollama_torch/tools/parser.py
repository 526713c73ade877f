"""Streaming extraction of tool calls from model output: the engine's text in, content and calls out.

:class:`ToolCallParser` is fed the detokenized output chunk by chunk (split anywhere: mid-tag,
mid-JSON, mid-escape) and answers, for each chunk, the content to emit now and the calls completed
now; :meth:`~ToolCallParser.finish` flushes what was held back.  The answer does not depend on how the
text was split, only on when it arrives.  Grammar per format: see :mod:`ollama_torch.tools.formats`.

Behaviour, and how it relates to Ollama's generic parser (``tools/tools.go``):

* Text before a tag is content, emitted at once; only a suffix that could still become the tag
  (``hello <tool_``) is held back.  After a call, whitespace and a model's stray ``}``/``]`` are
  dropped, the closing tag (``</tool_call>``, ``[/TOOL_CALLS]``) is consumed, and a following tag
  opens the next block; other text after the calls is content again.  *Ollama* swallows all text that
  follows a call; we keep it, since nothing the model wrote should vanish.
* Bare JSON (the ``{`` tag, Llama 3.x, and Mistral's list when ``[TOOL_CALLS]`` was decoded away): only
  a ``{``/``[`` that is the first non-whitespace output opens a tool-call block; any other text first disables tool parsing for the response, and so does a
  first JSON value that is not a call (``{"name": "jeff"}``): it is returned as content, as Ollama
  does.  Here a call must have the full ``{"name", "arguments"|"parameters"}`` shape; inside explicit
  markers a missing arguments key means no arguments.  JSON that cannot be JSON is recognised at its
  first impossible character (``{ fmt.Println``) and flushed as content then, not at the end.
* A call is emitted as soon as its JSON value is complete, and each element of a JSON list as soon as
  it is complete; ``index`` counts from 0 across the response; ``id`` is ``call_`` + 8 ``[a-z0-9]``.
* A block that is clearly a tool call but cannot be one (unknown tool, arguments that are not an
  object, invalid or truncated JSON) -- Ollama's generic parser returns such text as content for the
  ``{`` tag and silently drops it for other tags; its builtin parsers fail the request with
  ``error parsing tool call: raw='...', err=...``.  We return the block's raw text (tag included) as
  content by default, so it is never lost, and log it; with ``strict=True`` the explicit-marker formats
  (tagged, Mistral) raise :class:`~ollama_torch.tools.calls.ToolCallParseError` with Ollama's message
  instead (HTTP 500, or a final error line mid-stream), carrying the content and calls parsed from the
  same chunk before the failure.  Bare JSON is never an error: unmarked JSON that
  is not a call is an ordinary answer.
* Generic tags (markup we do not know): Ollama's search (:mod:`ollama_torch.tools.generic`) runs on
  everything after the tag until the end; with no call found, the held text is returned as content at
  :meth:`~ToolCallParser.finish`; after a call, the rest is taken to be closing markup and dropped, as
  Ollama does (we cannot tell markup from text there).
* No tool names: nothing is parsed, all text is content (Ollama only parses when tools were sent).

A chunk can yield content *and* calls (``Sure.<tool_call>{...}``); the content precedes the calls.
Ollama's chat handler sends a chunk's calls with ``content: ""``, so a server sends such a result as
two messages, content first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from enum import Enum

from .calls import CallShapeError, ToolCall, ToolCallParseError, make_tool_call, new_call_id, resolve_call
from .formats import FormatKind, ToolFormat
from .generic import GenericCallFinder, find_tag
from .jsonscan import JsonScanner, ScanStatus, loads

__all__ = ["ToolCallParser", "parse_tool_calls"]

log = logging.getLogger(__name__)

_NON_SPACE = re.compile(r"\S")
_NOT_SEPARATOR = re.compile(r"[^\s,;]")
_NAME_END = re.compile(r"[\[{\n]")
_MISTRAL_ARGS, _MISTRAL_CALL_ID = "[ARGS]", "[CALL_ID]"
_MAX_NAME = 256  # a Mistral tool name longer than this is not a name


class _Mode(Enum):
    START = "start"  # bare-JSON formats before the first non-whitespace character
    SEARCH = "search"  # looking for the tag; text is content
    BLOCK = "block"  # inside a tool-call block of a known grammar
    GENERIC = "generic"  # after a generic tag: Ollama's search


class _Sub(Enum):
    ITEM = "item"  # expecting a JSON object / list (or, first in a Mistral block, a tool name)
    OBJECT = "object"  # a JSON object streaming in
    LIST_NEXT = "list_next"  # after "[" or "," of a list of calls
    LIST_AFTER = "list_after"  # after an element of a list of calls
    AFTER = "after"  # after an item: closers, the end tag, the next item, or the end of the block
    NAME = "name"  # Mistral: tool name before [ARGS] / [CALL_ID] / {
    CALL_ID = "call_id"  # Mistral: the id between [CALL_ID] and [ARGS]
    ARGS = "args"  # Mistral: after [ARGS]


def _first(pattern: re.Pattern[str], text: str, pos: int = 0) -> int:
    m = pattern.search(text, pos)
    return m.start() if m else -1


class ToolCallParser:
    """Incremental tool-call parser for one response; see the module docstring.

    ``add(text)`` returns ``(content, calls)`` for the chunk; ``finish()`` returns what was held back.
    ``id_factory`` makes call ids (tests pass a deterministic one). ``in_call``: the prompt ended with the
    tool-call tag, so the output starts inside a tool-call block (as the thinking parser's ``in_thinking``).
    """

    def __init__(
        self,
        fmt: ToolFormat,
        tool_names: Sequence[str],
        *,
        strict: bool = False,
        id_factory: Callable[[], str] = new_call_id,
        in_call: bool = False,
    ) -> None:
        self.format = fmt
        self._names = list(dict.fromkeys(n for n in tool_names if n))
        self._strict = strict
        self._new_id = id_factory
        self._tag = fmt.search_tag if self._names else ""
        self._mode = _Mode.START if fmt.json_at_start and self._names else _Mode.SEARCH
        self._buf = ""  # text not yet emitted or dropped; in a block it starts at the block's raw text
        self._pos = 0  # how far into _buf the block grammar has got
        self._sub = _Sub.ITEM
        self._index = 0
        self._block_calls = 0
        self._bare = False  # the block is bare JSON at the start (no tag)
        self._first_item = True
        self._after_call = False
        self._scanner = JsonScanner()
        self._obj_start = 0
        self._in_list = False
        self._list_fresh = False
        self._pending_name: str | None = None
        self._generic_finder = GenericCallFinder(self._names)
        self._finished = False
        self._content: list[str] = []
        self._calls: list[ToolCall] = []
        if in_call and self._names:  # the prompt ended with the tag: the output starts inside a block
            self._open_block(0, bare=False)

    @property
    def tag(self) -> str:
        return self.format.tag

    def add(self, text: str) -> tuple[str, list[ToolCall]]:
        if self._finished:
            raise RuntimeError("ToolCallParser.add() after finish()")
        self._buf += text
        self._run(final=False)
        return self._drain()

    def finish(self) -> tuple[str, list[ToolCall]]:
        if self._finished:
            return "", []
        self._finished = True
        self._run(final=True)
        self._emit(self._buf)  # every state consumes its buffer when final; this is a safety net
        self._buf = ""
        return self._drain()

    # -- driver --------------------------------------------------------------------------------------

    def _run(self, final: bool) -> None:
        """Step the state machine until it needs more text (or, when final, has consumed it all)."""
        steps = {_Mode.START: self._start, _Mode.SEARCH: self._search, _Mode.GENERIC: self._generic,
                 _Mode.BLOCK: self._block}
        while steps[self._mode](final):
            pass

    def _drain(self) -> tuple[str, list[ToolCall]]:
        content, calls = "".join(self._content), self._calls
        self._content, self._calls = [], []
        return content, calls

    def _emit(self, text: str) -> None:
        if text:
            self._content.append(text)

    def _emit_call(self, name: str, arguments: dict[str, object]) -> None:
        self._calls.append(make_tool_call(self._index, name, arguments, self._new_id()))
        self._index += 1
        self._block_calls += 1

    # -- outside blocks ------------------------------------------------------------------------------

    def _start(self, final: bool) -> bool:
        k = _first(_NON_SPACE, self._buf)
        if k < 0:
            if final:
                self._emit(self._buf)
                self._buf = ""
            return False
        rest, tag = self._buf[k:], self._tag
        if tag and not final and tag.startswith(rest):
            return False  # "[" could still be "[TOOL_CALLS]"
        if rest[0] in "{[" and not (tag and rest.startswith(tag)):
            self._open_block(k, bare=True)
        else:
            self._mode = _Mode.SEARCH
        return True

    def _search(self, final: bool) -> bool:
        buf, tag = self._buf, self._tag
        if not buf:
            return False
        if not tag:
            self._emit(buf)
            self._buf = ""
            return False
        if self._after_call:
            k = _first(_NON_SPACE, buf)
            if k < 0:
                if final:
                    self._buf = ""  # whitespace after the last call
                return False
            rest = buf[k:]
            if rest.startswith(tag):
                self._buf = rest
                self._open_block(len(tag), bare=False)
                return True
            if not final and tag.startswith(rest):
                return False
            self._after_call = False
        i, found = find_tag(buf, tag)
        if found:
            self._emit(buf[:i])
            self._buf = buf[i:]
            self._open_block(len(tag), bare=False)
            return True
        if final or i < 0:
            i = len(buf)
        self._emit(buf[:i])
        self._buf = buf[i:]
        return False

    def _open_block(self, pos: int, *, bare: bool) -> None:
        self._pos = pos
        self._block_calls = 0
        self._after_call = False
        if self.format.kind is FormatKind.GENERIC:
            self._mode = _Mode.GENERIC
            self._generic_finder = GenericCallFinder(self._names)
            return
        self._mode = _Mode.BLOCK
        self._sub = _Sub.ITEM
        self._bare = bare
        self._first_item = True

    def _to_search(self, *, after_call: bool) -> None:
        self._mode = _Mode.SEARCH
        self._after_call = after_call
        self._pos = 0
        self._pending_name = None

    def _commit(self) -> None:
        """Drop the text the block grammar has consumed (markup of calls already emitted)."""
        self._buf = self._buf[self._pos :]
        self._pos = 0

    def _fail(self, pos: int, err: str) -> bool:
        """A block that cannot be a call: its raw text up to ``pos`` becomes content (or, strict, an error)."""
        pos = max(pos, 1)
        raw = self._buf[:pos]
        explicit = self.format.kind in (FormatKind.TAGGED, FormatKind.MISTRAL) and not self._bare
        if self._strict and explicit:
            content, calls = self._drain()
            raise ToolCallParseError(raw, err, content=content, calls=calls)
        if explicit:
            log.debug("tool call not parsed, returned as content: raw=%r, err=%s", raw, err)
        self._emit(raw)
        self._buf = self._buf[pos:]
        self._to_search(after_call=False)
        return True

    # -- inside a block ------------------------------------------------------------------------------

    def _block(self, final: bool) -> bool:
        sub = self._sub
        if sub is _Sub.OBJECT:
            return self._object(final)
        if sub is _Sub.AFTER:
            return self._after(final)
        if sub in (_Sub.NAME, _Sub.CALL_ID):
            return self._mistral_name(final)
        k = _first(_NON_SPACE, self._buf, self._pos)
        if k < 0:
            if not final:
                return False
            if sub is _Sub.LIST_AFTER or (sub is _Sub.LIST_NEXT and self._block_calls):
                self._pos = len(self._buf)  # a list cut short after complete calls
                self._commit()
                self._sub = _Sub.AFTER
                return True
            return self._fail(len(self._buf), "unexpected end of output")
        c = self._buf[k]
        if sub is _Sub.LIST_AFTER:
            if c not in ",]":
                return self._fail(k, f"expected ',' or ']' after a tool call, got {c!r}")
            self._pos = k + 1
            self._sub = _Sub.LIST_NEXT if c == "," else _Sub.AFTER
            self._list_fresh = False
            if c == "]":
                self._commit()
            return True
        if c == "{":
            self._start_object(k, in_list=sub is _Sub.LIST_NEXT)
        elif sub is _Sub.LIST_NEXT and c == "]":
            if self._list_fresh:
                return self._fail(k + 1, "empty list of tool calls")
            self._pos = k + 1  # a trailing comma: [{...},]
            self._commit()
            self._sub = _Sub.AFTER
        elif sub is _Sub.ITEM and c == "[":
            self._pos = k + 1
            self._sub = _Sub.LIST_NEXT
            self._list_fresh = True
        elif sub is _Sub.ITEM and self._first_item and self.format.kind is FormatKind.MISTRAL:
            self._pos = k
            self._sub = _Sub.NAME
        else:
            return self._fail(k, f"unexpected {c!r} in tool call")
        self._first_item = False
        return True

    def _start_object(self, k: int, *, in_list: bool) -> None:
        self._scanner = JsonScanner()
        self._obj_start = k
        self._in_list = in_list
        self._sub = _Sub.OBJECT

    def _object(self, final: bool) -> bool:
        sc = self._scanner
        status = sc.feed(self._buf[self._obj_start + sc.consumed :])
        if status is ScanStatus.INCOMPLETE:
            return self._fail(len(self._buf), "unexpected end of JSON input") if final else False
        end = self._obj_start + sc.consumed
        if status is ScanStatus.INVALID:
            bad = self._buf[end : end + 1]
            return self._fail(end, f"invalid character {bad!r} in JSON")
        try:
            value = loads(self._buf[self._obj_start : end])
            if self._pending_name is not None:
                if not isinstance(value, dict):
                    raise CallShapeError(f"arguments of {self._pending_name!r} must be a JSON object")
                name, args = self._pending_name, value
            else:
                name, args = resolve_call(value, self._names, require_arguments=self._bare)
        except (CallShapeError, ValueError, RecursionError) as e:
            return self._fail(end, str(e))
        self._emit_call(name, args)
        self._pending_name = None
        self._buf = self._buf[end:]
        self._pos = 0
        self._sub = _Sub.LIST_AFTER if self._in_list else _Sub.AFTER
        return True

    def _after(self, final: bool) -> bool:
        buf = self._buf
        k = _first(_NON_SPACE, buf)
        if k < 0:
            if final:
                self._buf = ""
                self._to_search(after_call=True)
            return False
        if buf[k] in "}]":  # a stray closer: models often add one brace too many
            self._buf = buf[k + 1 :]
            return True
        rest = buf[k:]
        end_tag = self.format.end_tag
        if end_tag and rest.startswith(end_tag):
            self._buf = rest[len(end_tag) :]
            self._to_search(after_call=True)
            return True
        if self._tag and rest.startswith(self._tag):
            self._to_search(after_call=True)
            return True
        if not final and any(t and t.startswith(rest) for t in (end_tag, self._tag)):
            return False
        k2 = _first(_NOT_SEPARATOR, buf, k)
        if k2 < 0:
            if final:  # trailing separators after the last call
                self._buf = ""
                self._to_search(after_call=True)
            return False
        if buf[k2] in "{[":
            self._buf = buf[k2:]
            self._pos = 0
            self._sub = _Sub.ITEM
            return True
        self._to_search(after_call=True)
        return True

    def _mistral_name(self, final: bool) -> bool:
        """``name[ARGS]{...}``, ``name[CALL_ID]id[ARGS]{...}`` or ``name{...}`` after ``[TOOL_CALLS]``."""
        buf, start = self._buf, self._pos
        naming = self._sub is _Sub.NAME
        j = _first(_NAME_END, buf, start)
        if naming:
            # Fail as soon as the name can no longer become one of the tools', not at [ARGS].
            typed = buf[start : j if j >= 0 else len(buf)]
            lead = len(typed) - len(typed.lstrip())
            name = typed.strip()
            bad = next((i for i in range(1, len(name) + 1)
                        if not any(n.startswith(name[:i]) for n in self._names)), None)
            if bad is not None:
                return self._fail(start + lead + bad, f"no tool name starts with {name[:bad]!r}")
        if j < 0:
            if final or len(buf) - start > _MAX_NAME:
                return self._fail(len(buf), "tool name without arguments")
            return False
        if naming:
            if name not in self._names:
                return self._fail(j, f"unknown tool {name!r}")
            self._pending_name = name
        rest = buf[j:]
        if buf[j] == "{" and naming:
            self._start_object(j, in_list=False)
            return True
        markers = (_MISTRAL_ARGS, _MISTRAL_CALL_ID) if naming else (_MISTRAL_ARGS,)
        for marker in markers:
            if rest.startswith(marker):
                self._pos = j + len(marker)
                self._sub = _Sub.ARGS if marker == _MISTRAL_ARGS else _Sub.CALL_ID
                return True
        if not final and any(m.startswith(rest) for m in markers):
            return False
        return self._fail(j, f"unexpected {buf[j]!r} after tool name")

    # -- generic tags --------------------------------------------------------------------------------

    def _generic(self, final: bool) -> bool:
        while (found := self._generic_finder.next_call(self._buf[self._pos :], final=final)) is not None:
            name, args, end = found
            self._emit_call(name, args)
            self._buf = self._buf[self._pos + end :]
            self._pos = 0
        if final:
            if self._block_calls == 0:
                self._emit(self._buf)
            elif self._buf.strip():
                log.debug("dropped text after generic tool calls: %r", self._buf)
            self._buf = ""
        return False


def parse_tool_calls(
    text: str, fmt: ToolFormat, tool_names: Sequence[str], *, strict: bool = False
) -> tuple[str, list[ToolCall]]:
    """Parse a complete output at once: ``(content, calls)``."""
    parser = ToolCallParser(fmt, tool_names, strict=strict)
    content, calls = parser.add(text)
    tail, more = parser.finish()
    return content + tail, calls + more
