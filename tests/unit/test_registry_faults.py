"""Pulls that go wrong: a client that leaves, a registry that fails or drops connections, a corrupt
blob, concurrent pulls of one blob, bearer-token auth. Pulls resume from Ollama's partial files."""

from __future__ import annotations

import asyncio
import json
import os
import time

from ollama_torch.names import ModelName
from ollama_torch.registry import TransferOptions
from ollama_torch.store import Manifest, ModelStore
from tests.registry_fixtures import (
    OPTIONS,
    PART,
    SIZES,
    Registry,
    assert_same_model,
    blobs_of,
    free_port,
    local,
    make_synthetic_model,
    partial_state,
    registry,
    run,
    running_proxy,
    serving,
    sha256,
    source,
    statuses,
)

__all__ = ["local", "registry", "source"]  # fixtures, imported for pytest


def test_pull_resumes_after_the_client_goes_away(
    registry: Registry, source: ModelStore, local: ModelStore
) -> None:
    async def go() -> None:
        with running_proxy(registry.url) as proxy:
            name = f"{proxy.host}/library/resume:latest"
            raw = make_synthetic_model(source, name, SIZES, seed=3)
            big = blobs_of(raw)[0]
            async with serving(source) as api:
                assert (await api.post("/api/push", {"model": name, "insecure": True}))[0] == 200
            proxy.reset()
            proxy.throttle = 0.05
            async with serving(local) as api:
                async with api.session.post(
                    api.base + "/api/pull", json={"model": name, "insecure": True}
                ) as resp:
                    async for raw_line in resp.content:
                        line = json.loads(raw_line)
                        if line.get("digest") == big and line.get("completed", 0) >= 3 * PART:
                            break
                    resp.close()
                await api.idle()
                exists, saved = partial_state(local, big)
                assert exists and 3 * PART <= saved < SIZES[0]
                assert not local.blobs.exists(big) and not local.exists(ModelName.parse(name))

                proxy.reset()
                status, lines = await api.post("/api/pull", {"model": name, "insecure": True})
            assert status == 200 and statuses(lines)[-1] == "success", lines
            assert (
                proxy.blob_bytes <= Manifest.from_bytes(raw).size - saved + 16
            )  # only what was missing (+ 1-byte probes)
            assert partial_state(local, big) == (False, 0)
            assert_same_model(source, local, name, name)

    run(go)


def test_pull_resumes_after_a_failed_pull(registry: Registry, source: ModelStore, local: ModelStore) -> None:
    async def go() -> None:
        with running_proxy(registry.url) as proxy:
            name = f"{proxy.host}/library/failed:latest"
            raw = make_synthetic_model(source, name, SIZES, seed=4)
            big = blobs_of(raw)[0]
            async with serving(source) as api:
                assert (await api.post("/api/push", {"model": name, "insecure": True}))[0] == 200
            proxy.reset()
            proxy.drop_after, proxy.fail_blobs_after_drop = 250_000, True
            async with serving(local) as api:
                status, lines = await api.post("/api/pull", {"model": name, "insecure": True})
                assert status == 200 and "503" in lines[-1]["error"], lines
                await api.idle()
                exists, saved = partial_state(local, big)
                assert exists and 0 < saved < SIZES[0]
                assert not local.blobs.exists(big) and not local.exists(ModelName.parse(name))
                proxy.reset()
                status, lines = await api.post("/api/pull", {"model": name, "insecure": True})
            assert statuses(lines)[-1] == "success", lines
            assert proxy.blob_bytes <= Manifest.from_bytes(raw).size - saved + 16
            assert_same_model(source, local, name, name)

    run(go)


def test_dropped_connection_is_retried_within_the_pull(
    registry: Registry, source: ModelStore, local: ModelStore
) -> None:
    async def go() -> None:
        with running_proxy(registry.url) as proxy:
            name = f"{proxy.host}/library/dropped:latest"
            raw = make_synthetic_model(source, name, SIZES, seed=5)
            async with serving(source) as api:
                assert (await api.post("/api/push", {"model": name, "insecure": True}))[0] == 200
            proxy.reset()
            proxy.drop_after = 100_000  # inside the second part: it resumes mid-part, not from its start
            proxy.fail_next = [503, 502]  # and the manifest request fails twice first
            async with serving(local) as api:
                status, lines = await api.post("/api/pull", {"model": name, "insecure": True})
            assert status == 200 and statuses(lines)[-1] == "success", lines
            ranges = proxy.blob_gets(blobs_of(raw)[0])
            starts = {int(r.split("=")[1].split("-")[0]) for r in ranges if r}
            assert any(s % PART for s in starts), ranges
            assert proxy.blob_bytes <= Manifest.from_bytes(raw).size + 16
            assert_same_model(source, local, name, name)

    run(go)


def test_concurrent_pulls_share_one_download(
    registry: Registry, source: ModelStore, local: ModelStore
) -> None:
    async def go() -> None:
        with running_proxy(registry.url) as proxy:
            name = f"{proxy.host}/library/shared:latest"
            raw = make_synthetic_model(source, name, SIZES, seed=6)
            async with serving(source) as api:
                assert (await api.post("/api/push", {"model": name, "insecure": True}))[0] == 200
            proxy.reset()
            proxy.throttle = 0.002
            async with serving(local) as api:
                body = {"model": name, "insecure": True, "stream": False}
                results = await asyncio.gather(api.post("/api/pull", body), api.post("/api/pull", body))
            assert results == [(200, [{"status": "success"}])] * 2
            assert proxy.blob_bytes <= Manifest.from_bytes(raw).size + 16
            assert_same_model(source, local, name, name)

    run(go)


