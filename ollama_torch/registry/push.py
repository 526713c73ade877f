"""``push``: a stored model to an OCI registry, as Ollama's ``PushModel`` does it.

``retrieving manifest`` -> per layer and config: ``HEAD`` the blob (present: one line with
``completed == total``), else start an upload (``POST .../blobs/uploads/``, with ``mount``/``from`` for
a layer reused from another model; 201 means mounted), send it in ``PATCH`` chunks with
``Content-Range`` and finish with ``PUT <location>?digest=`` -> ``pushing manifest`` (the local manifest
bytes, unchanged) -> ``success``.

The model's blobs are pinned (``ModelStore.pinning``) while they are read, so deleting the model (or
another sharing a layer) meanwhile removes them only once the push is done.

A chunk that fails is resumed from the offset the registry reports for the upload session
(``GET <location>`` -> ``Range: 0-<last>``); if the session is gone, the upload starts over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from ..names import ModelName
from ..store import BlobStore, Layer, ModelStore
from ..store.manifest import MANIFEST_MEDIA_TYPE
from .client import (
    InsecureProtocol,
    RegistryClient,
    RegistryError,
    RegistryNotFound,
    TransferOptions,
    backoff_delay,
    describe_exception,
    is_transient,
)
from .progress import progress_line, watch

log = logging.getLogger(__name__)


def _location(resp: aiohttp.ClientResponse, client: RegistryClient, base: str) -> str:
    location = resp.headers.get("Docker-Upload-Location") or resp.headers.get("Location")
    if not location:
        raise RegistryError(f"registry answered {resp.status} without an upload location")
    return client.resolve(location, base)


def _with_query(url: str, **params: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


def _resumable(exc: BaseException) -> bool:
    """Worth another try: no answer, a transient status, or a session the registry lost or disagrees on."""
    if not isinstance(exc, RegistryError):
        return True
    code = exc.http_status
    if code == 0:
        return isinstance(exc.__cause__, (aiohttp.ClientError, TimeoutError))
    return is_transient(code) or code in (404, 416)


class BlobUpload:
    """One blob's upload session, resumable chunk by chunk."""

    def __init__(
        self, client: RegistryClient, blobs: BlobStore, layer: Layer, options: TransferOptions
    ) -> None:
        self.client = client
        self.blobs = blobs
        self.layer = layer
        self.options = options
        self.total = blobs.size(layer.digest)
        self.completed = 0
        self.offset = 0  # bytes the registry has acknowledged
        self.location: str | None = None

    def counts(self) -> tuple[int, int]:
        return self.total, self.completed

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._upload()
                return
            except (RegistryError, aiohttp.ClientError, TimeoutError) as exc:
                if not _resumable(exc) or attempt >= self.options.max_retries:
                    if isinstance(exc, RegistryError):
                        raise
                    raise RegistryError(f"max retries exceeded: {describe_exception(exc)}") from exc
                delay = backoff_delay(self.options, attempt)
                log.info("upload of %s failed: %s, retrying in %.2fs", self.layer.digest[7:19], exc, delay)
                attempt += 1
                self.completed = self.offset
                await asyncio.sleep(delay)

    async def _upload(self) -> None:
        if self.location is not None:
            try:
                await self._resync()
            except RegistryError:
                self.location = None
        if self.location is None and await self._start():
            return
        assert self.location is not None
        part_size = self.options.part_size(self.total)
        while self.offset < self.total:
            size = min(part_size, self.total - self.offset)
            await self._patch(self.offset, size)
            self.offset += size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": "0"}
        url = _with_query(self.location, digest=self.layer.digest)
        async with self.client.open("PUT", url, headers=headers, body=b"", retry=False, patient=True):
            pass
        self.completed = self.total

    async def _start(self) -> bool:
        """POST a new upload session; ``True`` when the registry mounted the blob from ``from``."""
        url = self.client.url("blobs", "uploads") + "/"
        if self.layer.from_:
            source = ModelName.parse(self.layer.from_)
            url += "?" + urlencode({"mount": self.layer.digest, "from": source.namespace_model})
        async with self.client.open("POST", url, body=b"") as resp:
            if resp.status == 201:
                self.completed = self.offset = self.total
                return True
            self.location = _location(resp, self.client, url)
        self.offset = self.completed = 0
        return False

    async def _resync(self) -> None:
        """Ask the registry how much of the session it has: ``Range: 0-<last byte>``."""
        assert self.location is not None
        async with self.client.open("GET", self.location) as resp:
            _, _, end = resp.headers.get("Range", "0-0").partition("-")
            last = int(end) if end.isdigit() else 0
            self.location = _location(resp, self.client, self.location)
        # "0-0" means both "nothing" and "one byte"; resending from 0 is the safe reading.
        self.offset = self.completed = last + 1 if last > 0 else 0

    async def _patch(self, offset: int, size: int) -> None:
        assert self.location is not None
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "Content-Range": f"{offset}-{offset + size - 1}",
        }
        async with self.client.open(
            "PATCH",
            self.location,
            headers=headers,
            body=lambda: self._read(offset, size),
            retry=False,
            patient=True,
        ) as resp:
            self.location = _location(resp, self.client, self.location)

    async def _read(self, offset: int, size: int) -> AsyncIterator[bytes]:
        path = self.blobs.path(self.layer.digest)
        with open(path, "rb") as f:
            f.seek(offset)
            remaining = size
            while remaining:
                chunk = await asyncio.to_thread(f.read, min(self.options.chunk_size, remaining))
                if not chunk:
                    raise RegistryError(f"blob {self.layer.digest} is shorter than its manifest says")
                remaining -= len(chunk)
                self.completed += len(chunk)
                yield chunk


async def upload_blob(
    client: RegistryClient, blobs: BlobStore, layer: Layer, options: TransferOptions
) -> AsyncIterator[dict[str, Any]]:
    try:
        async with client.open("HEAD", client.blob_url(layer.digest)):
            present = True
    except RegistryNotFound:
        present = False
    if present:
        yield progress_line("pushing", layer.digest, layer.size, layer.size)
        return
    upload = BlobUpload(client, blobs, layer, options)
    task = asyncio.create_task(upload.run())
    try:
        async for line in watch(
            task,
            upload.counts,
            lambda t, c: progress_line("pushing", layer.digest, t, c),
            options.progress_interval,
        ):
            yield line
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def push_model(
    store: ModelStore, name: ModelName, *, insecure: bool, options: TransferOptions | None = None
) -> AsyncGenerator[dict[str, Any]]:
    """Push the stored model ``name`` to the registry its host names, yielding Ollama's status lines."""
    options = options or TransferOptions()
    yield {"status": "retrieving manifest"}
    if name.scheme == "http" and not insecure:
        raise InsecureProtocol()
    with store.pinning() as pins:
        with store.lock:  # read and pin at once: a delete of the model cannot fall in between
            _, manifest, raw = store.read_manifest(name)
            pins.add(*manifest.digests())
        layers = [*manifest.layers, *([manifest.config] if manifest.config.digest else [])]
        async with RegistryClient(name, insecure=insecure, options=options) as client:
            for layer in layers:
                async for line in upload_blob(client, store.blobs, layer, options):
                    yield line
            yield {"status": "pushing manifest"}
            headers = {"Content-Type": MANIFEST_MEDIA_TYPE}
            async with client.open("PUT", client.manifest_url(), headers=headers, body=raw):
                pass
    yield {"status": "success"}
