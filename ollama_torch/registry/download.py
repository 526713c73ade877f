"""Resumable, parallel blob downloads in Ollama's on-disk shape (``server/download.go``).

A blob is fetched into ``blobs/sha256-<hex>-partial`` (pre-sized to the blob's length) in ranged parts
fetched concurrently; each part's progress lives in ``sha256-<hex>-partial-<N>`` as Ollama's JSON
(``{"N","Offset","Size","Completed"}``), so a pull that was cancelled, crashed or killed continues from
the bytes it has, and an Ollama sharing the directory can continue ours. Part records are replaced
atomically and claim only bytes already written (and, at periodic checkpoints, synced).

Nothing reaches the final ``sha256-<hex>`` name before ``Transfers.commit`` re-hashed it: a mismatch
deletes the partial and fails with Ollama's ``digest mismatch, file must be downloaded again``.

``Transfers`` (one per app) shares a download between concurrent pulls of the same blob and serialises
preparing and committing it with a per-blob lock; the download is cancelled when its last waiter leaves.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..names import ModelName
from ..store import BlobStore
from ..store.blobs import CHUNK, _fsync_dir
from .client import (
    RegistryClient,
    RegistryError,
    TransferOptions,
    backoff_delay,
    describe_exception,
)
from .progress import progress_line, watch

log = logging.getLogger(__name__)

REDIRECTS = (301, 302, 303, 307, 308)


class DigestMismatch(RegistryError):
    def __init__(self, want: str, got: str) -> None:
        super().__init__(f"digest mismatch, file must be downloaded again: want {want}, got {got}")


@dataclass
class Part:
    n: int
    offset: int
    size: int
    completed: int = 0

    @property
    def start(self) -> int:
        return self.offset + self.completed

    @property
    def stop(self) -> int:
        return self.offset + self.size

    @property
    def done(self) -> bool:
        return self.completed >= self.size

    def to_json(self) -> bytes:
        record = {"N": self.n, "Offset": self.offset, "Size": self.size, "Completed": self.completed}
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> Part:
        data = json.loads(raw)
        part = cls(int(data["N"]), int(data["Offset"]), int(data["Size"]), int(data.get("Completed", 0)))
        if part.n < 0 or part.offset < 0 or part.size < 0 or not 0 <= part.completed <= part.size:
            raise ValueError(f"invalid part record {data}")
        return part


def partial_path(blobs: BlobStore, digest: str) -> Path:
    final = blobs.path(digest)
    return final.with_name(final.name + "-partial")


@dataclass
class BlobDownload:
    blobs: BlobStore
    digest: str
    options: TransferOptions
    total: int = -1  # unknown until prepared
    parts: list[Part] = field(default_factory=list)

    @property
    def partial(self) -> Path:
        return partial_path(self.blobs, self.digest)

    @property
    def completed(self) -> int:
        return sum(p.completed for p in self.parts)

    def counts(self) -> tuple[int, int] | None:
        return None if self.total < 0 else (self.total, self.completed)

    def part_file(self, n: int) -> Path:
        return self.partial.with_name(f"{self.partial.name}-{n}")

    def part_files(self) -> list[Path]:
        prefix = self.partial.name + "-"
        if not self.blobs.root.is_dir():
            return []
        return [
            p
            for p in self.blobs.root.iterdir()
            if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit()
        ]

    # -- state on disk ---------------------------------------------------------------------------------
    def load(self) -> bool:
        """Adopt the part records on disk; ``False`` (and a clean slate) when there are none or they are
        inconsistent (gaps, overlaps, a data file of another length)."""
        files = self.part_files()
        if not files:
            return False
        try:
            parts = sorted((Part.from_json(p.read_bytes()) for p in files), key=lambda p: p.offset)
            offset = 0
            for i, part in enumerate(parts):
                if part.n != i or part.offset != offset:
                    raise ValueError("part records do not tile the blob")
                offset += part.size
            if self.partial.stat().st_size != offset:
                raise ValueError("partial file has the wrong size")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("discarding partial download of %s: %s", self.digest, exc)
            self.discard()
            return False
        self.parts, self.total = parts, offset
        return True

    def create(self, total: int) -> None:
        self.discard()
        size = max(self.options.part_size(total), 1)
        self.parts = [
            Part(n, offset, min(size, total - offset)) for n, offset in enumerate(range(0, total, size))
        ]
        if not self.parts:
            self.parts = [Part(0, 0, 0)]  # an empty blob: one empty part keeps the records uniform
        self.total = total
        self.blobs.root.mkdir(parents=True, exist_ok=True)
        with open(self.partial, "wb") as f:
            f.truncate(total)  # sparse where the file system allows
        for part in self.parts:
            self.save(part)

    def save(self, part: Part) -> None:
        path = self.part_file(part.n)
        tmp = path.with_name(f".{path.name}.tmp")  # never matches Ollama's "-partial-*" glob
        tmp.write_bytes(part.to_json())
        os.replace(tmp, path)

    def discard(self) -> None:
        for path in self.part_files():
            path.unlink(missing_ok=True)
        self.partial.unlink(missing_ok=True)
        self.parts, self.total = [], -1

    def mark_present(self) -> None:
        size = self.blobs.size(self.digest)
        self.parts, self.total = [Part(0, 0, size, size)], size

    # -- network ---------------------------------------------------------------------------------------
    async def prepare(self, client: RegistryClient) -> None:
        if self.load():
            return
        async with client.open("HEAD", client.blob_url(self.digest)) as resp:
            length = resp.headers.get("Content-Length", "")
        if not length.isdigit():
            raise RegistryError(f"registry did not report the size of {self.digest}")
        self.create(int(length))
        if self.parts:
            log.info(
                "downloading %s in %d part(s) of %d bytes",
                self.digest[7:19],
                len(self.parts),
                self.parts[0].size,
            )

    async def fetch(self, client: RegistryClient) -> None:
        pending = [p for p in self.parts if not p.done]
        if not pending:
            return
        url, auth = await self._direct_url(client)
        fd = os.open(self.partial, os.O_RDWR)
        gate = asyncio.Semaphore(max(self.options.num_parts, 1))
        tasks = [asyncio.create_task(self._fetch_part(client, url, auth, fd, part, gate)) for part in pending]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            os.close(fd)

    async def _direct_url(self, client: RegistryClient) -> tuple[str, bool]:
        """Follow same-host redirects of the blob URL; the first other-host target (a CDN) is fetched
        without our token, as Ollama does. ``Range: bytes=0-0`` keeps the probe to one byte."""
        url = client.blob_url(self.digest)
        host = urlsplit(url).hostname
        for _ in range(10):
            async with client.open("GET", url, headers={"Range": "bytes=0-0"}, allow_redirects=False) as resp:
                if resp.status not in REDIRECTS:
                    return url, True
                target = client.resolve(resp.headers.get("Location", ""), url)
            if urlsplit(target).hostname != host:
                return target, False
            url = target
        raise RegistryError("maximum redirects exceeded (10) for directURL")

    async def _fetch_part(
        self, client: RegistryClient, url: str, auth: bool, fd: int, part: Part, gate: asyncio.Semaphore
    ) -> None:
        async with gate:
            attempt = 0
            while not part.done:
                before = part.completed
                try:
                    await self._fetch_range(client, url, auth, fd, part)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.save(part)
                    if part.completed > before:
                        attempt = 0  # progress was made: a flaky connection, not a dead one
                    if attempt >= self.options.max_retries:
                        raise RegistryError(f"max retries exceeded: {describe_exception(exc)}") from exc
                    delay = backoff_delay(self.options, attempt)
                    log.info(
                        "%s part %d attempt %d failed: %s, retrying in %.2fs",
                        self.digest[7:19],
                        part.n,
                        attempt,
                        describe_exception(exc),
                        delay,
                    )
                    attempt += 1
                    await asyncio.sleep(delay)
                except BaseException:
                    self.save(part)  # cancelled or failed: keep what was written for the next pull
                    raise
            self.save(part)

    async def _fetch_range(self, client: RegistryClient, url: str, auth: bool, fd: int, part: Part) -> None:
        headers = {"Range": f"bytes={part.start}-{part.stop - 1}"}
        async with client.open("GET", url, headers=headers, auth=auth) as resp:
            skip = part.start if resp.status == 200 else 0  # the server ignored Range: skip to ours
            if resp.status not in (200, 206):
                raise RegistryError(f"unexpected status {resp.status} for {self.digest}")
            last_checkpoint = time.monotonic()
            async for chunk in resp.content.iter_chunked(self.options.chunk_size):
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                chunk = chunk[: part.stop - part.start]
                if chunk:
                    os.pwrite(fd, chunk, part.start)
                    part.completed += len(chunk)
                if part.done:
                    break
                if time.monotonic() - last_checkpoint >= self.options.checkpoint_interval:
                    await asyncio.to_thread(os.fdatasync, fd)
                    self.save(part)
                    last_checkpoint = time.monotonic()
        if not part.done:
            raise aiohttp.ClientPayloadError(f"connection closed at byte {part.start} of {part.stop}")


@dataclass
class _Shared:
    download: BlobDownload
    task: asyncio.Task[None]
    waiters: int = 0


class Transfers:
    """In-flight downloads of one server, keyed by blob path, and the per-blob locks."""

    def __init__(self, options: TransferOptions | None = None) -> None:
        self.options = options or TransferOptions()
        self._downloads: dict[Path, _Shared] = {}
        self._locks: weakref.WeakValueDictionary[Path, asyncio.Lock] = weakref.WeakValueDictionary()

    def active(self) -> list[str]:
        """Digests being downloaded right now (including downloads still saving their parts)."""
        return [shared.download.digest for shared in self._downloads.values()]

    def lock(self, path: Path) -> asyncio.Lock:
        lock = self._locks.get(path)
        if lock is None:
            lock = self._locks[path] = asyncio.Lock()
        return lock

    async def download(
        self, name: ModelName, insecure: bool, token: str, blobs: BlobStore, digest: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Fetch ``digest`` into its partial file (joining a download already running), yielding progress."""
        key = blobs.path(digest)
        shared = self._downloads.get(key)
        while shared is not None and shared.waiters == 0:  # being cancelled: let it save its parts first
            await asyncio.wait({shared.task})
            shared = self._downloads.get(key)
        if shared is None:
            dl = BlobDownload(blobs, digest, self.options)
            task = asyncio.create_task(self._run(dl, name, insecure, token))
            shared = self._downloads[key] = _Shared(dl, task)
            task.add_done_callback(functools.partial(self._finished, key, shared))
        shared.waiters += 1
        try:
            dl = shared.download
            async for line in watch(
                shared.task,
                dl.counts,
                lambda t, c: progress_line("pulling", digest, t, c),
                self.options.progress_interval,
            ):
                yield line
        finally:
            shared.waiters -= 1
            if shared.waiters == 0 and not shared.task.done():
                shared.task.cancel()

    def _finished(self, key: Path, shared: _Shared, _task: object) -> None:
        if self._downloads.get(key) is shared:
            del self._downloads[key]
        if not shared.task.cancelled():
            shared.task.exception()  # retrieved: waiters re-raise it; no "never retrieved" warning

    async def _run(self, dl: BlobDownload, name: ModelName, insecure: bool, token: str) -> None:
        async with RegistryClient(name, insecure=insecure, options=self.options) as client:
            client.token = token
            async with self.lock(dl.blobs.path(dl.digest)):
                if dl.blobs.exists(dl.digest):
                    dl.mark_present()
                    return
                await dl.prepare(client)
            await dl.fetch(client)

    async def commit(self, blobs: BlobStore, digest: str) -> None:
        """Verify a downloaded partial against its digest and rename it into place (fsynced first)."""
        final = blobs.path(digest)
        async with self.lock(final):
            if final.is_file():
                return  # a concurrent pull verified it
            dl = BlobDownload(blobs, digest, self.options)
            if not dl.load() or not all(p.done for p in dl.parts):
                raise RegistryError(f"download of {digest} did not complete; pull again")
            got = await asyncio.to_thread(_hash_and_sync, dl.partial)
            if got != digest:
                dl.discard()
                raise DigestMismatch(digest, got)
            os.replace(dl.partial, final)
            _fsync_dir(blobs.root)
            for path in dl.part_files():
                path.unlink(missing_ok=True)


def _hash_and_sync(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb+") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
        os.fsync(f.fileno())
    return "sha256:" + h.hexdigest()
