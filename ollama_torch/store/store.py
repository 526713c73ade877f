"""``ModelStore``: manifests under ``manifests/<host>/<namespace>/<model>/<tag>`` over a ``BlobStore``.

Names are matched case-insensitively against what is on disk, as Ollama does. Manifests are written
atomically (temp file, fsync, rename), only after every blob they reference exists, and deleting a model
removes just the blobs no other manifest references. One lock serialises manifest writes against
garbage collection, so a blob cannot be collected between a create's check and its manifest write.

A create reads its source's layers and writes (or finds already stored) its new blobs long before it
writes its manifest, and until then no manifest references them: a concurrent delete of another model
sharing one of them, or a prune, would collect it and the create would fail with ``blob ... not found``.
So a create holds its digests in ``pinning()``: pinned blobs count as referenced by every collection. A pull
(blobs found stored or downloaded before its manifest is written) and a push (blobs read while it uploads)
pin theirs the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadRequest, ModelNotFound, NotFound
from ..names import ModelName
from .blobs import BlobStore, _fsync_dir, parse_digest
from .capabilities import model_capabilities
from .manifest import ConfigV2, Layer, Manifest, MediaType
from .model import StoredModel

log = logging.getLogger(__name__)

PRUNE_GRACE_SECONDS = 3600.0


@dataclass(frozen=True)
class ListedModel:
    name: ModelName
    manifest: Manifest
    digest: str  # hex sha256 of the manifest file bytes
    modified_at: float
    size: int


class BlobPins:
    """The blobs one in-flight operation (a create) relies on before its manifest references them.
    ``add`` pins under the store lock, so a digest pinned before it is checked or written cannot be
    collected after that check: collections run under the same lock and skip pinned digests."""

    def __init__(self, store: ModelStore) -> None:
        self._store = store
        self._held: list[str] = []

    def add(self, *digests: str) -> None:
        canonical = [parse_digest(d) for d in digests]
        self._store._pin(canonical)
        self._held += canonical

    def release(self) -> None:
        held, self._held = self._held, []
        self._store._unpin(held)


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifests_dir = self.root / "manifests"
        self.blobs = BlobStore(self.root / "blobs")
        # Artefacts derived from a blob (e.g. the Safetensors conversion of a GGUF file), keyed by the
        # blob's digest and removed with it. Kept outside blobs/ and manifests/ so an Ollama sharing this
        # directory never sees them.
        self.derived_root = self.root / "ollama-torch" / "derived"
        self.lock = threading.RLock()
        self._pinned: Counter[str] = Counter()  # digest -> in-flight operations holding it (BlobPins)
        self._deferred: set[str] = set()  # pinned blobs a collection would have removed
        self._gguf_caps: dict[str, set[str]] = {}  # GGUF digest -> capabilities in its metadata

    # -- names -------------------------------------------------------------------------------------
    def resolve(self, name: ModelName) -> ModelName | None:
        """The on-disk spelling of ``name`` (case-insensitive), or ``None`` when no manifest exists."""
        if not name.is_fully_qualified:
            return None
        exact = self.manifests_dir.joinpath(*name.parts)
        if exact.is_file():
            return name
        found: list[str] = []
        current = self.manifests_dir
        for part in name.parts:
            try:
                entries = os.listdir(current)
            except OSError:
                return None
            match = next((e for e in sorted(entries) if e.lower() == part.lower()), None)
            if match is None:
                return None
            found.append(match)
            current = current / match
        if not current.is_file():
            return None
        resolved = ModelName.from_path_parts(found)
        return resolved and ModelName(*resolved.parts, scheme=name.scheme)

    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests_dir.joinpath(*name.parts)

    # -- reading -----------------------------------------------------------------------------------
    def read_manifest(self, name: ModelName) -> tuple[ModelName, Manifest, bytes]:
        resolved = self.resolve(name)
        if resolved is None:
            raise ModelNotFound(name.display_shortest)
        raw = self.manifest_path(resolved).read_bytes()
        try:
            return resolved, Manifest.from_bytes(raw), raw
        except ValueError as exc:
            raise BadRequest(f"invalid manifest for {name.display_shortest}: {exc}") from None

    def get(self, name: ModelName) -> StoredModel:
        """Load a model's manifest and small layers; ``ModelNotFound`` (404) when absent."""
        resolved, manifest, raw = self.read_manifest(name)
        mtime = self.manifest_path(resolved).stat().st_mtime
        config = ConfigV2()
        if manifest.config.digest and self.blobs.exists(manifest.config.digest):
            try:
                config = ConfigV2.from_bytes(self.blobs.read_bytes(manifest.config.digest))
            except ValueError as exc:
                log.warning("unreadable config blob for %s: %s", resolved, exc)
        layers: dict[str, Any] = {"licenses": []}
        for layer in manifest.layers:
            if layer.media_type in (MediaType.TEMPLATE, MediaType.PROMPT):
                layers["template"] = self._text(layer)
            elif layer.media_type == MediaType.SYSTEM:
                layers["system"] = self._text(layer)
            elif layer.media_type == MediaType.LICENSE:
                layers["licenses"].append(self._text(layer))
            elif layer.media_type == MediaType.PARAMS:
                params = self._json(layer, resolved)
                layers["params"] = params if isinstance(params, dict) else {}
            elif layer.media_type == MediaType.MESSAGES:
                messages = self._json(layer, resolved)
                layers["messages"] = messages if isinstance(messages, list) else []
        gguf = manifest.by_type(MediaType.MODEL)
        caps = model_capabilities(
            config.capabilities, layers.get("template"), lambda: self._gguf_capabilities(gguf[0] if gguf else None, resolved)
        )
        return StoredModel(
            name=resolved, manifest=manifest, digest=hashlib.sha256(raw).hexdigest(), modified_at=mtime,
            config=config, blobs=self.blobs.root, capabilities=caps, **layers,
        )

    def _text(self, layer: Layer) -> str:
        return self.blobs.read_bytes(layer.digest).decode("utf-8", errors="replace")

    def _json(self, layer: Layer, name: ModelName) -> Any:
        try:
            return json.loads(self.blobs.read_bytes(layer.digest) or b"null")
        except ValueError:
            log.warning("unreadable %s layer %s in %s", layer.media_type, layer.digest, name)
            return None

    def _gguf_capabilities(self, layer: Layer | None, name: ModelName) -> set[str]:
        """The capabilities in a GGUF's metadata (a model an Ollama made records none in its config), read
        once per blob: the file is immutable under its digest."""
        if layer is None:
            return {"completion"}
        cached = self._gguf_caps.get(layer.digest)
        if cached is None:
            from converters.gguf_info import read_gguf_info

            try:
                cached = set(read_gguf_info(self.blobs.path(layer.digest)).capabilities)
            except Exception as exc:  # an unreadable file still lists; loading it will report the error
                log.warning("cannot read GGUF metadata of %s: %s", name, exc)
                return {"completion"}
            self._gguf_caps[layer.digest] = cached
        return set(cached)

    def exists(self, name: ModelName) -> bool:
        return self.resolve(name) is not None

    def list(self) -> list[ListedModel]:
        out: list[ListedModel] = []
        if not self.manifests_dir.is_dir():
            return out
        for path in self.manifests_dir.glob("*/*/*/*"):
            if not path.is_file():
                continue
            name = ModelName.from_path_parts(path.relative_to(self.manifests_dir).parts)
            if name is None:
                continue
            try:
                raw = path.read_bytes()
                manifest = Manifest.from_bytes(raw)
                mtime = path.stat().st_mtime
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable manifest %s: %s", path, exc)
                continue
            digest = hashlib.sha256(raw).hexdigest()
            out.append(ListedModel(name, manifest, digest, mtime, manifest.size))
        out.sort(key=lambda m: m.modified_at, reverse=True)
        return out

    def referenced_digests(self, exclude: ModelName | None = None) -> set[str]:
        refs: set[str] = set()
        for listed in self.list():
            if exclude is not None and listed.name.equal_fold(exclude):
                continue
            refs |= listed.manifest.digests()
        return refs

    @contextmanager
    def pinning(self) -> Iterator[BlobPins]:
        """Hold digests against collection for the block (see ``BlobPins``); released however it ends."""
        pins = BlobPins(self)
        try:
            yield pins
        finally:
            pins.release()

    def _pin(self, digests: Sequence[str]) -> None:
        with self.lock:
            self._pinned.update(digests)

    def _unpin(self, digests: Sequence[str]) -> None:
        """Release pins; a blob a delete skipped only because it was pinned is removed now, unless the
        operation's manifest (or another) references it, so a failed create leaves no garbage."""
        with self.lock:
            self._pinned.subtract(digests)
            freed = {d for d in digests if self._pinned[d] <= 0}
            for digest in freed:
                del self._pinned[digest]
            deferred = freed & self._deferred
            self._deferred -= deferred
            self._remove_unreferenced(deferred)

    # -- writing -----------------------------------------------------------------------------------
    def write_manifest(self, name: ModelName, manifest: Manifest, prune_old: bool = True) -> str:
        """Write ``name``'s manifest atomically and return its digest.

        Every referenced blob must exist. With ``prune_old`` the blobs of the manifest this one replaces
        that nothing references any more are removed (Ollama's create does this unless OLLAMA_NOPRUNE).
        """
        return self.write_manifest_bytes(name, manifest.to_bytes(), prune_old)

    def write_manifest_bytes(self, name: ModelName, raw: bytes, prune_old: bool = True) -> str:
        """Write manifest bytes exactly as given (a pulled manifest keeps the registry's digest).

        Same guarantees as ``write_manifest``: atomic, and only when every referenced blob exists.
        """
        try:
            manifest = Manifest.from_bytes(raw)
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"invalid manifest for {name.display_shortest}: {exc}") from None
        with self.lock:
            for digest in manifest.digests():
                if not self.blobs.exists(digest):
                    raise NotFound(f"blob {digest} not found")
            resolved = self.resolve(name)
            old: Manifest | None = None
            if resolved is not None:
                try:
                    old = self.read_manifest(resolved)[1]
                except (OSError, BadRequest):
                    old = None
                name = resolved
            self._atomic_write(self.manifest_path(name), raw)
            if prune_old and old is not None:
                self._remove_unreferenced(old.digests() - manifest.digests())
            return hashlib.sha256(raw).hexdigest()

    def copy(self, src: ModelName, dst: ModelName) -> None:
        """Copy the manifest file byte for byte; the blobs are shared."""
        with self.lock:
            _, _, raw = self.read_manifest(src)
            target = self.resolve(dst) or dst
            self._atomic_write(self.manifest_path(target), raw)

    def delete(self, name: ModelName) -> None:
        with self.lock:
            resolved, manifest, _ = self.read_manifest(name)
            path = self.manifest_path(resolved)
            path.unlink()
            self._prune_empty_dirs(path.parent)
            self._remove_unreferenced(manifest.digests())

    def _remove_unreferenced(self, candidates: set[str]) -> None:
        if not candidates:
            return
        unreferenced = candidates - self.referenced_digests()
        self._deferred |= unreferenced & set(self._pinned)
        for digest in unreferenced - set(self._pinned):
            self.blobs.remove(digest)
            self.remove_derived(digest)

    def prune(self, grace_seconds: float = PRUNE_GRACE_SECONDS) -> int:
        """Start-up pruning (skipped under OLLAMA_NOPRUNE): blobs no manifest references and older than
        ``grace_seconds`` (uploads for a create still in progress are young), stale temp files, empty
        manifest directories and derived artefacts whose blob is gone."""
        removed = 0
        now = time.time()
        with self.lock:
            self.blobs.clean_temp_files()
            in_use = self.referenced_digests() | set(self._pinned)  # and what in-flight creates hold
            for digest in self.blobs.all_digests():
                if digest in in_use:
                    continue
                try:
                    age = now - self.blobs.path(digest).stat().st_mtime
                except OSError:
                    continue
                if age >= grace_seconds:
                    self.blobs.remove(digest)
                    self.remove_derived(digest)
                    removed += 1
            if self.derived_root.is_dir():
                for entry in self.derived_root.iterdir():
                    digest = entry.name.replace("-", ":", 1)
                    if entry.name.startswith("sha256-") and not self.blobs.exists(digest):
                        shutil.rmtree(entry, ignore_errors=True)
            if self.manifests_dir.is_dir():
                for path in sorted(self.manifests_dir.glob("*/*/*"), reverse=True):
                    self._prune_empty_dirs(path)
        return removed

    def _prune_empty_dirs(self, start: Path) -> None:
        current = start
        while current != self.manifests_dir and self.manifests_dir in current.parents:
            try:
                current.rmdir()
            except OSError:
                return
            current = current.parent

    def _atomic_write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)

    # -- derived artefacts -------------------------------------------------------------------------
    def derived_dir(self, digest: str) -> Path:
        return self.derived_root / self.blobs.path(digest).name

    def remove_derived(self, digest: str) -> None:
        shutil.rmtree(self.derived_dir(digest), ignore_errors=True)
