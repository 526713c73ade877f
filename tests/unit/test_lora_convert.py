"""GGUF LoRA conversions at serve time (``engine.lora.gguf_adapter_dir``): one per adapter, not one for the
whole server. Two different adapters' first loads convert at the same time; the same adapter asked for twice
at once converts once, the second request finding the first's result."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ollama_torch.engine import lora
from ollama_torch.names import ModelName
from ollama_torch.store import Layer, MediaType, ModelStore

BASE = "sha256:" + "b" * 64
ADAPTERS = ("sha256:" + "1" * 64, "sha256:" + "2" * 64)


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    @contextmanager
    def base_config_dir(store: ModelStore, model: Any, base: Layer) -> Iterator[Path]:
        yield tmp_path  # the base's config.json is not read by the fake conversion

    monkeypatch.setattr(lora, "_base_config_dir", base_config_dir)
    return ModelStore(tmp_path / "models")


def fake_conversion(monkeypatch: pytest.MonkeyPatch, inside: Callable[[str], object]) -> list[str]:
    """Replace ``gguf_lora_to_peft`` by one that runs ``inside(digest)`` and writes the adapter; returns the
    digests it converted, in order."""
    import converters.gguf_lora

    converted: list[str] = []

    def gguf_lora_to_peft(gguf_path: Path, base_dir: Path, out_dir: Path) -> Path:
        digest = "sha256:" + gguf_path.name.removeprefix("sha256-")
        converted.append(digest)
        inside(digest)
        out_dir.mkdir(parents=True)
        (out_dir / "adapter_model.safetensors").write_bytes(b"converted")
        return out_dir

    monkeypatch.setattr(converters.gguf_lora, "gguf_lora_to_peft", gguf_lora_to_peft)
    return converted


def load_at_once(store: ModelStore, digests: tuple[str, ...]) -> list[Path]:
    """``gguf_adapter_dir`` for each digest, each on its own thread (a request's first load), all at once."""
    model: Any = SimpleNamespace(gguf_layer=Layer(MediaType.MODEL, BASE, 1), hf_files={}, name=ModelName.parse("m"))
    results: dict[int, Path] = {}
    errors: list[BaseException] = []

    def load(i: int, digest: str) -> None:
        try:
            results[i] = lora.gguf_adapter_dir(store, model, digest)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(i, d)) for i, d in enumerate(digests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return [results[i] for i in range(len(digests))]


def test_different_adapters_convert_at_the_same_time(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    both_inside = threading.Barrier(2, timeout=10)  # passes only when both conversions run at once
    converted = fake_conversion(monkeypatch, lambda digest: both_inside.wait())
    dirs = load_at_once(store, ADAPTERS)  # was: BrokenBarrierError, the second waiting on the first's lock
    assert sorted(converted) == sorted(ADAPTERS)
    assert [d.parent for d in dirs] == [store.derived_dir(d) for d in ADAPTERS]


def test_the_same_adapter_converts_once(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    converted = fake_conversion(monkeypatch, lambda digest: time.sleep(0.3))  # the other request arrives meanwhile
    dirs = load_at_once(store, (ADAPTERS[0], ADAPTERS[0]))
    assert converted == [ADAPTERS[0]] and dirs[0] == dirs[1]
    assert (dirs[0] / "adapter_model.safetensors").read_bytes() == b"converted"
