"""Adaptive intra-op threads: pick the torch thread count that makes decode steps fastest *right now*.

On a small CPU shared with other processes, OpenMP's parallel regions wait at their barriers for a
thread the OS has descheduled: measured here on SmolLM2 with another process busy, a decode step took
330 ms with 2 threads and 53 ms with 1, while on an idle machine 2 threads are faster. No fixed choice is
right, so the worker measures: it runs a short probe with the other thread count now and then, keeps
whichever gave faster steps at the same batch size, and backs off (probes less often) while the probe
keeps losing. A probe step that is already far slower than the current mean ends the probe at once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)


def _candidates(max_threads: int) -> list[int]:
    if max_threads <= 1:
        return [1]
    if max_threads <= 4:
        return [max_threads, 1]
    return [max_threads, max_threads // 2]


@dataclass
class ThreadTuner:
    max_threads: int = field(default_factory=lambda: torch.get_num_threads())
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