def test_corrupt_blob_on_the_registry_fails_verification(
    registry: Registry, source: ModelStore, local: ModelStore
) -> None:
    name = f"{registry.host}/library/corrupt:latest"
    raw = make_synthetic_model(source, name, SIZES, seed=7)
    big = blobs_of(raw)[0]

    async def go() -> None:
        async with serving(source) as api:
            assert (await api.post("/api/push", {"model": name, "insecure": True}))[0] == 200
        bad = os.urandom(SIZES[0])
        registry.blob_data_path(big).write_bytes(bad)
        async with serving(local) as api:
            status, lines = await api.post("/api/pull", {"model": name, "insecure": True})
            await api.idle()
        assert status == 200
        assert lines[-1] == {
            "error": f"digest mismatch, file must be downloaded again: want {big}, got {sha256(bad)}"
        }
        assert "verifying sha256 digest" in statuses(lines) and "writing manifest" not in statuses(lines)
        assert not local.exists(ModelName.parse(name))
        assert not local.blobs.exists(big)
        assert partial_state(local, big) == (False, 0)

    run(go)


def test_bearer_token_flow(registry: Registry, source: ModelStore, local: ModelStore) -> None:
    async def go() -> None:
        with running_proxy(registry.url, token="s3cret") as proxy:
            name = f"{proxy.host}/library/authed:latest"
            make_synthetic_model(source, name, SIZES, seed=9)
            async with serving(source) as api:
                assert (await api.post("/api/push", {"model": name, "insecure": True, "stream": False}))[
                    0
                ] == 200
            async with serving(local) as api:
                assert (await api.post("/api/pull", {"model": name, "insecure": True, "stream": False}))[
                    0
                ] == 200
            assert any(
                path.startswith("/token?") and "service=test-registry" in path
                for _, path, _ in proxy.requests
            )
            assert_same_model(source, local, name, name)

            proxy.deny_token, proxy.token = True, "other"
            async with serving(local) as api:
                status, lines = await api.post(
                    "/api/pull", {"model": name, "insecure": True, "stream": False}
                )
            assert (status, lines) == (500, [{"error": "pull model manifest: unauthorized: access denied"}])

    run(go)


def test_persistent_server_errors_give_up_with_the_status(registry: Registry, local: ModelStore) -> None:
    async def go() -> None:
        with running_proxy(registry.url) as proxy:
            proxy.fail_next = [503] * 10
            async with serving(local) as api:
                body = {"model": f"{proxy.host}/library/down:latest", "insecure": True, "stream": False}
                status, lines = await api.post("/api/pull", body)
            assert (status, lines) == (500, [{"error": "pull model manifest: 503: injected failure"}])
            assert len(proxy.requests) == OPTIONS.max_retries + 1

    run(go)


def test_unresolvable_host_fails_within_seconds(local: ModelStore) -> None:
    """A host that does not resolve is not retried (was: 6 retries with backoff, 20-60 s), and the error is
    Ollama's: ``pull model manifest: Get "<url>": dial tcp: lookup <host>: no such host``. Ollama's default
    transfer options: the retry policy that used to wait is the one under test."""

    async def go() -> None:
        async with serving(local, TransferOptions()) as api:
            started = time.monotonic()
            status, lines = await api.post("/api/pull", {"model": "nosuchhost.invalid/x/y", "stream": False})
            elapsed = time.monotonic() - started
            streamed = (await api.post("/api/pull", {"model": "nosuchhost.invalid/x/y"}))[1]
        print(f"unresolvable host: failed in {elapsed:.2f}s")
        url = "https://nosuchhost.invalid/v2/x/y/manifests/latest"
        assert status == 500 and len(lines) == 1, lines
        # "no such host" wherever DNS answers; a resolver that cannot be reached says why instead
        assert lines[0]["error"].startswith(f'pull model manifest: Get "{url}": dial tcp: lookup nosuchhost.invalid: ')
        assert elapsed < 5, elapsed
        assert [line.get("status") for line in streamed[:-1]] == ["pulling manifest"]
        assert streamed[-1] == lines[0]
        assert not local.list() and not list(local.root.rglob("*-partial*"))

    run(go)


def test_refused_connection_fails_within_seconds(local: ModelStore) -> None:
    async def go() -> None:
        port = free_port()  # nothing listens there
        async with serving(local, TransferOptions()) as api:
            started = time.monotonic()
            body = {"model": f"127.0.0.1:{port}/x/y", "insecure": True, "stream": False}
            status, lines = await api.post("/api/pull", body)
            elapsed = time.monotonic() - started
        print(f"refused connection: failed in {elapsed:.2f}s")
        url = f"http://127.0.0.1:{port}/v2/x/y/manifests/latest"
        error = f'pull model manifest: Get "{url}": dial tcp 127.0.0.1:{port}: connect: connection refused'
        assert (status, lines) == (500, [{"error": error}])
        assert elapsed < 5, elapsed

    run(go)
