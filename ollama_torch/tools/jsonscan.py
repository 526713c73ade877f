"""Incremental JSON scanning for streamed model output.

Two scanners live here, one per parsing strategy of :mod:`ollama_torch.tools.parser`:

* :class:`JsonScanner` validates one JSON object or array character by character as it streams in and
  says, after every chunk, whether the value is still *incomplete*, *complete* (and where it ends), or
  *invalid* (and at which character).  It is resumable: each character is looked at once, so a long
  argument streamed token by token costs O(n), and a response that merely starts with ``{`` but is not
  JSON (``{ fmt.Println(...) }``) is recognised at its first impossible character instead of being held
  back until the end.  Strings may hold raw control characters (models put literal newlines in code
  arguments), as ``json.loads(..., strict=False)`` accepts.
* :class:`ObjectFinder` is Ollama's ``findArguments`` scan (``tools/tools.go``): the first balanced
  ``{...}`` anywhere in a buffer, string- and escape-aware, that decodes as a JSON object; unbalanced or
  undecodable candidates are skipped.  It is resumable too, for the generic fallback parser.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any

__all__ = ["MAX_DEPTH", "JsonScanner", "ObjectFinder", "ScanStatus", "loads"]

# Deeper nesting than this is treated as invalid: json.loads recurses in C and would raise
# RecursionError on adversarial output like "[[[[...".
MAX_DEPTH = 512

_WS = frozenset(" \t\n\r")
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = frozenset('"\\/bfnrtu')
_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# A run of string characters that needs no per-character attention.
_PLAIN_STRING_RUN = re.compile(r'[^"\\]+')
_WS_RUN = re.compile(r"[ \t\n\r]+")


class ScanStatus(Enum):
    INCOMPLETE = "incomplete"
    COMPLETE = "complete"
    INVALID = "invalid"


# Scanner states: what the next significant character may be.
_START = 0  # '{' or '['
_VALUE = 1  # any value (after ':' or an array ',')
_VALUE_OR_CLOSE = 2  # any value or ']' (right after '[')
_KEY_OR_CLOSE = 3  # '"' or '}' (right after '{')
_KEY = 4  # '"' (after an object ',')
_COLON = 5
_AFTER_VALUE = 6  # ',' or the closer of the innermost container
_STRING = 7
_NUMBER = 8
_LITERAL = 9
_DONE = 10


def loads(text: str) -> Any:
    """Decode JSON the way model output needs it: raw control characters allowed inside strings."""
    return json.loads(text, strict=False)


class JsonScanner:
    """Validates one JSON object or array fed in pieces; see the module docstring.

    ``consumed`` counts the characters accepted so far. When the status is COMPLETE it is the length of
    the value; when INVALID it is the offset of the first character that cannot continue a JSON value.
    Feed it the text that follows what it has consumed: ``scanner.feed(buf[start + scanner.consumed:])``.
    """

    __slots__ = ("_escape", "_is_key", "_literal", "_number", "_stack", "_state", "_unicode", "consumed",
                 "status")

    def __init__(self) -> None:
        self.consumed = 0
        self.status = ScanStatus.INCOMPLETE
        self._stack: list[str] = []  # the closers of the open containers, innermost last
        self._state = _START
        self._is_key = False
        self._escape = False
        self._unicode = 0  # hex digits still due in a \\uXXXX escape
        self._number = ""
        self._literal = ""  # the rest of true / false / null still due

    def feed(self, text: str) -> ScanStatus:
        if self.status is not ScanStatus.INCOMPLETE:
            return self.status
        i, n = 0, len(text)
        while i < n:
            # Fast paths: plain string content and whitespace between tokens.
            if self._state == _STRING:
                if not self._escape and not self._unicode:
                    m = _PLAIN_STRING_RUN.match(text, i)
                    if m:
                        i = m.end()
                        continue
            elif self._state not in (_NUMBER, _LITERAL):
                m = _WS_RUN.match(text, i)
                if m:
                    i = m.end()
                    continue
            if not self._step(text[i]):
                self.consumed += i
                self.status = ScanStatus.INVALID
                return self.status
            i += 1
            if self._state == _DONE:
                self.consumed += i
                self.status = ScanStatus.COMPLETE
                return self.status
        self.consumed += n
        return self.status

    def _step(self, c: str) -> bool:
        state = self._state
        if state == _STRING:
            return self._string_char(c)
        if state == _NUMBER:
            if c in _NUMBER_CHARS:
                self._number += c
                return True
            if not _NUMBER_RE.fullmatch(self._number):
                return False
            self._state = state = _AFTER_VALUE
        elif state == _LITERAL:
            if c != self._literal[0]:
                return False
            self._literal = self._literal[1:]
            if not self._literal:
                self._state = _AFTER_VALUE
            return True
        if c in _WS:
            return True
        if state == _START:
            return c in "{[" and self._open(c)
        if state in (_VALUE, _VALUE_OR_CLOSE):
            if c == "]" and state == _VALUE_OR_CLOSE:
                return self._close(c)
            return self._begin_value(c)
        if state in (_KEY_OR_CLOSE, _KEY):
            if c == "}" and state == _KEY_OR_CLOSE:
                return self._close(c)
            if c != '"':
                return False
            self._state, self._is_key = _STRING, True
            return True
        if state == _COLON:
            if c != ":":
                return False
            self._state = _VALUE
            return True
        # _AFTER_VALUE
        if c == ",":
            self._state = _KEY if self._stack[-1] == "}" else _VALUE
            return True
        return self._close(c)

    def _string_char(self, c: str) -> bool:
        if self._unicode:
            if c not in _HEX:
                return False
            self._unicode -= 1
            return True
        if self._escape:
            self._escape = False
            if c == "u":
                self._unicode = 4
            return c in _ESCAPES
        if c == "\\":
            self._escape = True
        elif c == '"':
            self._state = _COLON if self._is_key else _AFTER_VALUE
        return True

    def _open(self, c: str) -> bool:
        if len(self._stack) >= MAX_DEPTH:
            return False
        self._stack.append("}" if c == "{" else "]")
        self._state = _KEY_OR_CLOSE if c == "{" else _VALUE_OR_CLOSE
        return True

    def _close(self, c: str) -> bool:
        if not self._stack or self._stack[-1] != c:
            return False
        self._stack.pop()
        self._state = _AFTER_VALUE if self._stack else _DONE
        return True

    def _begin_value(self, c: str) -> bool:
        if c in "{[":
            return self._open(c)
        if c == '"':
            self._state, self._is_key = _STRING, False
        elif c == "-" or "0" <= c <= "9":
            self._state, self._number = _NUMBER, c
        elif c in "tfn":
            self._state, self._literal = _LITERAL, {"t": "rue", "f": "alse", "n": "ull"}[c]
        else:
            return False
        return True


class ObjectFinder:
    """Ollama's ``findArguments`` scan, resumable: the first balanced, decodable ``{...}`` in a buffer.

    Call :meth:`feed` with the whole (growing) buffer each time; it continues where it stopped and
    returns ``(object, start, end)`` (``end`` exclusive) once found, the same answer on later calls.
    Like Ollama it toggles string state on every unescaped ``"`` (also outside braces) and resets the
    brace count when a stray ``}`` would make it negative.
    """

    __slots__ = ("_braces", "_escaped", "_found", "_in_string", "_pos", "_start")

    def __init__(self) -> None:
        self._pos = 0
        self._start = -1
        self._braces = 0
        self._in_string = False
        self._escaped = False
        self._found: tuple[dict[str, Any], int, int] | None = None

    def feed(self, buffer: str) -> tuple[dict[str, Any], int, int] | None:
        if self._found is not None:
            return self._found
        for i in range(self._pos, len(buffer)):
            c = buffer[i]
            if self._escaped:
                self._escaped = False
            elif c == "\\":
                self._escaped = True
            elif c == '"':
                self._in_string = not self._in_string
            elif self._in_string:
                pass
            elif c == "{":
                if self._braces == 0:
                    self._start = i
                self._braces += 1
            elif c == "}":
                self._braces -= 1
                if self._braces == 0 and self._start != -1:
                    data = _decode_object(buffer[self._start : i + 1])
                    if data is not None:
                        self._pos = i + 1
                        self._found = (data, self._start, i + 1)
                        return self._found
                    self._start = -1  # not an object after all: keep looking
                self._braces = max(self._braces, 0)
        self._pos = len(buffer)
        return None


def _decode_object(text: str) -> dict[str, Any] | None:
    try:
        data = loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
