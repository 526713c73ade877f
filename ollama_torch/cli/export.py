"""``ollama-torch export MODEL -o FILE.gguf [-q TYPE]``: a stored model as one GGUF file on this machine.

The server does the work (``POST /api/x/export``: the converters run there, next to the model's blobs) and
streams its progress, rendered as ``create``'s is; its last line names the GGUF's blob, which is then
downloaded (``GET /api/x/blobs/<digest>``) with a bar and checked against its digest before it is renamed to
``FILE.gguf``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..names import ModelName
from .client import Client, ClientError
from .create import StatusRenderer
from .progress import Progress


def export_command(client: Client, name: str, output: str, quantize: str | None) -> None:
    if not ModelName.parse(name).is_valid:
        raise ClientError(f"invalid model name: {name}")
    dest = Path(output).expanduser()
    if dest.is_dir():
        raise ClientError(f"{output} is a directory: name the .gguf file to write")
    if not dest.parent.is_dir():
        raise ClientError(f"directory {dest.parent} does not exist")
    request: dict[str, Any] = {"model": name}
    if quantize:
        request["quantize"] = quantize
    done: dict[str, Any] = {}
    with Progress() as progress:
        render = StatusRenderer(progress, "exporting", status="")
        for resp in client.export(request):
            if resp.get("status") == "success":
                done = resp
                break
            render(resp)
        digest = str(done.get("blob") or "")
        if not digest:
            raise ClientError("the server did not name the exported file")
        if render.spinner is not None:
            render.spinner.stop()
        bar = progress.bar(f"writing {dest.name}", int(done.get("size") or 0))
        client.download_blob(digest, dest, on_progress=lambda n, _total: progress.update(bar, n))
        progress.update(bar, bar.total)
    size = int(done.get("size") or 0)
    merged = int(done.get("adapters_merged") or 0)
    note = f", {merged} LoRA adapter{'s' if merged != 1 else ''} merged into the weights" if merged else ""
    print(f"wrote {dest} ({done.get('quantization_level', '')}, {size / 1e6:.1f} MB{note})")
