"""Stop strings and incremental detokenization, including splits at every position."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_torch.engine.text import StopMatcher


def run(stops: list[str], chunks: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = "".join(m.push(c) for c in chunks)
    if not m.stopped:
        out += m.flush()
    return out, m.stopped


def expected(text: str, stops: list[str]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stops if s and text.find(s) >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def test_table() -> None:
    cases = [
        (["<|im_end|>"], ["Hello", " world<|im", "_end|>", "ignored"], ("Hello world", True)),
        (["\n\n"], ["a\n", "\nb"], ("a", True)),
        (["stop"], ["st", "o", "p"], ("", True)),
        (["stop"], ["st", "o", "x"], ("stox", False)),
        (["ab", "b"], ["xa", "b"], ("x", True)),
        ([], ["a", "b"], ("ab", False)),
        (["END"], ["EN"], ("EN", False)),
        ([">", "<><"], ["<<>", "<"], ("<", True)),  # an earlier stop still completing wins over a later complete one
        ([">", "<><"], ["<<>"], ("<<", True)),  # ...and when it never completes, the later one still stops
    ]
    for stops, chunks, want in cases:
        assert run(stops, chunks) == want, (stops, chunks)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ab<|>\n x", max_size=40),
    stops=st.lists(st.text(alphabet="ab<|>\n", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
def test_any_split_gives_the_same_result(text: str, stops: list[str], cuts: list[int]) -> None:
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert run(stops, chunks) == expected(text, stops)


def test_pending_text_is_never_a_complete_stop() -> None:
    m = StopMatcher(["abc"])
    emitted = m.push("xxab")
    assert emitted == "xx" and m.pending == "ab"


def test_the_stop_string_that_matched_is_named() -> None:
    """Anthropic's ``stop_sequence``: which stop string ended the output (None of the text held back)."""
    cases = [
        (["<|im_end|>", "END"], ["Hello END", "x"], "END"),
        (["\n\n", "b"], ["a\n", "\nb"], "\n\n"),
        (["ab", "b"], ["xa", "b"], "ab"),  # the earliest position wins, whichever stop is listed first
        ([">", "<><"], ["<<>", "<"], "<><"),
        (["stop"], ["st", "o", "x"], ""),
        (["END"], ["EN"], ""),
    ]
    for stops, chunks, want in cases:
        m = StopMatcher(stops)
        for c in chunks:
            m.push(c)
        if not m.stopped:
            m.flush()
        assert m.matched == want, (stops, chunks)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="ab<|>\n x", max_size=40),
    stops=st.lists(st.text(alphabet="ab<|>\n", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
def test_the_named_stop_is_where_the_output_was_cut(text: str, stops: list[str], cuts: list[int]) -> None:
    points = sorted({min(c, len(text)) for c in cuts})
    m = StopMatcher(stops)
    out = "".join(m.push(text[a:b]) for a, b in zip([0, *points], [*points, len(text)], strict=True))
    if not m.stopped:
        out += m.flush()
    assert (m.matched != "") == m.stopped
    if m.stopped:
        assert m.matched in stops and text.startswith(out + m.matched)
