"""Pull and push through the real server process against a real registry (docker-registry).

The official ``ollama`` client pushes a model and pulls it back; a pull whose server is SIGKILLed
mid-download continues, after a restart, from the bytes its part records claim.
"""

from __future__ import annotations

import json
import random
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import ollama
import pytest

from ollama_torch.names import ModelName
from ollama_torch.store import ConfigV2, Layer, Manifest, MediaType, ModelStore
from tests.registry_fixtures import Registry, assert_same_model, make_synthetic_model, registry, running_proxy
from tests.server_process import ServerProcess, start_server

__all__ = ["registry"]  # the session fixture, imported for pytest


def test_push_and_pull_with_the_official_client(
    registry: Registry, server: ServerProcess, client: ollama.Client
) -> None:
    store = ModelStore(server.models)
    name = f"{registry.host}/library/e2e-roundtrip:latest"
    raw = make_synthetic_model(store, name, (2_000_000, 500), seed=100)
    source = {d: store.blobs.read_bytes(d) for d in Manifest.from_bytes(raw).digests()}

    assert client.push(name, insecure=True).status == "success"
    progress = list(client.push(name, insecure=True, stream=True))
    assert progress[0].status == "retrieving manifest" and progress[-1].status == "success"
    assert all(p.completed == p.total for p in progress if p.digest)  # all there already: nothing uploaded

    client.delete(name)
    assert not any(store.blobs.exists(d) for d in source)
    assert client.pull(name, insecure=True).status == "success"
    assert store.read_manifest(ModelName.parse(name))[2] == raw
    assert all(store.blobs.read_bytes(d) == data for d, data in source.items())
    assert any(m.model == name for m in client.list().models)

    with pytest.raises(ollama.ResponseError, match="pull model manifest: file does not exist"):
        client.pull(f"{registry.host}/library/e2e-missing:latest", insecure=True)
    with pytest.raises(ollama.ResponseError, match="insecure protocol http"):
        client.pull(f"http://{registry.host}/library/e2e-roundtrip:latest")


def test_pull_from_a_host_that_does_not_resolve_fails_at_once(client: ollama.Client) -> None:
    """No retries for a host that does not exist (was 20-60 s of backoff); Ollama's error text."""
    started = time.monotonic()
    url = "https://nosuchhost.invalid/v2/x/y/manifests/latest"
    prefix = f'pull model manifest: Get "{url}": dial tcp: lookup nosuchhost.invalid: '
    with pytest.raises(ollama.ResponseError, match="^" + re.escape(prefix)):
        client.pull("nosuchhost.invalid/x/y")
    assert time.monotonic() - started < 5


def _claimed(store: ModelStore, digest: str) -> int:
    final = store.blobs.path(digest)
    total = 0
    for record in final.parent.glob(final.name + "-partial-*"):
        try:
            total += json.loads(record.read_text())["Completed"]
        except ValueError:
            pass
    return total


def test_pull_resumes_after_the_server_is_killed(registry: Registry, tmp_path: Path) -> None:
    size = 3_000_000
    with running_proxy(registry.url) as proxy:
        name = f"{proxy.host}/library/e2e-killed:latest"
        src_store = ModelStore(tmp_path / "src")
        raw = make_synthetic_model(src_store, name, (size, 700), seed=101)
        big = Manifest.from_bytes(raw).layers[0].digest
        src = start_server(src_store.root, tmp_path / "src.log")
        try:
            resp = httpx.post(
                f"{src.url}/api/push", json={"model": name, "insecure": True, "stream": False}, timeout=120
            )
            assert resp.json() == {"status": "success"}
        finally:
            src.stop()

        dst_store = ModelStore(tmp_path / "dst")
        proxy.reset()
        proxy.throttle = 0.02  # ~800 KB/s: the blob takes ~4 s
        dst = start_server(dst_store.root, tmp_path / "dst.log")
        body = {"model": name, "insecure": True}
        pulling = threading.Thread(
            target=_post_ignoring_errors, args=(f"{dst.url}/api/pull", body), daemon=True
        )
        pulling.start()
        deadline = time.monotonic() + 60
        while _claimed(dst_store, big) < 400_000:
            assert time.monotonic() < deadline, dst.log()
            time.sleep(0.05)
        dst.stop(signal.SIGKILL)
        pulling.join(30)
        saved = _claimed(dst_store, big)
        assert 400_000 <= saved < size
        assert not dst_store.blobs.exists(big) and not dst_store.exists(ModelName.parse(name))

        proxy.reset()
        dst = start_server(dst_store.root, tmp_path / "dst.log")
        try:
            resp = httpx.post(f"{dst.url}/api/pull", json={**body, "stream": False}, timeout=120)
            assert resp.json() == {"status": "success"}, dst.log()
        finally:
            dst.stop()
        assert proxy.blob_bytes <= Manifest.from_bytes(raw).size - saved + 16
        assert_same_model(src_store, dst_store, name)


