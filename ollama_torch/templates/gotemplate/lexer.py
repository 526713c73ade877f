"""The lexer of Go's text/template: template text to a list of tokens.

It follows Go's ``text/template/parse/lex.go`` state machine so that the same inputs split into the
same tokens and fail with the same messages: trim markers ``{{- `` / `` -}}`` (the dash must touch a
space), comments ``{{/* */}}``, actions spanning lines, Go number/string/char literals. A lexing
error becomes an ``ERROR`` token that the parser reports when it reaches it, as Go's does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class T(enum.IntEnum):
    ERROR = 0
    BOOL = enum.auto()
    CHAR = enum.auto()  # a printable ASCII character: ',' and the like
    CHAR_CONSTANT = enum.auto()
    COMPLEX = enum.auto()
    ASSIGN = enum.auto()  # =
    DECLARE = enum.auto()  # :=
    EOF = enum.auto()
    FIELD = enum.auto()  # .Name
    IDENTIFIER = enum.auto()
    LEFT_DELIM = enum.auto()
    LEFT_PAREN = enum.auto()
    NUMBER = enum.auto()
    PIPE = enum.auto()
    RAW_STRING = enum.auto()
    RIGHT_DELIM = enum.auto()
    RIGHT_PAREN = enum.auto()
    SPACE = enum.auto()
    STRING = enum.auto()
    TEXT = enum.auto()
    VARIABLE = enum.auto()  # $ or $name
    KEYWORD = enum.auto()  # the keywords follow
    BLOCK = enum.auto()
    BREAK = enum.auto()
    CONTINUE = enum.auto()
    DOT = enum.auto()
    DEFINE = enum.auto()
    ELSE = enum.auto()
    END = enum.auto()
    IF = enum.auto()
    NIL = enum.auto()
    RANGE = enum.auto()
    TEMPLATE = enum.auto()
    WITH = enum.auto()


KEYWORDS = {
    ".": T.DOT,
    "block": T.BLOCK,
    "break": T.BREAK,
    "continue": T.CONTINUE,
    "define": T.DEFINE,
    "else": T.ELSE,
    "end": T.END,
    "if": T.IF,
    "range": T.RANGE,
    "nil": T.NIL,
    "template": T.TEMPLATE,
    "with": T.WITH,
}

LEFT, RIGHT = "{{", "}}"
SPACE_CHARS = " \t\r\n"


@dataclass(frozen=True)
class Token:
    typ: T
    pos: int
    val: str
    line: int

    def __str__(self) -> str:
        from .gofmt import go_quote

        if self.typ == T.EOF:
            return "EOF"
        if self.typ == T.ERROR:
            return self.val
        if self.typ > T.KEYWORD:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


def _alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdigit()


def _left_trim(s: str, at: int) -> bool:
    return len(s) >= at + 2 and s[at] == "-" and s[at + 1] in SPACE_CHARS


def _right_trim(s: str, at: int) -> bool:
    return len(s) >= at + 2 and s[at] in SPACE_CHARS and s[at + 1] == "-"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.s = text
        self.pos = 0
        self.start = 0
        self.line = 1
        self.start_line = 1
        self.paren = 0
        self.tokens: list[Token] = []

    def emit(self, typ: T) -> None:
        self.tokens.append(Token(typ, self.start, self.s[self.start : self.pos], self.start_line))
        self.line += self.s.count("\n", self.start, self.pos)
        self.start = self.pos
        self.start_line = self.line

    def ignore(self) -> None:
        self.line += self.s.count("\n", self.start, self.pos)
        self.start = self.pos
        self.start_line = self.line

    def error(self, msg: str) -> bool:
        self.tokens.append(Token(T.ERROR, self.start, msg, self.start_line))
        return False

    def peek(self) -> str:
        return self.s[self.pos] if self.pos < len(self.s) else ""

    def at_right_delim(self) -> tuple[bool, bool]:
        if _right_trim(self.s, self.pos) and self.s.startswith(RIGHT, self.pos + 2):
            return True, True
        return self.s.startswith(RIGHT, self.pos), False

    def at_terminator(self) -> bool:
        c = self.peek()
        return c == "" or c in SPACE_CHARS or c in ".,|:)(" or self.s.startswith(RIGHT, self.pos)

    def run(self) -> list[Token]:
        ok = True
        while ok:
            x = self.s.find(LEFT, self.pos)
            if x < 0:
                self.pos = len(self.s)
                if self.pos > self.start:
                    self.emit(T.TEXT)
                self.emit(T.EOF)
                break
            self.pos = x
            trim = 0
            if _left_trim(self.s, x + 2):
                text = self.s[self.start : x]
                trim = len(text) - len(text.rstrip(SPACE_CHARS))
            self.pos = x - trim
            if self.pos > self.start:
                self.emit(T.TEXT)
            self.pos = x
            self.ignore()
            ok = self.left_delim()
        return self.tokens

    def left_delim(self) -> bool:
        self.pos += len(LEFT)
        trim = _left_trim(self.s, self.pos)
        after = 2 if trim else 0
        if self.s.startswith("/*", self.pos + after):
            self.pos += after
            self.ignore()
            return self.comment()
        self.emit(T.LEFT_DELIM)
        self.pos += after
        self.ignore()
        self.paren = 0
        return self.inside_action()

    def comment(self) -> bool:
        self.pos += 2
        i = self.s.find("*/", self.pos)
        if i < 0:
            return self.error("unclosed comment")
        self.pos = i + 2
        delim, trim = self.at_right_delim()
        if not delim:
            return self.error("comment ends before closing delimiter")
        self.pos += (2 if trim else 0) + len(RIGHT)
        if trim:
            rest = self.s[self.pos :]
            self.pos += len(rest) - len(rest.lstrip(SPACE_CHARS))
        self.ignore()
        return True

    def right_delim(self, trim: bool) -> bool:
        if trim:
            self.pos += 2
            self.ignore()
        self.pos += len(RIGHT)
        self.emit(T.RIGHT_DELIM)
        if trim:
            rest = self.s[self.pos :]
            self.pos += len(rest) - len(rest.lstrip(SPACE_CHARS))
            self.ignore()
        return True

    def inside_action(self) -> bool:
        while True:
            delim, trim = self.at_right_delim()
            if delim:
                if self.paren == 0:
                    return self.right_delim(trim)
                return self.error("unclosed left paren")
            c = self.peek()
            if c == "":
                return self.error("unclosed action")
            if c in SPACE_CHARS:
                if not self.space():
                    return self.right_delim(True)
                continue
            self.pos += 1
            if c == "=":
                self.emit(T.ASSIGN)
            elif c == ":":
                if self.peek() != "=":
                    return self.error("expected :=")
                self.pos += 1
                self.emit(T.DECLARE)
            elif c == "|":
                self.emit(T.PIPE)
            elif c == '"':
                if not self.quoted('"', T.STRING, "quoted string"):
                    return False
            elif c == "`":
                if not self.raw_quote():
                    return False
            elif c == "$":
                if not self.field_or_variable(T.VARIABLE):
                    return False
            elif c == "'":
                if not self.quoted("'", T.CHAR_CONSTANT, "character constant"):
                    return False
            elif c == "." and self.peek() != "" and not ("0" <= self.peek() <= "9"):
                if not self.field_or_variable(T.FIELD):
                    return False
            elif c in "+-.0123456789":
                self.pos -= 1
                if not self.number():
                    return False
            elif _alnum(c):
                self.pos -= 1
                if not self.identifier():
                    return False
            elif c == "(":
                self.emit(T.LEFT_PAREN)
                self.paren += 1
            elif c == ")":
                self.paren -= 1
                if self.paren < 0:
                    return self.error("unexpected right paren")
                self.emit(T.RIGHT_PAREN)
            elif c <= "\x7f" and c.isprintable():
                self.emit(T.CHAR)
            else:
                return self.error(f"unrecognized character in action: {_rune(c)}")

    def space(self) -> bool:
        """Consume a run of spaces; False when it ends in `` -}}`` after exactly one space."""
        n = 0
        while self.peek() != "" and self.peek() in SPACE_CHARS:
            self.pos += 1
            n += 1
        if _right_trim(self.s, self.pos - 1) and self.s.startswith(RIGHT, self.pos + 1):
            self.pos -= 1
            if n == 1:
                return False
        self.emit(T.SPACE)
        return True

    def identifier(self) -> bool:
        while self.peek() != "" and _alnum(self.peek()):
            self.pos += 1
        word = self.s[self.start : self.pos]
        if not self.at_terminator():
            return self.error(f"bad character {_rune(self.peek())}")
        kw = KEYWORDS.get(word)
        if kw is not None and kw > T.KEYWORD:
            self.emit(kw)
        elif word in ("true", "false"):
            self.emit(T.BOOL)
        else:
            self.emit(T.IDENTIFIER)
        return True

    def field_or_variable(self, typ: T) -> bool:
        if self.at_terminator():
            self.emit(T.VARIABLE if typ == T.VARIABLE else T.DOT)
            return True
        while self.peek() != "" and _alnum(self.peek()):
            self.pos += 1
        if not self.at_terminator():
            return self.error(f"bad character {_rune(self.peek())}")
        self.emit(typ)
        return True

    def quoted(self, end: str, typ: T, what: str) -> bool:
        """A "string" or 'c'haracter constant: escapes skip a character; no newlines."""
        while True:
            c = self.peek()
            self.pos += 1
            if c == "\\" and self.peek() not in ("", "\n"):
                self.pos += 1
            elif c in ("", "\n", "\\"):
                return self.error(f"unterminated {what}")
            elif c == end:
                self.emit(typ)
                return True

    def raw_quote(self) -> bool:
        end = self.s.find("`", self.pos)
        if end < 0:
            return self.error("unterminated raw quoted string")
        self.pos = end + 1
        self.emit(T.RAW_STRING)
        return True

    def accept(self, valid: str) -> bool:
        if self.peek() != "" and self.peek() in valid:
            self.pos += 1
            return True
        return False

    def accept_run(self, valid: str) -> None:
        while self.accept(valid):
            pass

    def scan_number(self) -> bool:
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        if self.peek() != "" and _alnum(self.peek()):
            self.pos += 1
            return False
        return True

    def number(self) -> bool:
        if not self.scan_number():
            return self.error(f"bad number syntax: {_goq(self.s[self.start : self.pos])}")
        if self.peek() in ("+", "-") and self.peek() != "":
            if not self.scan_number() or self.s[self.pos - 1] != "i":
                return self.error(f"bad number syntax: {_goq(self.s[self.start : self.pos])}")
            self.emit(T.COMPLEX)
        else:
            self.emit(T.NUMBER)
        return True


def _goq(s: str) -> str:
    from .gofmt import go_quote

    return go_quote(s)


def _rune(c: str) -> str:
    """Go's %#U: ``U+0021 '!'``."""
    if c == "":
        return "U+FFFFFFFFFFFFFFFF"
    cp = ord(c)
    return f"U+{cp:04X} '{c}'" if c.isprintable() else f"U+{cp:04X}"


def lex(text: str) -> list[Token]:
    """All tokens of ``text``, ending with EOF or with the first ERROR."""
    return _Lexer(text).run()
