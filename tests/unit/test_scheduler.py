"""Scheduler rules (Ollama's sched.go) with a stand-in loader: keep-alive, LRU eviction, queue limits,
shared weights, and loads whose requester went away."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ollama_torch.engine.scheduler import Runner, Scheduler
from ollama_torch.errors import ServerBusy
from ollama_torch.names import ModelName
from ollama_torch.settings import Settings
from ollama_torch.store import ConfigV2, Layer, Manifest, MediaType, ModelStore, StoredModel


@dataclass
class FakeLoaded:
    name: str
    context_length: int = 8192
    closed: bool = False

    def cleanup(self) -> None:
        self.closed = True


@dataclass
class FakeWorker:
    closed: bool = False
    active: int = 0
    max_rows: int = 8

    def close(self) -> None:
        self.closed = True


@dataclass
class Harness:
    scheduler: Scheduler
    store: ModelStore
    loads: list[str] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)

    def model(self, name: str, weights: bytes) -> StoredModel:
        digest = self.store.blobs.write_bytes(weights)
        cfg = self.store.blobs.write_bytes(ConfigV2(model_format="gguf").to_bytes())
        manifest = Manifest(Layer(MediaType.CONFIG, cfg, 1), (Layer(MediaType.MODEL, digest, len(weights)),))
        self.store.write_manifest(ModelName.parse(name), manifest)
        return self.store.get(ModelName.parse(name))


@pytest.fixture()
def harness(tmp_path: Path) -> Harness:
    settings = Settings(models=tmp_path, max_loaded_models=2, max_queue=3, keep_alive=300)
    store = ModelStore(tmp_path)
    h = Harness(Scheduler(settings, store), store)
    h.gate.set()

    def load_sync(key: str, stored: StoredModel) -> Runner:
        h.gate.wait(10)
        h.loads.append(stored.name.model)
        return Runner(key=key, stored=stored, loaded=FakeLoaded(stored.name.model), worker=FakeWorker())

    h.scheduler._load_sync = load_sync  # type: ignore[method-assign]
    return h


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_loaded_model_is_reused_and_shared_by_weights(harness: Harness) -> None:
    a = harness.model("a", b"weights-1")
    b = harness.model("b", b"weights-1")  # FROM a with another system prompt: same weights

    async def go() -> None:
        r1, load1 = await harness.scheduler.acquire(a, None)
        harness.scheduler.release(r1)
        r2, load2 = await harness.scheduler.acquire(b, None)
        harness.scheduler.release(r2)
        assert r1 is r2 and 0 < load2 < load1
        assert harness.loads == ["a"]

    run(go())


def test_keep_alive_zero_unloads_and_negative_never_expires(harness: Harness) -> None:
    a = harness.model("a", b"w1")

    async def go() -> None:
        r, _ = await harness.scheduler.acquire(a, 0)
        harness.scheduler.release(r)
        await asyncio.sleep(0.05)
        assert not harness.scheduler.runners and r.worker is None
        r, _ = await harness.scheduler.acquire(a, math.inf)
        harness.scheduler.release(r)
        assert r.expires_at == math.inf and r.timer is None
        r, _ = await harness.scheduler.acquire(a, 0.1)
        harness.scheduler.release(r)
        assert r.expires_at <= time.time() + 0.2
        await asyncio.sleep(0.3)
        assert not harness.scheduler.runners

    run(go())


def test_least_recently_used_idle_model_is_evicted(harness: Harness) -> None:
    a, b, c = harness.model("a", b"w1"), harness.model("b", b"w2"), harness.model("c", b"w3")

    async def go() -> None:
        ra, _ = await harness.scheduler.acquire(a, None)
        harness.scheduler.release(ra)
        rb, _ = await harness.scheduler.acquire(b, None)
        harness.scheduler.release(rb)
        ra, _ = await harness.scheduler.acquire(a, None)  # a is now the most recently used
        harness.scheduler.release(ra)
        await harness.scheduler.acquire(c, None)
        names = sorted(r.stored.name.model for r in harness.scheduler.runners.values())
        assert names == ["a", "c"] and rb.worker is None

    run(go())


def test_busy_models_are_not_evicted_the_new_one_waits(harness: Harness) -> None:
    a, b, c = harness.model("a", b"w1"), harness.model("b", b"w2"), harness.model("c", b"w3")

    async def go() -> None:
        ra, _ = await harness.scheduler.acquire(a, None)
        rb, _ = await harness.scheduler.acquire(b, None)
        waiter = asyncio.create_task(harness.scheduler.acquire(c, None))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        harness.scheduler.release(rb)
        rc, _ = await asyncio.wait_for(waiter, 5)
        assert rc.stored.name.model == "c" and ra.worker is not None and rb.worker is None

    run(go())


def test_queue_limit_answers_503(harness: Harness) -> None:
    harness.gate.clear()
    a = harness.model("a", b"w1")

    async def go() -> None:
        waiting = [asyncio.create_task(harness.scheduler.acquire(a, None)) for _ in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(ServerBusy, match=r"server busy, please try again\.  maximum pending requests exceeded"):
            await harness.scheduler.acquire(a, None)
        harness.gate.set()
        runners = await asyncio.gather(*waiting)
        assert len({id(r) for r, _ in runners}) == 1 and harness.loads == ["a"]

    run(go())


def test_load_finishes_and_registers_when_the_requester_left(harness: Harness) -> None:
    harness.gate.clear()
    a = harness.model("a", b"w1")

    async def go() -> None:
        task = asyncio.create_task(harness.scheduler.acquire(a, None))
        await asyncio.sleep(0.05)
        task.cancel()
        harness.gate.set()
        await asyncio.sleep(0.2)
        runner = next(iter(harness.scheduler.runners.values()))
        assert runner.refs == 0 and runner.timer is not None  # idle: it will expire after keep-alive
        again, load = await harness.scheduler.acquire(a, None)
        assert again is runner and load < 0.05 and again.timer is None

    run(go())


def test_unload_model_request(harness: Harness) -> None:
    a = harness.model("a", b"w1")

    async def go() -> None:
        r, _ = await harness.scheduler.acquire(a, None)
        await harness.scheduler.unload_model(a)  # busy: unloads when its request ends
        assert harness.scheduler.runners
        harness.scheduler.release(r)
        await asyncio.sleep(0.05)
        assert not harness.scheduler.runners

    run(go())
