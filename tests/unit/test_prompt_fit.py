"""Fitting a chat history into ``num_ctx``: the same cut as Ollama's scan (drop whole messages from the
front, keep system messages and the last), found with O(log n) renders instead of one per dropped message
(a chat of 10,000 messages never answered), and a preparation that stops once its client is gone."""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ollama_torch.engine.api import Chat, GenerationCall, Message
from ollama_torch.engine.front import _on_thread
from ollama_torch.engine.generation import prepare
from ollama_torch.engine.options import GenerationOptions
from ollama_torch.engine.prompt import _fit_messages
from ollama_torch.engine.threads import in_fresh_thread
from ollama_torch.templates import OllamaTemplate
from ollama_torch.templates.ollama import collate
from ollama_torch.templates.prompt import PromptCancelled, chat_prompt
from tests.unit.test_ollama_template import CHATML, LEGACY

Msg = dict[str, Any]


def ollama_scan(render: Callable[[list[Msg]], str], count: Callable[[str], int], messages: list[Msg], num_ctx: int) -> str:
    """Ollama's ``chatPrompt`` loop, verbatim: one render per dropped message."""
    for i in range(len(messages)):
        kept = [m for m in messages[:i] if m.get("role") == "system"] + messages[i:]
        text = render(kept)
        if count(text) <= num_ctx or i == len(messages) - 1:
            return text
    return render(messages)


def render_plain(msgs: list[Msg]) -> str:
    return "".join(f"<{m['role']}> {m['content']}\n" for m in msgs) + "<assistant>"


def words(text: str) -> int:
    return len(text.split())


def history(n: int, rng: random.Random, *, system_first: bool = True) -> list[Msg]:
    msgs: list[Msg] = [{"role": "system", "content": "be brief " * rng.randint(0, 4)}] if system_first else []
    for i in range(n):
        role = rng.choice(["user", "assistant", "system"] if not system_first else ["user", "assistant"])
        msgs.append({"role": role, "content": " ".join(["word"] * rng.randint(0, 12)) + f" {i}"})
    return msgs


class Counting:
    """A renderer wrapped to count its calls."""

    def __init__(self, render: Callable[[list[Msg]], str]) -> None:
        self.render, self.calls = render, 0

    def __call__(self, msgs: list[Msg]) -> str:
        self.calls += 1
        return self.render(msgs)


@pytest.mark.parametrize("seed", range(40))
def test_fit_is_ollamas_cut(seed: int) -> None:
    rng = random.Random(seed)
    msgs = history(rng.randint(1, 60), rng, system_first=seed % 2 == 0)
    for num_ctx in (1, 5, 20, 50, 120, 400, 10_000):
        expected = ollama_scan(render_plain, words, msgs, num_ctx)
        assert _fit_messages(render_plain, words, msgs, num_ctx, True) == expected, (seed, num_ctx)
    assert _fit_messages(render_plain, words, msgs, 1, False) == render_plain(msgs)


@pytest.mark.parametrize("n", [100, 1_000, 10_000])
def test_fit_renders_o_log_n_times(n: int) -> None:
    msgs = history(n, random.Random(n))
    render = Counting(render_plain)
    text = _fit_messages(render, words, msgs, 200, True)
    assert words(text) <= 200 and text.endswith(f"{n - 1}\n<assistant>")
    assert render.calls <= 2 * math.ceil(math.log2(n)) + 2, render.calls  # the scan rendered ~n times
    fits = Counting(render_plain)
    assert _fit_messages(fits, words, msgs, 10**9, True) == render_plain(msgs) and fits.calls == 1


@pytest.mark.parametrize("source", [CHATML, LEGACY])
def test_go_template_fit_renders_o_log_n_times(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    template = OllamaTemplate.parse(source)
    msgs = history(2_000, random.Random(1))
    calls = [0]
    original = template.render_chat

    def counted(messages: Any, **kwargs: Any) -> str:
        calls[0] += 1
        return original(messages, **kwargs)

    monkeypatch.setattr(template, "render_chat", counted)
    chat = chat_prompt(template, msgs, count_tokens=words, num_ctx=150)
    assert chat.first_kept > 1_900 and words(chat.prompt) <= 150
    assert calls[0] <= 2 * math.ceil(math.log2(len(msgs))) + 3, calls[0]  # plus the final render
    small = msgs[:80]
    for num_ctx in (1, 30, 150, 600, 10_000):
        ref = ollama_scan(lambda m: original(m), words, small, num_ctx)
        assert chat_prompt(template, small, count_tokens=words, num_ctx=num_ctx).prompt == ref


def test_collate_is_linear_in_a_long_run_of_one_role() -> None:
    """Consecutive messages of one role are merged (Ollama's collate); appending each to the merged
    string copied it every time: 10,000 user messages of 1 kB took about a minute per render."""
    msgs = [{"role": "user", "content": "x" * 1_000} for _ in range(10_000)]
    started = time.perf_counter()
    _, merged = collate(msgs)
    assert time.perf_counter() - started < 2
    assert merged == [{"role": "user", "content": "\n\n".join(m["content"] for m in msgs)}]
    assert msgs[0]["content"] == "x" * 1_000  # inputs are not changed


def test_cancel_stops_fitting_between_renders() -> None:
    cancel = threading.Event()
    msgs = history(1_000, random.Random(2))

    def render(kept: list[Msg]) -> str:
        cancel.set()  # the client leaves during the first render
        return render_plain(kept)

    counted = Counting(render)
    with pytest.raises(PromptCancelled):
        _fit_messages(counted, words, msgs, 50, True, cancel)
    assert counted.calls == 1
    with pytest.raises(PromptCancelled):
        chat_prompt(OllamaTemplate.parse(CHATML), msgs, count_tokens=words, num_ctx=50, cancel=cancel)


def test_cancelling_the_awaiting_coroutine_sets_the_event() -> None:
    cancel = threading.Event()
    ended = threading.Event()

    def work() -> None:
        cancel.wait(10)
        ended.set()

    async def main() -> None:
        task = asyncio.ensure_future(in_fresh_thread(work, cancel=cancel))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert cancel.is_set() and ended.wait(2)


def test_a_request_cancelled_while_preparing_stops_rendering(tiny_llama_dir: Path) -> None:
    """Through the engine's preparation (``front._on_thread(prepare, ...)``): the client goes away during the
    first render of a long history;
    the preparation thread renders nothing more and ends (it used to go on for minutes)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    started, renders = threading.Event(), [0]
    original = tokenizer.apply_chat_template

    def slow_render(*args: Any, **kwargs: Any) -> Any:
        renders[0] += 1
        started.set()
        time.sleep(0.3)
        return original(*args, **kwargs)

    tokenizer.apply_chat_template = slow_render
    loaded = SimpleNamespace(tokenizer=tokenizer, processor=None, vocab_size=len(tokenizer), fim=None)
    stored = SimpleNamespace(name="tiny", template=None, system=None, messages=[])
    messages = tuple(Message(m["role"], m["content"]) for m in history(3_000, random.Random(3)))
    call = GenerationCall(stored, Chat(messages), GenerationOptions(num_ctx=64))  # type: ignore[arg-type]

    async def main() -> None:
        task = asyncio.ensure_future(_on_thread(prepare, loaded, call))  # type: ignore[arg-type]
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    deadline = time.monotonic() + 10
    while any(t.name == "fresh-prepare" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "fresh-prepare" for t in threading.enumerate())
    assert renders[0] == 1  # without cancellation the search goes on rendering (and the old scan ~3,000 times)
