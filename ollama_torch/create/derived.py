"""What a create derives from a blob and keeps beside it: the Safetensors conversion of a GGUF file."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import BadRequest
from ..store import ModelStore
from .request import Emit


def ensure_gguf_converted(store: ModelStore, digest: str, emit: Emit | None = None) -> Path:
    """The Safetensors conversion of a GGUF blob, made once and kept in the store's derived directory;
    a conversion made now streams ``converting model`` progress."""
    from converters.gguf_to_hf import converted

    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done == 0 and emit is not None:
            emit({"status": "converting model"})
        if emit is not None and (now - last > 0.1 or done >= total):
            last = now
            emit({"status": "converting model", "total": total, "completed": done})

    try:
        return converted(store.blobs.path(digest), store.derived_dir(digest), progress)[0]
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
