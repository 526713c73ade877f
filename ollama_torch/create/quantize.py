"""``quantize`` in ``/api/create``: rewrite the weights of the model being created, as Ollama's
``createModel`` quantizes its model layer.

Owns the create-side rules: the name is parsed and the source's ``file_type`` checked before the first
status line (400s: ``unsupported quantization type ...``, ``quantization is only supported for F16, BF16
and F32 models``); a target equal to the source type rewrites nothing (Ollama's ``ft != want``). The
weights quantized are always a Hugging Face Safetensors directory: the model's own files, or, for a GGUF
layer, its cached Safetensors conversion (``ensure_gguf_converted``). The result is a Safetensors-format
model either way: the files that changed (config.json with its ``quantization_config``, the weight shards,
the shard index) become new layers, every other file keeps its layer (a GGUF source's conversion files are
imported as layers). The scheme is recorded in the config blob (``file_type`` and ``extra.quantization``),
never inferred from a file name. The work happens in a temp directory removed afterwards; the manifest is
written by the caller only after this returns, so an interrupted quantization leaves no model.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from converters.quantize_schemes import QuantScheme, UnsupportedQuantization, check_source, parse_quantize

from ..errors import BadRequest
from ..store import BlobPins, ConfigV2, Layer, MediaType, ModelStore
from .derived import ensure_gguf_converted

Emit = Callable[[dict[str, Any]], None]
# Ollama reports quantization progress under this placeholder digest (server/create.go).
PROGRESS_DIGEST = "0000000000000000000"
_WEIGHT_TYPES = (MediaType.TENSOR, MediaType.JSON, MediaType.FILE)


def parse_scheme(name: str) -> QuantScheme | None:
    """The request's scheme, or ``None`` without ``quantize``; a 400 for an unknown name."""
    if not name:
        return None
    try:
        return parse_quantize(name)
    except UnsupportedQuantization as exc:
        raise BadRequest(str(exc)) from None


def check_quantizable(scheme: QuantScheme | None, file_type: str) -> None:
    """400 unless the source is unquantized (F32/F16/BF16); call before the first status line."""
    if scheme is None:
        return
    try:
        check_source(file_type)
    except UnsupportedQuantization as exc:
        raise BadRequest(str(exc)) from None


def media_type_for(relpath: str) -> str:
    if relpath.endswith(".safetensors"):
        return MediaType.TENSOR
    if relpath.endswith(".json"):
        return MediaType.JSON
    return MediaType.FILE


Layers = list[tuple[Layer, str]]  # (layer, the status line Ollama prints for it)


def quantize_layers(
    store: ModelStore, items: Layers, config: ConfigV2, scheme: QuantScheme, emit: Emit, pins: BlobPins
) -> tuple[Layers, ConfigV2]:
    """Quantize the weights among ``items``; return the new layer list and config blob. Each new layer's
    blob is pinned in ``pins`` (the create's) before it is checked or imported."""
    source_type = config.file_type.upper()
    check_quantizable(scheme, source_type)
    if source_type == scheme.name:
        return items, config
    gguf = [layer for layer, _ in items if layer.media_type == MediaType.MODEL]
    root = store.root / "ollama-torch" / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="quantize-", dir=root))
    try:
        if gguf:
            src = ensure_gguf_converted(store, gguf[0].digest, emit)
            files = {p.relative_to(src).as_posix(): p for p in sorted(src.rglob("*")) if p.is_file()}
        else:
            files = _materialize(store, items, work / "src")
            src = work / "src"
        out = work / "out"
        _run(src, out, scheme, source_type, emit)
        new_items = _new_items(store, items, files, out, gguf_digests={layer.digest for layer in gguf}, pins=pins)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    extra = dict(config.extra)
    extra["quantization"] = {**scheme.to_json(), "source_file_type": source_type}
    extra["torch_dtype"] = scheme.dtype
    if gguf:
        extra.setdefault("source_format", "gguf")
    return new_items, replace(config, model_format="safetensors", file_type=scheme.name, extra=extra)


def _materialize(store: ModelStore, items: Layers, directory: Path) -> dict[str, Path]:
    """The model's Hugging Face files as symlinks to their blobs (relative path -> link)."""
    files: dict[str, Path] = {}
    for layer, _ in items:
        if layer.media_type in _WEIGHT_TYPES and layer.name:
            target = directory / layer.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(store.blobs.path(layer.digest))
            files[layer.name] = target
    if not any(name.endswith(".safetensors") for name in files):
        raise BadRequest("the model has no Safetensors weights to quantize")
    return files


def _run(src: Path, out: Path, scheme: QuantScheme, source_type: str, emit: Emit) -> None:
    from converters.quantize import quantize_directory, verify_quantized

    status = f"quantizing {source_type} model to {scheme.name}"
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done == 0 or done >= total or now - last > 0.1:
            last = now
            emit({"status": status, "digest": PROGRESS_DIGEST, "total": total, "completed": done})

    try:
        quantize_directory(src, out, scheme, progress=progress)
        emit({"status": "verifying conversion"})
        verify_quantized(out, scheme)
    except UnsupportedQuantization as exc:
        raise BadRequest(str(exc)) from None


def _new_items(store: ModelStore, items: Layers, files: dict[str, Path], out: Path, gguf_digests: set[str], pins: BlobPins) -> Layers:
    """Layers after quantization: rewritten files as new blobs, the others as before (or imported)."""
    written = {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}
    existing = {layer.name: (layer, status) for layer, status in items if layer.media_type in _WEIGHT_TYPES and layer.name}
    result: Layers = []
    for rel in sorted(set(files) | set(written)):
        if rel in written:
            result.append(_import(store, written[rel], rel, pins))
        elif rel in existing:
            result.append(existing[rel])
        else:  # a GGUF source: its conversion's unchanged files become layers of the new model
            result.append(_import(store, files[rel], rel, pins))
    others = [(layer, status) for layer, status in items if layer.media_type not in _WEIGHT_TYPES and layer.digest not in gguf_digests]
    return result + others


def _import(store: ModelStore, path: Path, rel: str, pins: BlobPins) -> tuple[Layer, str]:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    digest = "sha256:" + sha.hexdigest()
    pins.add(digest)
    status = "using existing layer" if store.blobs.exists(digest) else "creating new layer"
    if status == "creating new layer":
        store.blobs.import_file(path)
    return Layer(media_type_for(rel), digest, path.stat().st_size, name=rel), f"{status} {digest}"
