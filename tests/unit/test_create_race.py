"""Creates and deletes do not race: a blob an in-flight create references (a layer reused from its source
model, or a system prompt it just wrote or found already stored) is never removed by a concurrent delete
or prune, so the create cannot fail with 404 ``blob ... not found``; and nothing stays pinned after it."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ollama_torch.create import CreateRequest
from ollama_torch.create.service import create_model
from ollama_torch.errors import BadRequest
from ollama_torch.names import ModelName
from ollama_torch.store import ConfigV2, Layer, Manifest, MediaType, ModelStore

SYSTEM = "You are a pirate."


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture()
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    layers = []
    for data in (b"weights-1", b"weights-2"):
        digest = store.blobs.write_bytes(data)
        layers.append(Layer(MediaType.TENSOR, digest, len(data), name=f"{data.decode()}.safetensors"))
    cfg = ConfigV2(model_format="safetensors", model_family="llama").to_bytes()
    manifest = Manifest(Layer(MediaType.CONFIG, store.blobs.write_bytes(cfg), len(cfg)), tuple(layers))
    store.write_manifest(ModelName.parse("base"), manifest)
    create(store, "sibling", from_="base", system=SYSTEM)
    return store


def create(store: ModelStore, name: str, **fields: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    create_model(store, CreateRequest(name=ModelName.parse(name), **fields), events.append)
    return events


def in_other_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` on another thread, as another client's request, and wait for it."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    assert not t.is_alive() and not errors, errors


def at_system_write(store: ModelStore, monkeypatch: pytest.MonkeyPatch, system: str, race: Callable[[], None]) -> None:
    """Run ``race`` in the window: right after the create stored (or found) its system-prompt blob,
    before it writes its manifest."""
    original = store.blobs.write_bytes

    def write_bytes(data: bytes) -> str:
        digest = original(data)
        if data == system.encode():
            in_other_thread(race)
        return digest

    monkeypatch.setattr(store.blobs, "write_bytes", write_bytes)


def test_delete_of_models_sharing_the_layers_during_a_create(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another client deletes the model that shares the system prompt, and the source model itself, while
    the create is between reading the source's layers and writing its manifest."""

    def delete_both() -> None:
        store.delete(ModelName.parse("sibling"))  # the only other holder of the system-prompt blob
        store.delete(ModelName.parse("base"))  # the only holder of the weights

    at_system_write(store, monkeypatch, SYSTEM, delete_both)
    events = create(store, "mine", from_="base", system=SYSTEM)  # today: NotFound "blob sha256:... not found"
    assert events[-1] == {"status": "success"}
    model = store.get(ModelName.parse("mine"))
    assert model.system == SYSTEM and all(store.blobs.exists(d) for d in model.manifest.digests())
    assert [m.name.display_shortest for m in store.list()] == ["mine:latest"]
    store.delete(ModelName.parse("mine"))  # nothing stays pinned: the blobs go with the last model
    assert store.blobs.all_digests() == []


def test_prune_during_a_create_keeps_the_blob_it_just_wrote(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    system = "A prompt nobody else has."
    at_system_write(store, monkeypatch, system, lambda: store.prune(grace_seconds=0))
    assert create(store, "mine", from_="base", system=system)[-1] == {"status": "success"}
    assert store.get(ModelName.parse("mine")).system == system


def test_a_failed_create_releases_its_pins(store: ModelStore) -> None:
    with pytest.raises(BadRequest):
        create(store, "bad", from_="base", system="new prompt", quantize="q4_K_M")  # base is no F32 model
    store.delete(ModelName.parse("sibling"))
    store.delete(ModelName.parse("base"))
    assert store.prune(grace_seconds=0) >= 0 and store.blobs.all_digests() == []


def test_a_blob_a_delete_skipped_goes_when_its_pin_is_released(store: ModelStore) -> None:
    system = sha(SYSTEM.encode())
    with store.pinning() as pins:
        pins.add(system)
        store.delete(ModelName.parse("sibling"))
        assert store.blobs.exists(system)  # pinned by the in-flight create
        with store.pinning() as other:  # a second create holding it too
            other.add(system)
        assert store.blobs.exists(system)
    assert not store.blobs.exists(system)  # the delete's removal, done when the last pin went
    store.delete(ModelName.parse("base"))
    assert store.blobs.all_digests() == []


def test_a_released_blob_a_manifest_references_stays(store: ModelStore) -> None:
    with store.pinning() as pins:
        pins.add(sha(SYSTEM.encode()))
        store.delete(ModelName.parse("sibling"))
        create(store, "again", from_="base", system=SYSTEM)
    assert store.get(ModelName.parse("again")).system == SYSTEM
