"""Content-addressed, write-once blobs: ``blobs/sha256-<hex>``.

A blob is written to a hidden temp file in the same directory while it is hashed, fsynced, and only then
renamed to its digest. A crash, an interrupted upload or a digest mismatch therefore never leaves a file
under a real digest, and a reader never sees half a blob.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO

from ..errors import BadRequest, NotFound

_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
_BLOB_NAME = re.compile(r"^sha256-[0-9a-f]{64}$")
TEMP_PREFIX = ".partial-"
CHUNK = 1 << 20


def parse_digest(text: str) -> str:
    """Canonical ``sha256:<lowercase hex>``, or a 400 ``invalid digest format`` before any path is built."""
    m = _DIGEST.match(text or "")
    if not m:
        raise BadRequest("invalid digest format")
    return "sha256:" + m.group(1).lower()


def blob_file(root: Path, digest: str) -> Path:
    """Where the blob ``digest`` lies under the blob directory ``root`` (``sha256-<hex>``, as Ollama names it)."""
    return root / parse_digest(digest).replace(":", "-", 1)


def is_blob_filename(name: str) -> bool:
    return bool(_BLOB_NAME.match(name))


class BlobWriter:
    """Write a blob incrementally; ``commit`` verifies the digest and renames it into place.

    Use as a context manager: leaving the block without ``commit`` (an exception, a dropped connection)
    deletes the temp file and stores nothing.
    """

    def __init__(self, store: BlobStore, expected: str | None = None) -> None:
        self._store = store
        self._expected = parse_digest(expected) if expected else None
        self._hash = hashlib.sha256()
        self.size = 0
        store.root.mkdir(parents=True, exist_ok=True)
        self._tmp = store.root / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        self._file: BinaryIO | None = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit/abort

    def write(self, data: bytes) -> None:
        assert self._file is not None, "write after commit/abort"
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> str:
        """Finish the blob and return its digest; 400 on a mismatch with the expected digest."""
        assert self._file is not None, "commit after commit/abort"
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        digest = "sha256:" + self._hash.hexdigest()
        if self._expected is not None and digest != self._expected:
            self._tmp.unlink(missing_ok=True)
            raise BadRequest(f'digest mismatch, expected "{self._expected}", got "{digest}"')
        final = self._store.path(digest)
        os.replace(self._tmp, final)
        _fsync_dir(self._store.root)
        return digest

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class BlobStore:
    """The ``blobs/`` directory. Digests are validated by ``parse_digest`` before becoming paths."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return blob_file(self.root, digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f'blob "{parse_digest(digest)}" not found') from None

    def read_bytes(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def writer(self, expected: str | None = None) -> BlobWriter:
        return BlobWriter(self, expected)

    def write_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.exists(digest):
            return digest
        with self.writer(digest) as w:
            w.write(data)
            return w.commit()

    def import_file(self, src: Path) -> str:
        """Copy a file into the store while hashing it (used by converters for their outputs)."""
        with self.writer() as w, open(src, "rb") as f:
            while chunk := f.read(CHUNK):
                w.write(chunk)
            return w.commit()

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def all_digests(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return ["sha256:" + p.name[7:] for p in self.root.iterdir() if is_blob_filename(p.name)]

    def clean_temp_files(self) -> None:
        """Remove temp files an earlier process left behind when it was killed mid-write."""
        if not self.root.is_dir():
            return
        for p in self.root.iterdir():
            if p.name.startswith(TEMP_PREFIX):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
