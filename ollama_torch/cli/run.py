"""``ollama-torch run``: a one-shot prompt, piped stdin, or an interactive session, as ``ollama run``.

As in Ollama's ``RunHandler``: the model is looked up (and pulled when missing); embedding models print
the embedding of the input; a prompt given on the command line or piped on stdin streams one
``/api/generate`` answer; with neither, on a terminal, the model is loaded and a REPL (``repl.py``) keeps
a chat history for ``/api/chat``. Thinking is shown between ``Thinking...`` and ``...done thinking.``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..durations import parse_go_duration
from .client import Client, ClientError, ResponseError
from .commands import dumps
from .create import pull_with_progress
from .format import go_duration
from .progress import Progress

THINK_LEVELS = ("high", "medium", "low", "max")
GREY, BOLD, DEFAULT = "\033[38;5;245m", "\033[1m", "\033[0m"


@dataclass
class RunOptions:
    model: str
    prompt: str = ""
    format: str = ""
    system: str = ""
    think: bool | str | None = None
    hide_thinking: bool = False
    keep_alive: str | None = None
    verbose: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    loaded_messages: list[dict[str, Any]] = field(default_factory=list)
    parent_model: str = ""


def parse_think(value: str | None) -> bool | str | None:
    """``--think``: bare or ``true`` -> True, ``false`` -> False, or a level; ``None`` when not given."""
    if value is None:
        return None
    if value in ("", "true"):
        return True
    if value == "false":
        return False
    if value in THINK_LEVELS:
        return value
    raise ClientError(
        f'invalid value for --think: "{value}" (must be true, false, high, medium, low, or max)'
    )


def parse_keep_alive(value: str | None) -> str | None:
    """``--keepalive`` must be a Go duration (``5m``, ``1h30m``, ``-1s``); it is sent as given."""
    if not value:
        return None
    try:
        parse_go_duration(value)
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    return value


def show_or_pull(client: Client, model: str, insecure: bool = False) -> dict[str, Any]:
    try:
        return client.show(model)
    except ResponseError as exc:
        if exc.status != 404:
            raise
    pull_with_progress(client, model, insecure)
    return client.show(model)


def print_summary(resp: dict[str, Any]) -> None:
    """Ollama's ``Metrics.Summary`` on stderr (``--verbose``)."""
    out = sys.stderr
    total, load = int(resp.get("total_duration") or 0), int(resp.get("load_duration") or 0)
    p_count, p_dur = int(resp.get("prompt_eval_count") or 0), int(resp.get("prompt_eval_duration") or 0)
    e_count, e_dur = int(resp.get("eval_count") or 0), int(resp.get("eval_duration") or 0)
    if total > 0:
        out.write(f"total duration:       {go_duration(total)}\n")
    if load > 0:
        out.write(f"load duration:        {go_duration(load)}\n")
    if p_count > 0:
        out.write(f"prompt eval count:    {p_count} token(s)\n")
    if p_dur > 0:
        out.write(f"prompt eval duration: {go_duration(p_dur)}\n")
        out.write(f"prompt eval rate:     {p_count / (p_dur / 1e9):.2f} tokens/s\n")
    if e_count > 0:
        out.write(f"eval count:           {e_count} token(s)\n")
    if e_dur > 0:
        out.write(f"eval duration:        {go_duration(e_dur)}\n")
        out.write(f"eval rate:            {e_count / (e_dur / 1e9):.2f} tokens/s\n")


class Display:
    """Writes streamed content and thinking to stdout as Ollama's CLI does."""

    def __init__(self, plain: bool, hide_thinking: bool) -> None:
        self.plain = plain
        self.hide_thinking = hide_thinking
        self.thinking: list[str] = []
        self.content: list[str] = []
        self.opened = False
        self.closed = False

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def feed(self, thinking: str, content: str, tool_calls: list[dict[str, Any]] | None) -> None:
        if thinking and not self.hide_thinking:
            if not self.opened:
                self._write("Thinking...\n" if self.plain else GREY + BOLD + "Thinking...\n" + DEFAULT + GREY)
                self.opened, self.closed = True, False
            self.thinking.append(thinking)
            self._write(thinking)
        if self.opened and not self.closed and (content or tool_calls):
            if not "".join(self.thinking).endswith("\n"):
                self._write("\n")
            done = "...done thinking.\n\n"
            self._write(done if self.plain else GREY + BOLD + done + DEFAULT)
            self.opened, self.closed = False, True
        self.content.append(content)
        self._write(content)
        if tool_calls:
            self._write(render_tool_calls(tool_calls, self.plain))


def render_tool_calls(calls: list[dict[str, Any]], plain: bool) -> str:
    lines = []
    for call in calls:
        fn = call.get("function") or {}
        name, args = str(fn.get("name") or ""), dumps(fn.get("arguments") or {})
        if plain:
            lines.append(f"  Model called a non-existent function '{name}()' with arguments: {args}")
        else:
            lines.append(
                f"  Model called a non-existent function '{DEFAULT}{name}{GREY}{BOLD}()' with arguments: "
                f"{DEFAULT}{args}{GREY}{BOLD}"
            )
    out = "\n".join(lines)
    return out if plain else GREY + BOLD + out + DEFAULT


