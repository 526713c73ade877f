"""Request-body decoding limits: nesting depth is measured before anything recursive runs, at any depth."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ollama_torch.errors import BadRequest
from ollama_torch.server.decode import MAX_DEPTH, check_depth, parse_body
from ollama_torch.server.openai import translate_request as req

TOO_DEEP = f"exceeded max depth (arrays and objects nest at most {MAX_DEPTH} levels here)"


def generate_body(depth: int) -> bytes:
    """A /api/generate body nested ``depth`` levels in all: the object itself, then ``context`` arrays."""
    if depth == 1:
        return b'{"model":"x","prompt":"[{"}'
    inner = depth - 1
    return ('{"model":"x","context":' + "[" * inner + "]" * inner + "}").encode()


def chat_body(depth: int) -> bytes:
    """A /v1/chat/completions body nested ``depth`` levels: object, ``messages``, a message, then objects."""
    if depth == 1:
        return b'{"model":"x","messages":null}'
    inner = depth - 3
    return ('{"model":"x","messages":[{"role":"user","content":' + '{"a":' * inner + "1" + "}" * inner + "}]}").encode()


def _native(body: bytes) -> Any:
    return parse_body(body, "GenerateRequest")


def _openai(body: bytes) -> Any:
    return req.decode(body, req.CHAT)


DECODERS: list[tuple[str, Callable[[bytes], Any], Callable[[int], bytes]]] = [
    ("native", _native, generate_body),
    ("openai", _openai, chat_body),
]


@contextmanager
def recursion_headroom(frames: int) -> Iterator[None]:
    """Python's recursion limit set to ``frames`` above the current stack: a decoder that recursed once per
    level would raise RecursionError at a depth of ``frames``."""
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back  # type: ignore[assignment]
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@pytest.mark.parametrize(("name", "decode", "body"), DECODERS, ids=[d[0] for d in DECODERS])
@pytest.mark.parametrize("depth", [1, 3, MAX_DEPTH])
def test_depth_up_to_the_limit_decodes(name: str, decode: Callable[[bytes], Any], body: Callable[[int], bytes],
                                       depth: int) -> None:
    assert decode(body(depth)).data["model"] == "x"


@pytest.mark.parametrize(("name", "decode", "body"), DECODERS, ids=[d[0] for d in DECODERS])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deeper_is_a_400_without_recursion(name: str, decode: Callable[[bytes], Any], body: Callable[[int], bytes],
                                           depth: int) -> None:
    data = body(depth)
    start = time.perf_counter()
    with recursion_headroom(40), pytest.raises(BadRequest) as err:
        decode(data)
    assert time.perf_counter() - start < 1.0
    assert err.value.status == 400
    assert err.value.message.startswith("invalid character ") and err.value.message.endswith(TOO_DEEP)


@pytest.mark.parametrize("depth", [1, MAX_DEPTH])
def test_check_depth_accepts(depth: int) -> None:
    check_depth("[" * depth + "]" * depth)


@pytest.mark.parametrize(("text", "char"), [
    ("[" * (MAX_DEPTH + 1), "["),  # unterminated: the depth is what is refused first, as in Go
    ("{" * MAX_DEPTH + "[" + "]" + "}" * MAX_DEPTH, "["),
    ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "{"),
])
def test_check_depth_names_the_first_bracket_past_the_limit(text: str, char: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_depth(text)
    assert err.value.message == f"invalid character '{char}' {TOO_DEEP}"


@pytest.mark.parametrize("text", [
    json.dumps({"a": "[" * 10_000}),  # brackets in strings are text
    json.dumps({"a": '\\"[[[' * 1000, "b": "{" * 1000}),  # escaped quotes do not end a string
    json.dumps({"a": "\\" * 5, "b": ["[" * 1000]}),  # an escaped backslash before the closing quote
    json.dumps([[i] for i in range(10_000)]),  # many brackets, shallow
])
def test_check_depth_counts_only_structure(text: str) -> None:
    check_depth(text)


def test_openai_tool_call_arguments_are_checked_too() -> None:
    arguments = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    message = {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": arguments}}]}
    body = json.dumps({"model": "x", "messages": [message]}).encode()
    with recursion_headroom(60), pytest.raises(BadRequest) as err:
        req.chat_request(req.decode(body, req.CHAT))
    assert err.value.message == f"invalid character '[' {TOO_DEEP}"