def test_delete_of_a_model_sharing_a_layer_during_a_pull(registry: Registry, server: ServerProcess, client: ollama.Client) -> None:
    """A pull finds a layer stored (held by another model), and that model is deleted while the pull downloads
    its next layer: the pull still succeeds and the layer stays (it was pinned), until its last model goes."""
    store = ModelStore(server.models)
    shared = store.blobs.write_bytes(b"e2e: a layer two models share")
    with running_proxy(registry.url) as proxy:
        name = f"{proxy.host}/library/e2e-shared:latest"
        manifest = _store_model(store, name, [shared, store.blobs.write_bytes(random.Random(102).randbytes(2_000_000))])
        big = manifest.layers[1].digest
        assert client.push(name, insecure=True).status == "success"
        _store_model(store, "e2e-holder", [shared])
        client.delete(name)
        assert store.blobs.exists(shared) and not store.blobs.exists(big)

        proxy.reset()
        proxy.throttle = 0.02  # ~800 KB/s: the big layer takes ~2.5 s
        outcome: list[object] = []
        pulling = threading.Thread(target=lambda: outcome.append(_pull_or_error(client, name)), daemon=True)
        pulling.start()
        deadline = time.monotonic() + 60
        while proxy.blob_bytes < 200_000:  # the shared layer was found stored; the big one is downloading
            assert time.monotonic() < deadline and pulling.is_alive(), outcome
            time.sleep(0.02)
        client.delete("e2e-holder")  # its only other holder: was removed, and the pull failed "blob ... not found"
        pulling.join(60)
        assert outcome == ["success"], outcome
    assert all(store.blobs.exists(d) for d in manifest.digests())
    client.delete(name)
    assert not any(store.blobs.exists(d) for d in manifest.digests())


def _store_model(store: ModelStore, name: str, digests: list[str]) -> Manifest:
    layers = tuple(Layer(MediaType.MODEL, d, store.blobs.size(d)) for d in digests)
    config = ConfigV2(model_format="gguf", model_family="llama", extra={"name": name}).to_bytes()
    manifest = Manifest(Layer(MediaType.CONFIG, store.blobs.write_bytes(config), len(config)), layers)
    store.write_manifest(ModelName.parse(name), manifest)
    return manifest


def _pull_or_error(client: ollama.Client, name: str) -> str:
    try:
        return str(client.pull(name, insecure=True).status)
    except ollama.ResponseError as exc:
        return f"error: {exc.error}"


def _post_ignoring_errors(url: str, body: dict[str, object]) -> None:
    try:
        with httpx.stream("POST", url, json=body, timeout=120) as resp:
            for _ in resp.iter_lines():
                pass
    except httpx.HTTPError:
        pass  # the server was killed under us


def test_push_pull_the_real_model_and_generate(registry: Registry, server: ServerProcess, client: ollama.Client, smollm2: str, tmp_path: Path) -> None:
    """Push SmolLM2 to the registry, pull it into an empty store on a second server, generate with it,
    delete it there and pull it again: same manifest digest and blobs every time."""
    name = f"{registry.host}/library/smol:latest"
    client.copy(smollm2, name)
    assert client.push(name, insecure=True).status == "success"
    manifest = ModelStore(server.models).read_manifest(ModelName.parse(name))[2]
    remote = httpx.get(f"{registry.url}/v2/library/smol/manifests/latest", headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert remote.content == manifest
    client.delete(name)
    other = start_server(tmp_path / "models", tmp_path / "server.log")
    try:
        c2 = ollama.Client(host=other.url, timeout=600)
        for _ in range(2):
            lines = [p.status for p in c2.pull(name, insecure=True, stream=True)]
            assert lines[0] == "pulling manifest" and lines[-1] == "success" and "verifying sha256 digest" in lines
            store = ModelStore(other.models)
            assert store.read_manifest(ModelName.parse(name))[2] == manifest
            for digest in Manifest.from_bytes(manifest).digests():
                assert store.blobs.read_bytes(digest) == ModelStore(server.models).blobs.read_bytes(digest)
            if _ == 0:
                r = c2.generate(model=name, prompt="Why is the sky blue?", options={"temperature": 0, "num_predict": 8})
                ref = client.generate(model=smollm2, prompt="Why is the sky blue?", options={"temperature": 0, "num_predict": 8})
                assert r.response == ref.response and r.eval_count == 8
            c2.delete(name)
            assert not list((other.models / "blobs").glob("sha256-*"))
    finally:
        other.stop()
