"""Pulls and pushes do not race deletes: every blob a pull finds already stored or downloads, and every blob a
push reads, is pinned (``ModelStore.pinning``) until its manifest is written or the push ends, so a
concurrent ``DELETE`` of another model sharing a layer, of the model being pushed, or a prune, cannot
collect it in between. The window is scripted: the download, commit or upload step itself runs the delete.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ollama_torch.create import CreateRequest
from ollama_torch.create.request import Emit
from ollama_torch.names import ModelName
from ollama_torch.registry import Transfers, pull_hf, pull_model, push_model
from ollama_torch.store import BlobStore, ConfigV2, Layer, Manifest, MediaType, ModelStore
from tests.registry_fixtures import OPTIONS, Registry, local, registry, run, source, statuses

__all__ = ["local", "registry", "source"]  # fixtures, imported for pytest

SHARED = b"a layer two models share"


def store_model(store: ModelStore, name: str, blobs: list[bytes]) -> Manifest:
    layers = tuple(Layer(MediaType.PARAMS if i else MediaType.MODEL, store.blobs.write_bytes(b), len(b)) for i, b in enumerate(blobs))
    config = ConfigV2(model_format="gguf", model_family="llama", extra={"name": name}).to_bytes()
    manifest = Manifest(Layer(MediaType.CONFIG, store.blobs.write_bytes(config), len(config)), layers)
    store.write_manifest(ModelName.parse(name), manifest)
    return manifest


class ScriptedTransfers(Transfers):
    """``Transfers`` that run ``before_download`` as a download starts and ``after_commit`` once a blob is
    committed: another client's delete or prune, right inside the pull's window."""

    def __init__(self, before_download: Callable[[], object] | None = None, after_commit: Callable[[], object] | None = None) -> None:
        super().__init__(OPTIONS)
        self.before_download, self.after_commit = before_download, after_commit

    async def download(self, name: ModelName, insecure: bool, token: str, blobs: BlobStore, digest: str) -> AsyncIterator[dict[str, Any]]:
        if self.before_download is not None:
            self.before_download()
        async for line in super().download(name, insecure, token, blobs, digest):
            yield line

    async def commit(self, blobs: BlobStore, digest: str) -> None:
        await super().commit(blobs, digest)
        if self.after_commit is not None:
            self.after_commit()


def pushed(registry: Registry, source: ModelStore, model: str) -> tuple[ModelName, Manifest]:
    """A model with the shared layer first and a fresh one after it, pushed to the registry."""
    name = ModelName.parse(f"{registry.host}/library/{model}:latest")
    manifest = store_model(source, str(name), [SHARED, random.Random(model).randbytes(200_000)])

    async def push() -> None:
        assert statuses([line async for line in push_model(source, name, insecure=True, options=OPTIONS)])[-1] == "success"

    run(push)
    return name, manifest


def pull(store: ModelStore, name: ModelName, transfers: Transfers) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        return [line async for line in pull_model(store, name, insecure=True, transfers=transfers)]

    return list(run(go))


def test_delete_of_a_model_sharing_a_stored_layer_during_a_pull(registry: Registry, source: ModelStore, local: ModelStore) -> None:
    """The pull finds the shared layer stored (held by ``other``), then another client deletes ``other``
    while the pull downloads its next layer: the pull still writes a model whose blobs all exist."""
    name, manifest = pushed(registry, source, "shares-a-layer")
    store_model(local, "other", [SHARED])
    deleted: list[str] = []

    def delete_other() -> None:
        if not deleted:
            local.delete(ModelName.parse("other"))  # the only manifest holding the shared layer
            deleted.append("other")

    lines = pull(local, name, ScriptedTransfers(before_download=delete_other))  # was: blob sha256:... not found
    assert deleted and statuses(lines)[-1] == "success", lines
    assert f"pulling {manifest.layers[0].digest[7:19]}" in statuses(lines)  # found stored, not downloaded
    assert all(local.blobs.exists(d) for d in manifest.digests())
    assert not local.exists(ModelName.parse("other"))
    local.delete(name)  # nothing stays pinned: the blobs go with the last model
    assert local.blobs.all_digests() == []


def test_prune_after_a_blob_is_committed_during_a_pull(registry: Registry, source: ModelStore, local: ModelStore) -> None:
    """A prune between a downloaded blob's commit and the manifest write keeps it (it has no manifest yet)."""
    name, manifest = pushed(registry, source, "pruned-meanwhile")
    lines = pull(local, name, ScriptedTransfers(after_commit=lambda: local.prune(grace_seconds=0)))
    assert statuses(lines)[-1] == "success", lines
    assert all(local.blobs.exists(d) for d in manifest.digests())


def test_delete_of_the_model_being_pushed(registry: Registry, source: ModelStore) -> None:
    """Deleting a model while it is pushed leaves its blobs until the push is done: the push completes,
    then the blobs go (the delete's removal, deferred while pinned)."""
    name = ModelName.parse(f"{registry.host}/library/deleted-while-pushed:latest")
    store_model(source, str(name), [random.Random(1).randbytes(100_000), random.Random(2).randbytes(100_000)])

    async def go() -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        async for line in push_model(source, name, insecure=True, options=OPTIONS):
            if line.get("digest") and not lines[-1].get("digest"):
                source.delete(name)  # another client, as the first blob starts
            lines.append(line)
        return lines

    lines = run(go)  # was: FileNotFoundError on the blobs not read yet
    assert statuses(lines)[-1] == "success", lines
    assert not source.exists(name) and source.blobs.all_digests() == []


def test_delete_of_a_model_sharing_a_stored_file_during_a_hugging_face_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hf.co`` pulls: the GGUF is found stored (held by ``other``), ``other`` is deleted while the projector
    downloads, and the create that follows still finds every file's blob."""
    import huggingface_hub

    store = ModelStore(tmp_path / "models")
    weights = b"GGUF" + bytes(range(256)) * 8
    store_model(store, "other", [weights])
    projector = tmp_path / "mmproj-F16.gguf"
    projector.write_bytes(b"GGUF projector")
    siblings = [
        SimpleNamespace(rfilename="m-Q4_K_M.gguf", size=len(weights), lfs=SimpleNamespace(sha256=hashlib.sha256(weights).hexdigest())),
        SimpleNamespace(rfilename=projector.name, size=projector.stat().st_size, lfs=None),
    ]

    def hf_hub_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        store.delete(ModelName.parse("other"))  # another client, while this file downloads
        return str(projector)

    def create_model(store: ModelStore, req: CreateRequest, emit: Emit, *, noprune: bool = False, pull: Any = None) -> None:
        missing = [path for path, digest in req.files.items() if not store.blobs.exists(digest)]
        assert not missing, f"{missing} collected before the create"  # create_model's 400 "has no blob"
        emit({"status": "success"})

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo_id, **kw: SimpleNamespace(sha="x", siblings=siblings))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    lines: list[dict[str, Any]] = []
    pull_hf(store, ModelName.parse("hf.co/org/repo"), lines.append, create=create_model)
    assert lines[-1] == {"status": "success"}
    assert not store.blobs.exists(siblings[0].lfs.sha256 and f"sha256:{siblings[0].lfs.sha256}")  # pins released
