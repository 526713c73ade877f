"""Adaptive intra-op threads: pick the torch thread count that makes decode steps fastest *right now*.

On a small CPU shared with other processes, OpenMP's parallel regions wait at their barriers for a
thread the OS has descheduled: measured here on SmolLM2 with another process busy, a decode step took
330 ms with 2 threads and 53 ms with 1, while on an idle machine 2 threads are faster. No fixed choice is
right, so the worker measures: it runs a short probe with the other thread count now and then, keeps
whichever gave faster steps at the same batch size, and backs off (probes less often) while the probe
keeps losing. A probe step that is already far slower than the current mean ends the probe at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import torch

from ..errors import InternalError

log = logging.getLogger(__name__)

T = TypeVar("T")


# The process's thread count before any tuner changed it: a model loaded after another model's tuner settled on
# fewer threads (torch's count is the process's) must still start from, and may try, all of them.
PROCESS_THREADS = torch.get_num_threads()


def _candidates(max_threads: int) -> list[int]:
    if max_threads <= 1:
        return [1]
    if max_threads <= 4:
        return [max_threads, 1]
    return [max_threads, max_threads // 2]


@dataclass
class ThreadTuner:
    max_threads: int = PROCESS_THREADS
    window: int = 8
    hold: int = 64
    max_hold: int = 4096
    enabled: bool = True

    def __post_init__(self) -> None:
        self.options = _candidates(self.max_threads)
        self.current = self.options[0]
        self.enabled = self.enabled and len(self.options) > 1 and not os.environ.get("OMP_NUM_THREADS")
        self._probing: int | None = None  # the thread count under trial
        self._samples: list[float] = []
        self._baseline: float | None = None
        self._batch = -1
        self._countdown = self.window  # steps until the next decision
        self._hold = self.hold
        self.apply()

    def apply(self) -> None:
        """Set the chosen thread count (``torch.set_num_threads`` also sets the calling thread's OpenMP
        count, so a worker's fresh thread calls this first)."""
        if self.enabled:
            torch.set_num_threads(self.current)

    def record(self, seconds: float, batch: int) -> None:
        """Report one decode step (its wall time and batch size); may change torch's thread count."""
        if not self.enabled:
            return
        if batch != self._batch:  # steps are only comparable at the same batch size: start over
            self._batch = batch
            self._samples = []
            self._baseline = None
            self._end_probe(keep=False)
            self._countdown = self.window
            return
        self._samples.append(seconds)
        if self._probing is not None and self._baseline is not None and seconds > 3 * self._baseline:
            self._finish_probe()
            return
        self._countdown -= 1
        if self._countdown > 0:
            return
        mean = sorted(self._samples)[len(self._samples) // 2]
        self._samples = []
        if self._probing is None:
            self._baseline = mean
            self._start_probe()
        else:
            self._finish_probe(mean)

    def _start_probe(self) -> None:
        self._probing = next(t for t in self.options if t != self.current)
        torch.set_num_threads(self._probing)
        self._countdown = self.window

    def _finish_probe(self, mean: float | None = None) -> None:
        won = mean is not None and self._baseline is not None and mean < 0.95 * self._baseline
        self._end_probe(keep=won)
        self._hold = self.hold if won else min(self._hold * 2, self.max_hold)
        self._countdown = self._hold
        self._samples = []

    def _end_probe(self, keep: bool) -> None:
        if self._probing is None:
            return
        if keep:
            log.info("intra-op threads: %d -> %d (faster steps now)", self.current, self._probing)
            self.current = self._probing
            self._baseline = None
        torch.set_num_threads(self.current)
        self._probing = None


class OnDemandThread:
    """A worker thread that exists only while there is work.

    With libgomp (PyTorch's OpenMP), every live thread that has run parallel torch work keeps a team of
    OpenMP threads; once those outnumber the CPUs, libgomp stops spin-waiting between parallel regions
    and every region pays a wake-up. Measured here: one model's decode step went from 32 ms to 53 ms
    merely because another, idle thread (the loader, an idle embedding model) had run torch work before.
    A thread that exits takes its team with it, so workers run on a thread that ends after ``idle_exit``
    seconds without work and is started again by the next ``wake()``.

    ``tick()`` does one unit of work and returns whether it did any (when idle it may block briefly);
    ``has_work()`` is checked under the lock before the thread exits, and ``wake()`` after work is queued.
    """

    def __init__(
        self,
        name: str,
        tick: Callable[[], bool],
        has_work: Callable[[], bool],
        *,
        on_start: Callable[[], None] | None = None,
        idle_exit: float = 2.0,
    ) -> None:
        self.name = name
        self._tick = tick
        self._has_work = has_work
        self._on_start = on_start
        self.idle_exit = idle_exit
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def wake(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def is_current(self) -> bool:
        return self._thread is threading.current_thread()

    def stop(self, timeout: float = 30) -> None:
        """Let the current unit of work finish and join the thread."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        if self._on_start is not None:
            self._on_start()
        idle_since: float | None = None
        while not self._stopping:
            if self._tick():
                idle_since = None
                continue
            now = time.monotonic()
            idle_since = idle_since if idle_since is not None else now
            if now - idle_since >= self.idle_exit:
                with self._lock:
                    if not self._has_work():
                        self._thread = None
                        return
        with self._lock:
            self._thread = None



class _Job(Protocol):
    @property
    def future(self) -> Future[Any]: ...


J = TypeVar("J", bound=_Job)


class BatchQueue(Generic[J]):
    """Jobs answered in batches on an :class:`OnDemandThread` of their own (the embedder's and the
    reranker's): each tick takes everything waiting and hands it to ``process`` as one batch. A batch that
    raises fails every job of it still unanswered, so no caller waits forever; ``close`` finishes the batch
    in flight and fails what is still queued with ``unloaded``."""

    def __init__(self, name: str, process: Callable[[list[J]], None], *, unloaded: str) -> None:
        self._queue: queue.Queue[J] = queue.Queue()
        self._process = process
        self._unloaded = unloaded
        self._closed = False
        self._thread = OnDemandThread(name, self._tick, lambda: not self._queue.empty(), on_start=_no_grad)

    def put(self, job: J) -> None:
        if self._closed:
            raise InternalError(self._unloaded)
        self._queue.put(job)
        self._thread.wake()

    def close(self) -> None:
        self._closed = True
        self._thread.stop()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(InternalError(self._unloaded))

    def _tick(self) -> bool:
        """Process everything waiting as one batch; ``False`` when nothing came within a short wait."""
        try:
            first = self._queue.get(timeout=0.25)
        except queue.Empty:
            return False
        jobs = [first]
        while True:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                break
        try:
            self._process(jobs)
        except BaseException as exc:  # never leave a caller waiting on a failed batch
            log.exception("batch on %s failed", self._thread.name)
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc if isinstance(exc, Exception) else InternalError(str(exc)))
        return True


def _no_grad() -> None:
    torch.set_grad_enabled(False)

async def in_fresh_thread(fn: Callable[..., T], *args: Any, cancel: threading.Event | None = None) -> T:
    """``asyncio.to_thread`` on a thread of its own that ends afterwards, for work that runs torch
    (loading, prompt processing): the executor's threads live on, and a live thread that has run torch
    work slows the workers' parallel regions (see ``OnDemandThread``).

    A thread cannot be stopped from outside, so when the awaiting coroutine is cancelled (its client went
    away) ``cancel`` is set: ``fn`` checks it in its loops and gives up, instead of burning a core for a
    result nobody reads."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name=f"fresh-{getattr(fn, '__name__', 'work')}", daemon=True).start()
    try:
        return await future
    except asyncio.CancelledError:
        if cancel is not None:
            cancel.set()
        raise
