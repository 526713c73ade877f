"""The thread tuner keeps the thread count whose steps are faster, and stops probing a loser often."""

from __future__ import annotations

import itertools

import torch

from ollama_torch.engine.threads import PROCESS_THREADS, ThreadTuner


def drive(tuner: ThreadTuner, cost: dict[int, float], steps: int, batch: int = 4) -> list[int]:
    seen = []
    for _ in range(steps):
        threads = torch.get_num_threads()
        seen.append(threads)
        tuner.record(cost[threads], batch)
    return seen


def test_switches_to_the_faster_count_and_back() -> None:
    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner(max_threads=2, window=4, hold=16)
        assert tuner.enabled and torch.get_num_threads() == 2
        drive(tuner, {2: 0.30, 1: 0.05}, 200)  # contended: one thread wins
        assert tuner.current == 1
        drive(tuner, {2: 0.02, 1: 0.05}, 400)  # idle again: two threads win
        assert tuner.current == 2
    finally:
        torch.set_num_threads(before)


def test_a_later_tuner_starts_from_the_process_count_not_the_last_tuners() -> None:
    """A model loaded after another one's tuner chose one thread (torch's count is the process's) starts from
    all of them, and its compiled step is built for the same count as before (the saved step's key)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what an earlier worker's tuner left
        tuner = ThreadTuner()
        assert tuner.max_threads == PROCESS_THREADS and tuner.current == PROCESS_THREADS
        assert torch.get_num_threads() == PROCESS_THREADS or not tuner.enabled
    finally:
        torch.set_num_threads(before)


def test_losing_probes_back_off() -> None:
    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner(max_threads=2, window=4, hold=16, max_hold=1024)
        seen = drive(tuner, {2: 0.02, 1: 0.2}, 2000)
        probes = sum(1 for a, b in itertools.pairwise(seen) if a == 2 and b == 1)
        assert tuner.current == 2 and probes <= 8  # backed off exponentially, not every 16 steps
    finally:
        torch.set_num_threads(before)


def test_batch_change_restarts_measurement() -> None:
    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner(max_threads=2, window=4, hold=16)
        for i in range(100):  # batch size changes every step: never enough comparable samples
            tuner.record(0.3 if torch.get_num_threads() == 2 else 0.01, batch=i % 3 + 1)
        assert tuner.current == 2
    finally:
        torch.set_num_threads(before)


def test_on_demand_thread_exits_when_idle_and_restarts() -> None:
    import queue
    import time

    from ollama_torch.engine.threads import OnDemandThread

    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    done: list[int] = []

    def tick() -> bool:
        try:
            done.append(work.get(timeout=0.01))
        except queue.Empty:
            return False
        return True

    t = OnDemandThread("test-worker", tick, lambda: not work.empty(), idle_exit=0.05)
    assert not t.running
    for round_ in range(3):
        for i in range(5):
            work.put(round_ * 10 + i)
            t.wake()
        deadline = time.monotonic() + 5
        while (t.running or len(done) < 5 * (round_ + 1)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not t.running  # idle: the thread (and its OpenMP team) is gone
    assert sorted(done) == [r * 10 + i for r in range(3) for i in range(5)]
    work.put(99)
    t.wake()
    t.stop()
    assert not t.running
