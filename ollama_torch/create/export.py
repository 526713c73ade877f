"""``export_model``: a stored model as one GGUF file, for ``POST /api/x/export`` (``ollama-torch export``).

The GGUF is made as ``"gguf": true`` on create makes it (``gguf.make_gguf``: exported from the Safetensors
files, or the model's own GGUF layer, re-encoded when another type is asked for) and left in the store as a
blob, which the client downloads from ``GET /api/x/blobs/<digest>`` (it is the model's own layer when nothing
had to change). A model's LoRA adapters are merged into the weights (``gguf._merged``: the one file gives the
adapters' outputs in any llama.cpp, as ``ollama run`` of the model does), and the last line says how many
(``adapters_merged``). A blob no manifest references is pruned at the next start after an hour, as any upload is.
Every layer of the model is pinned while it is read, so a concurrent delete cannot collect it.
"""

from __future__ import annotations

from ..errors import ModelNotFound
from ..store import ModelStore
from . import gguf
from .request import Emit, ExportRequest


def export_model(store: ModelStore, req: ExportRequest, emit: Emit) -> None:
    """Export ``req.name``; see ``ExportModel`` for what is streamed. Raises ``OllamaError``s before the first
    status line for what can be refused up front (an unknown model or type)."""
    target = gguf.parse_type(req.quantize)
    with store.pinning() as pins:
        with store.lock:  # read and pin at once: a delete cannot fall in between
            try:
                model = store.get(req.name)
            except ModelNotFound:
                raise ModelNotFound(req.name.display_shortest) from None
            pins.add(*model.manifest.digests())
        items = [(layer, "") for layer in model.manifest.layers]
        gguf.preflight(store, items, model.config, target)
        emit({"status": f"exporting {model.name.display_shortest}"})
        result = gguf.make_gguf(store, items, model.config, target, emit, name=model.name.display_shortest)
    done = {"status": "success", "blob": result.digest, "size": result.size, "quantization_level": result.file_type}
    if result.merged:  # said in the last line: the file holds the adapters' weights, not the base's
        done["adapters_merged"] = result.merged
    emit(done)
