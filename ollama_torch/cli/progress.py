"""Spinners and progress bars on stderr, as Ollama's ``progress`` package draws them.

On a terminal a render thread redraws every state in place ten times a second (cursor up, ``\\r``, each
line cleared with ``ESC[K``). Anywhere else (a log file, CI, a pipe) states print plain lines only when
something happens: a spinner's message once, a bar when it completes and, while it moves, at most once
every ``log_interval`` seconds, so logs stay readable.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Protocol, TextIO

from .format import human_bytes

SPINNER_FRAMES = ("⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏")


class State(Protocol):
    def render(self, width: int) -> str: ...


def _repeat(s: str, n: int) -> str:
    return s * n if n > 0 else ""


def _format_eta(seconds: float) -> str:
    """Ollama's ``formatDuration``: at most two units."""
    if seconds >= 100 * 3600:
        return "99h+"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds // 60) % 60}m"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class Spinner:
    def __init__(self, message: str) -> None:
        self.message = message
        self.started = time.monotonic()
        self.stopped = False

    def set_message(self, message: str) -> None:
        self.message = message

    def stop(self) -> None:
        self.stopped = True

    def render(self, width: int) -> str:
        out = f"{self.message.strip()} " if self.message else ""
        if not self.stopped:
            frame = int((time.monotonic() - self.started) * 10) % len(SPINNER_FRAMES)
            out += SPINNER_FRAMES[frame] + " "
        return out


class Bar:
    """A byte-count bar: ``message  42% ▕████      ▏ 1.2 GB/2.9 GB  45 MB/s  37s``."""

    def __init__(self, message: str, total: int, completed: int = 0) -> None:
        self.message = message
        self.total = total
        self.initial = completed
        self.completed = completed
        self.started = time.monotonic()
        self.stopped: float | None = self.started if completed >= total else None
        self._buckets: list[tuple[float, int]] = []
        self.logged_at = 0.0  # when the plain-text renderer last wrote this bar

    @property
    def done(self) -> bool:
        return self.stopped is not None

    def set(self, value: int) -> None:
        value = min(value, self.total)
        self.completed = value
        now = time.monotonic()
        if value >= self.total and self.stopped is None:
            self.stopped = now
        # Rate buckets at most once a second, the last ten kept.
        if not self._buckets or now - self._buckets[-1][0] > 1.0:
            self._buckets = [*self._buckets, (now, value)][-10:]

    @property
    def percent(self) -> float:
        return self.completed / self.total * 100 if self.total > 0 else 0.0

    def rate(self) -> float:
        if self.stopped is not None:
            elapsed, moved = round(self.stopped - self.started), self.completed - self.initial
        elif len(self._buckets) == 1:
            elapsed, moved = round(self._buckets[0][0] - self.started), self._buckets[0][1] - self.initial
        elif self._buckets:
            (t0, v0), (t1, v1) = self._buckets[0], self._buckets[-1]
            elapsed, moved = round(t1 - t0), v1 - v0
        else:
            return 0.0
        return moved / elapsed if elapsed else 0.0

    def render(self, width: int) -> str:
        pre = f"{self.message.strip()} " if self.message else ""
        pre += f"{self.percent:3.0f}%"
        total = human_bytes(self.total)
        if self.stopped is None:
            current = human_bytes(self.completed)
            suf = _repeat(" ", 6 - len(current)) + current + "/" + _repeat(" ", 6 - len(total)) + total
        else:
            suf = _repeat(" ", 6 - len(total)) + total + " " * 7
        rate = self.rate()
        if self.stopped is None and rate > 0:
            speed = human_bytes(int(rate))
            eta = _format_eta((self.total - self.completed) / rate)
            suf += "  " + _repeat(" ", 6 - len(speed)) + speed + "/s"
            suf += "  " + _repeat(" ", 6 - len(eta)) + eta
        else:
            suf += " " * 18
        room = width - len(pre) - len(suf) - 5
        filled = int(room * self.percent / 100)
        return pre + " ▕" + _repeat("█", filled) + _repeat(" ", room - filled) + "▏ " + suf

    def log_line(self) -> str:
        """The plain-text form: ``message  42% 1.2 GB/2.9 GB`` while moving, ``message 100% 2.9 GB`` done."""
        head = f"{self.message.strip()} {self.percent:3.0f}%".lstrip()
        if self.done:
            return f"{head} {human_bytes(self.total)}"
        return f"{head} {human_bytes(self.completed)}/{human_bytes(self.total)}"