def _consume(
    stream: Iterator[dict[str, Any]], progress: Progress, display: Display, chat: bool
) -> dict[str, Any]:
    """Feed a generate/chat stream to ``display``; Ctrl+C stops it (closing the connection cancels the
    request on the server). Returns the last object received."""
    latest: dict[str, Any] = {}
    try:
        for resp in stream:
            latest = resp
            msg = (resp.get("message") or {}) if chat else resp
            content = str(msg.get("content" if chat else "response") or "")
            thinking = str(msg.get("thinking") or "")
            if content or not display.hide_thinking:
                progress.stop_and_clear()
            display.feed(thinking, content, msg.get("tool_calls"))
    except KeyboardInterrupt:
        latest = {}
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # drops the connection at once, which cancels the request server-side
        progress.stop_and_clear()
    return latest


def _request(opts: RunOptions, **body: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"model": opts.model, **body}
    if opts.format:
        request["format"] = opts.format
    if opts.options:
        request["options"] = opts.options
    if opts.keep_alive is not None:
        request["keep_alive"] = opts.keep_alive
    if opts.think is not None:
        request["think"] = opts.think
    return request


def generate(client: Client, opts: RunOptions) -> None:
    """One prompt through ``/api/generate``, streamed to stdout (Ollama's ``generate``)."""
    body: dict[str, Any] = {"prompt": opts.prompt}
    if opts.system:
        body["system"] = opts.system
    display = Display(plain=not sys.stdout.isatty(), hide_thinking=opts.hide_thinking)
    progress = Progress()
    progress.spinner("")
    latest = _consume(client.generate(_request(opts, **body)), progress, display, chat=False)
    if opts.prompt:
        sys.stdout.write("\n\n")
    if latest.get("done") and opts.verbose:
        print_summary(latest)


def chat(client: Client, opts: RunOptions) -> dict[str, Any] | None:
    """One turn of ``/api/chat`` over ``opts.messages``; the assistant's message, or ``None`` if cancelled."""
    display = Display(plain=not sys.stdout.isatty(), hide_thinking=opts.hide_thinking)
    progress = Progress()
    progress.spinner("")
    latest = _consume(client.chat(_request(opts, messages=opts.messages)), progress, display, chat=True)
    if not latest:
        return None
    if opts.messages:
        sys.stdout.write("\n\n")
    if opts.verbose:
        print_summary(latest)
    role = str((latest.get("message") or {}).get("role") or "assistant")
    message: dict[str, Any] = {"role": role, "content": "".join(display.content)}
    if display.thinking:
        message["thinking"] = "".join(display.thinking)
    return message


def load(client: Client, opts: RunOptions) -> None:
    """Load the model before the first prompt, with a spinner (Ollama's ``loadOrUnloadModel``)."""
    request: dict[str, Any] = {"model": opts.model}
    if opts.keep_alive is not None:
        request["keep_alive"] = opts.keep_alive
    if opts.think is not None:
        request["think"] = opts.think
    progress = Progress()
    progress.spinner("")
    try:
        for _ in client.generate(request):
            pass
    finally:
        progress.stop_and_clear()


def embed(client: Client, opts: RunOptions, truncate: bool | None, dimensions: int) -> None:
    if not opts.prompt:
        raise ClientError(
            f'embedding models require input text. Usage: ollama-torch run {opts.model} "your text here"'
        )
    request: dict[str, Any] = {"model": opts.model, "input": opts.prompt}
    if opts.keep_alive is not None:
        request["keep_alive"] = opts.keep_alive
    if truncate is not None:
        request["truncate"] = truncate
    if dimensions > 0:
        request["dimensions"] = dimensions
    embeddings = client.embed(request).get("embeddings") or []
    if not embeddings:
        raise ClientError("no embeddings returned")
    print(dumps(embeddings[0]))


def run_command(
    client: Client,
    model: str,
    prompt_words: list[str],
    *,
    format: str = "",
    think: str | None = None,
    hide_thinking: bool = False,
    keep_alive: str | None = None,
    verbose: bool = False,
    insecure: bool = False,
    truncate: bool | None = None,
    dimensions: int = 0,
    session: Callable[[Client, RunOptions], None] | None = None,
) -> None:
    """``ollama run``: one answer for a prompt (or piped input), else the interactive ``session``."""
    opts = RunOptions(
        model=model,
        format=format,
        think=parse_think(think),
        hide_thinking=hide_thinking,
        keep_alive=parse_keep_alive(keep_alive),
        verbose=verbose,
    )
    interactive = True
    prompts = list(prompt_words)
    if sys.stdin is not None and not sys.stdin.isatty():
        piped = sys.stdin.read()
        if piped:
            prompts.insert(0, piped)
        interactive = False
    opts.prompt = " ".join(prompts)
    if prompts or not sys.stdout.isatty():
        interactive = False

    info = show_or_pull(client, model, insecure)
    caps = info.get("capabilities") or []
    if opts.think is None and "thinking" in caps:
        opts.think = True
    opts.parent_model = str((info.get("details") or {}).get("parent_model") or "")
    opts.loaded_messages = list(info.get("messages") or [])

    if "embedding" in caps:
        embed(client, opts, truncate, dimensions)
        return
    if "image" in caps:
        raise ClientError("image generation models are not currently supported")
    if not interactive or session is None:
        generate(client, opts)
        return

    load(client, opts)
    for message in opts.loaded_messages:
        if message.get("role") == "user":
            print(f">>> {message.get('content', '')}")
        elif message.get("role") == "assistant":
            print(f"{message.get('content', '')}\n")
    session(client, opts)
