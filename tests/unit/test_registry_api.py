"""``/api/pull`` and ``/api/push`` against a real registry (docker-registry), through the aiohttp app:
round trips, skipped and mounted blobs, the errors Ollama gives, validation before streaming."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ollama_torch.create.service import create_model
from ollama_torch.names import ModelName
from ollama_torch.registry import Transfers, blocking_pull
from ollama_torch.store import Manifest, ModelStore
from tests.registry_fixtures import (
    OPTIONS,
    PART,
    SIZES,
    Registry,
    assert_same_model,
    blobs_of,
    local,
    make_synthetic_model,
    registry,
    run,
    running_proxy,
    serving,
    source,
    statuses,
)

__all__ = ["local", "registry", "source"]  # fixtures, imported for pytest


def test_push_then_pull_round_trip_in_ranged_parts(
    registry: Registry, source: ModelStore, local: ModelStore
) -> None:
    name = f"{registry.host}/library/roundtrip:latest"
    raw = make_synthetic_model(source, name, SIZES, seed=1)

    async def go() -> None:
        async with serving(source) as api:
            status, lines = await api.post("/api/push", {"model": name, "insecure": True})
        assert status == 200, lines
        assert statuses(lines)[0] == "retrieving manifest"
        assert statuses(lines)[-2:] == ["pushing manifest", "success"]
        for digest in blobs_of(raw):
            pushed = [line for line in lines if line.get("digest") == digest]
            assert pushed and pushed[-1]["total"] == pushed[-1].get("completed", 0) == source.blobs.size(
                digest
            )
            assert pushed[-1]["status"] == f"pushing {digest[7:19]}"

        with running_proxy(registry.url) as proxy:
            pulled = f"{proxy.host}/library/roundtrip:latest"
            async with serving(local) as api:
                status, lines = await api.post("/api/pull", {"model": pulled, "insecure": True})
            assert status == 200 and statuses(lines)[-1] == "success", lines
            big = blobs_of(raw)[0]
            ranges = proxy.blob_gets(big)
            assert len(ranges) >= SIZES[0] // PART, ranges  # one ranged GET per part (+ the probe)
            assert f"bytes={PART}-{2 * PART - 1}" in ranges
        assert statuses(lines)[0] == "pulling manifest"
        assert statuses(lines)[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
        progress = [line for line in lines if line.get("digest") == big]
        assert all("completed" not in line or line["completed"] > 0 for line in progress)
        assert progress[-1] == {
            "status": f"pulling {big[7:19]}",
            "digest": big,
            "total": SIZES[0],
            "completed": SIZES[0],
        }
        assert_same_model(source, local, name, pulled)

    run(go)


def test_second_push_skips_blobs_already_there(registry: Registry, source: ModelStore) -> None:
    async def go() -> None:
        with running_proxy(registry.url) as proxy:
            name = f"{proxy.host}/library/twice:latest"
            raw = make_synthetic_model(source, name, SIZES, seed=2)
            async with serving(source) as api:
                assert (await api.post("/api/push", {"model": name, "insecure": True}))[0] == 200
                proxy.reset()
                status, lines = await api.post("/api/push", {"model": name, "insecure": True, "stream": True})
            assert status == 200 and statuses(lines)[-1] == "success"
            for digest in blobs_of(raw):
                seen = [line for line in lines if line.get("digest") == digest]
                assert len(seen) == 1 and seen[0].get("completed", 0) == seen[0]["total"], seen
            assert not [r for r in proxy.requests if r[0] in ("POST", "PATCH")], proxy.requests

    run(go)


@pytest.mark.parametrize("stream", [True, False])
def test_pull_of_a_missing_model(registry: Registry, local: ModelStore, stream: bool) -> None:
    async def go() -> None:
        async with serving(local) as api:
            body = {"model": f"{registry.host}/library/nope:latest", "insecure": True, "stream": stream}
            status, lines = await api.post("/api/pull", body)
        error = {"error": "pull model manifest: file does not exist"}
        if stream:
            assert (status, lines) == (200, [{"status": "pulling manifest"}, error])
        else:
            assert (status, lines) == (500, [error])
        assert local.list() == []

    run(go)


def test_http_scheme_needs_insecure(registry: Registry, source: ModelStore) -> None:
    name = f"http://{registry.host}/library/plain:latest"
    make_synthetic_model(source, name, (10,), seed=8)

    async def go() -> None:
        async with serving(source) as api:
            assert await api.post("/api/pull", {"model": name}) == (
                500,
                [{"error": "insecure protocol http"}],
            )
            status, lines = await api.post("/api/push", {"model": name})
            assert (status, lines) == (
                200,
                [{"status": "retrieving manifest"}, {"error": "insecure protocol http"}],
            )
            status, lines = await api.post("/api/push", {"model": name, "insecure": True, "stream": False})
            assert (status, lines) == (200, [{"status": "success"}])
            status, lines = await api.post("/api/pull", {"model": name, "insecure": True, "stream": False})
            assert (status, lines) == (200, [{"status": "success"}])

    run(go)


def test_plain_http_registry_without_insecure_fails_fast(registry: Registry, local: ModelStore) -> None:
    async def go() -> None:
        async with serving(local) as api:
            body = {"model": f"{registry.host}/library/tls:latest", "stream": False}
            status, lines = await api.post("/api/pull", body)
        assert status == 500 and lines[0]["error"].startswith("pull model manifest: GET https://")
        assert lines[0]["error"].endswith("(a plain-http registry needs insecure: true)")

    run(go)


def test_layers_with_from_are_mounted(registry: Registry, source: ModelStore) -> None:
    async def go() -> None:
        with running_proxy(registry.url) as proxy:
            base = f"{proxy.host}/library/base:latest"
            raw = make_synthetic_model(source, base, SIZES, seed=10)
            async with serving(source) as api:
                assert (await api.post("/api/push", {"model": base, "insecure": True}))[0] == 200
                manifest = Manifest.from_bytes(raw)
                derived = f"{proxy.host}/library/derived:latest"
                layers = tuple(replace(layer, from_=base) for layer in manifest.layers)
                source.write_manifest(ModelName.parse(derived), replace(manifest, layers=layers))
                proxy.reset()
                status, lines = await api.post("/api/push", {"model": derived, "insecure": True})
            assert status == 200 and statuses(lines)[-1] == "success", lines
            mounts = [path for method, path, _ in proxy.requests if method == "POST" and "mount=" in path]
            assert len(mounts) == len(layers) and all(
                parse_qs(urlsplit(path).query)["from"] == ["library/base"] for path in mounts
            )
            patches = [r for r in proxy.requests if r[0] == "PATCH"]
            assert len(patches) == 1, proxy.requests  # only the config, which has no "from", is uploaded
            for layer in layers:  # mounted layers report as complete
                assert [line for line in lines if line.get("digest") == layer.digest][-1].get(
                    "completed", 0
                ) == layer.size

    run(go)


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/api/pull", {"model": ""}, (400, [{"error": "invalid model name"}])),
        ("/api/pull", {"model": "a/b/c/d:e:f"}, (400, [{"error": "invalid model name"}])),
        ("/api/pull", {"model": 3}, (400, [{"error": "json: cannot unmarshal number into Go struct field PullRequest.model of type string"}])),
        ("/api/push", {"model": ""}, (400, [{"error": "model is required"}])),
        ("/api/push", {"name": "nothere"}, (404, [{"error": "model 'nothere' not found"}])),
        ("/api/push", {"model": "x", "insecure": "yes"}, (400, [{"error": "json: cannot unmarshal string into Go struct field PushRequest.insecure of type bool"}])),
    ],
)  # fmt: skip
def test_validation_before_streaming(
    local: ModelStore, path: str, body: dict[str, Any], expected: Any
) -> None:
    async def go() -> None:
        async with serving(local) as api:
            assert await api.post(path, body) == expected

    run(go)


def test_pulling_a_newer_manifest_removes_unused_layers(
    registry: Registry, tmp_path: Path, local: ModelStore
) -> None:
    name = f"{registry.host}/library/updated:latest"
    v1, v2 = ModelStore(tmp_path / "v1"), ModelStore(tmp_path / "v2")
    raw1 = make_synthetic_model(v1, name, (5000, 10), seed=20)
    make_synthetic_model(v2, name, (6000, 10), seed=21)

    async def go() -> None:
        for source_store in (v1, v2):
            async with serving(source_store) as api:
                assert (await api.post("/api/push", {"model": name, "insecure": True}))[0] == 200
            async with serving(local) as api:
                status, lines = await api.post("/api/pull", {"model": name, "insecure": True})
            assert status == 200 and statuses(lines)[-1] == "success", lines
            assert_same_model(source_store, local, name)
        assert "removing unused layers" in statuses(lines)
        assert not local.blobs.exists(blobs_of(raw1)[0])

    run(go)


def test_blocking_pull_for_create_from(registry: Registry, source: ModelStore, local: ModelStore) -> None:
    """``blocking_pull`` is what create's ``FROM <model not stored>`` calls from its worker thread."""
    name = f"{registry.host}/library/fromcreate:latest"
    make_synthetic_model(source, name, SIZES, seed=22)

    async def go() -> None:
        async with serving(source) as api:
            assert (await api.post("/api/push", {"model": name, "insecure": True}))[0] == 200
        pull = blocking_pull(asyncio.get_running_loop(), local, Transfers(OPTIONS), create=create_model, insecure=True)
        lines: list[dict[str, Any]] = []
        await asyncio.to_thread(pull, ModelName.parse(name), lines.append)
        assert statuses(lines)[-1] == "success"
        assert_same_model(source, local, name)

    run(go)
