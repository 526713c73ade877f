"""``pull``: a model from an OCI registry into the store, as Ollama's ``PullModel`` does it.

``pulling manifest`` -> one progress stream per layer and the config (a blob already stored is one line
with ``completed == total``) -> ``verifying sha256 digest`` (only blobs downloaded now are re-hashed)
-> ``writing manifest`` (the registry's bytes, unchanged, so the local digest is the registry's) ->
``removing unused layers`` when an older manifest of the same name left blobs behind -> ``success``.

Every blob of the manifest is pinned (``ModelStore.pinning``) from before it is found stored or committed
until the manifest is written, so a concurrent delete of another model sharing it, or a prune, cannot
collect it in between. A failed pull writes no manifest and leaves nothing under a final digest that was not verified; its
partial downloads stay so that pulling again continues where this one stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from ..create import CreateModel
from ..errors import BadRequest
from ..names import ModelName
from ..store import Manifest, ModelStore, parse_digest
from ..store.manifest import MANIFEST_MEDIA_TYPE
from .client import InsecureProtocol, RegistryClient, RegistryError
from .download import Transfers
from .progress import progress_line

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPE


async def fetch_manifest(client: RegistryClient) -> tuple[Manifest, bytes]:
    """GET the manifest; errors read ``pull model manifest: <reason>`` as Ollama's do."""
    try:
        async with client.open("GET", client.manifest_url(), headers={"Accept": MANIFEST_ACCEPT}) as resp:
            raw = await resp.read()
        manifest = Manifest.from_bytes(raw)
        for layer in (*manifest.layers, *([manifest.config] if manifest.config.digest else [])):
            parse_digest(layer.digest)
    except (RegistryError, BadRequest) as exc:
        raise RegistryError(f"pull model manifest: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise RegistryError(f"pull model manifest: {exc}") from exc
    return manifest, raw


async def pull_model(
    store: ModelStore, name: ModelName, *, insecure: bool, transfers: Transfers, prune: bool = True
) -> AsyncGenerator[dict[str, Any]]:
    """Pull ``name`` (fully qualified; its ``scheme`` picks http or https) and yield Ollama's status lines."""
    if name.scheme == "http" and not insecure:
        raise InsecureProtocol()
    old_digests: set[str] = set()
    if store.exists(name):
        try:
            old_digests = store.read_manifest(name)[1].digests()
        except BadRequest as exc:
            log.warning("pulling %s over an unreadable manifest: %s", name, exc)

    yield {"status": "pulling manifest"}
    with store.pinning() as pins:
        async with RegistryClient(name, insecure=insecure, options=transfers.options) as client:
            manifest, raw = await fetch_manifest(client)
            # before any blob is found stored or committed; held until the manifest references them
            pins.add(*manifest.digests())
            layers = [*manifest.layers, *([manifest.config] if manifest.config.digest else [])]
            downloaded: list[str] = []
            for layer in layers:
                digest = parse_digest(layer.digest)
                if digest not in downloaded and store.blobs.exists(digest):
                    size = store.blobs.size(digest)
                    yield progress_line("pulling", digest, size, size)
                    continue
                if digest in downloaded:
                    continue
                downloaded.append(digest)
                async for line in transfers.download(name, insecure, client.token, store.blobs, digest):
                    yield line

        yield {"status": "verifying sha256 digest"}
        for digest in downloaded:
            await transfers.commit(store.blobs, digest)

        yield {"status": "writing manifest"}
        await asyncio.to_thread(store.write_manifest_bytes, name, raw, prune)
    if prune and old_digests - manifest.digests():
        yield {"status": "removing unused layers"}
    yield {"status": "success"}


Emit = Callable[[dict[str, Any]], None]


def blocking_pull(
    loop: asyncio.AbstractEventLoop,
    store: ModelStore,
    transfers: Transfers,
    *,
    create: CreateModel,
    insecure: bool = False,
    prune: bool = True,
) -> Callable[[ModelName, Emit], None]:
    """A pull callable for worker threads (create's ``FROM <model not stored yet>``): runs ``pull_model``
    on the server's event loop and forwards each status line to ``emit``; a Hugging Face name is pulled
    and then created with ``create``. Ollama's create pulls with default options, so ``insecure`` stays
    off outside tests."""

    def pull(name: ModelName, emit: Emit) -> None:
        from .hf import parse_hf_name, pull_hf

        if parse_hf_name(name) is not None:
            pull_hf(store, name, emit, create=create, noprune=not prune)
            return

        async def run() -> None:
            events = pull_model(store, name, insecure=insecure, transfers=transfers, prune=prune)
            try:
                async for line in events:
                    emit(line)
            finally:
                await events.aclose()

        asyncio.run_coroutine_threadsafe(run(), loop).result()

    return pull