class Progress:
    """The states of one command, drawn on ``stream`` (stderr by default).

    ``tty`` defaults to ``stream.isatty()``. Use as a context manager, or call ``stop()`` (leave the
    final frame) / ``stop_and_clear()`` (erase it, before printing a model's answer)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 0.1,
        log_interval: float = 10.0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(tty if tty is not None else _isatty(self.stream))
        self.interval = interval
        self.log_interval = log_interval
        self.states: list[State] = []
        self._lock = threading.RLock()
        self._pos = 0
        self._stopped = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if self.tty:
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- states ------------------------------------------------------------------------------------
    def add(self, state: State) -> None:
        with self._lock:
            self.states.append(state)
            if not self.tty:
                if isinstance(state, Spinner) and state.message.strip():
                    self._write_line(state.message.strip())
                elif isinstance(state, Bar):
                    # A bar that finishes quickly is one line; a slow one reports every log_interval.
                    state.logged_at = time.monotonic()
                    if state.done:
                        self._write_line(state.log_line())

    def spinner(self, message: str) -> Spinner:
        spinner = Spinner(message)
        self.add(spinner)
        return spinner

    def bar(self, message: str, total: int, completed: int = 0) -> Bar:
        bar = Bar(message, total, completed)
        self.add(bar)
        return bar

    def update(self, bar: Bar, value: int) -> None:
        """Move ``bar``; in plain-text mode this is where a line may be written."""
        with self._lock:
            was_done = bar.done
            bar.set(value)
            if self.tty or was_done or self._stopped:
                return
            now = time.monotonic()
            if bar.done or now - bar.logged_at >= self.log_interval:
                bar.logged_at = now
                self._write_line(bar.log_line())

    # -- drawing -----------------------------------------------------------------------------------
    def _write_line(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def _loop(self) -> None:
        while not self._done.wait(self.interval):
            self.render()

    def render(self) -> None:
        with self._lock:
            if not self.tty or self._stopped:
                return
            self._render_locked()

    def _render_locked(self) -> None:
        width, height = _terminal_size(self.stream)
        out = ["\033[?25l", _repeat("\033[A", self._pos - 1), "\r"]
        visible = self.states[-height:]
        out.append("\n".join(state.render(width) + "\033[K" for state in visible))
        out.append("\033[?25h")
        self.stream.write("".join(out))
        self.stream.flush()
        self._pos = len(visible)

    def _halt(self) -> bool:
        with self._lock:
            if self._stopped:
                return False
            for state in self.states:
                if isinstance(state, Spinner):
                    state.stop()
            if self.tty:
                self._render_locked()
            self._stopped = True
        self._done.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        return True

    def stop(self) -> None:
        """Stop animating and leave the last frame (a terminal gets its final newline)."""
        if self._halt() and self.tty and self._pos:
            self.stream.write("\n")
            self.stream.flush()

    def stop_and_clear(self) -> None:
        """Stop and erase what was drawn, so a model's answer starts on a clean line."""
        if self._halt() and self.tty:
            out = "".join(("\033[A" if i else "") + "\033[2K\r" for i in range(self._pos))
            self.stream.write(out)
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
        return size.columns or 80, size.lines or 24
    except (AttributeError, OSError, ValueError):
        return 80, 24
