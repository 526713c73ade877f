"""Thinking split and response shaping, including tags split across chunks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_torch.engine.shaping import ResponseShaper, ThinkingParser
from ollama_torch.tools import HERMES


def run(text_chunks: list[str], in_thinking: bool = False) -> tuple[str, str]:
    p = ThinkingParser(in_thinking=in_thinking)
    thinking = content = ""
    for chunk in text_chunks:
        t, c = p.add(chunk)
        thinking, content = thinking + t, content + c
    t, c = p.finish()
    return thinking + t, content + c


@pytest.mark.parametrize(
    ("text", "in_thinking", "expected"),
    [
        ("<think>reason</think>answer", False, ("reason", "answer")),
        ("  <think>\nreason\n</think>\n\nanswer", False, ("reason\n", "answer")),
        ("plain answer <think>not thinking</think>", False, ("", "plain answer <think>not thinking</think>")),
        ("reason</think>answer", True, ("reason", "answer")),
        ("<think>unfinished", False, ("unfinished", "")),
        ("", False, ("", "")),
        ("<thi", False, ("", "<thi")),
    ],
)
def test_thinking_table(text: str, in_thinking: bool, expected: tuple[str, str]) -> None:
    assert run([text], in_thinking) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["<think>a b</think> c", "<think></think>x", "x<think>y</think>", "  <think>\nr\n</think>\n\nok", "r</think>c"]),
    st.lists(st.integers(0, 30), max_size=6),
)
def test_any_split_same_result(text: str, cuts: list[int]) -> None:
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    in_thinking = text.startswith("r</think>")
    assert run(chunks, in_thinking) == run([text], in_thinking)


def test_shaper_thinking_then_tool_call() -> None:
    shaper = ResponseShaper(thinking=ThinkingParser(), tool_format=HERMES, tool_names=["get_weather"])
    out = []
    for chunk in ["<think>need weather</think>", '<tool_call>{"name": "get_weather", ', '"arguments": {"city": "Paris"}}</tool_call>']:
        out += shaper.add(chunk)
    out += shaper.finish()
    assert "".join(s.thinking for s in out) == "need weather"
    calls = [c for s in out for c in s.tool_calls]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert calls[0]["function"]["arguments"] == {"city": "Paris"}
    assert "".join(s.content for s in out).strip() == ""
