"""``ollama-torch create``: Modelfile -> hashed local files -> missing blobs uploaded -> ``POST /api/create``.

The same sequence as Ollama's ``CreateHandler``: parse the Modelfile, hash every local file it names,
ask the server which blobs it lacks (``HEAD /api/blobs/<digest>``), stream only those up, then send the
create request with relative names mapped to digests and render the server's progress lines.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path
from typing import Any

from ..modelfile import decode_modelfile, parse_modelfile, to_create_request
from ..names import ModelName
from .client import Client, ClientError
from .progress import Bar, Progress, Spinner

HASH_BAR_MIN = 64 << 20  # files at least this big get a hashing bar
CHUNK = 1 << 20


def read_modelfile(file: str | None) -> tuple[str, Path]:
    """The Modelfile's text and the directory its relative paths resolve against.

    No ``-f`` and no ``./Modelfile`` means ``FROM .`` (the current directory is the model), as in Ollama;
    an explicit ``-f`` that does not exist is an error."""
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise ClientError("specified Modelfile wasn't found")
    else:
        path = Path("Modelfile")
        if not path.is_file():
            return "FROM .\n", Path.cwd()
    return decode_modelfile(path.read_bytes()), path.resolve().parent


class _Hasher:
    """The ``digest`` callback for ``to_create_request``: hashes with a bar for big files, remembers."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.digests: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        if path in self.digests:
            return self.digests[path]
        size = path.stat().st_size
        bar = self.progress.bar(f"hashing {path.name}", size) if size >= HASH_BAR_MIN else None
        sha = hashlib.sha256()
        done = 0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                sha.update(chunk)
                done += len(chunk)
                if bar is not None:
                    self.progress.update(bar, done)
        self.digests[path] = f"sha256:{sha.hexdigest()}"
        return self.digests[path]


def upload_blobs(client: Client, progress: Progress, paths: list[Path], digests: dict[Path, str]) -> None:
    """HEAD each digest; POST (streamed, with a bar) only those the server does not have."""
    for path in paths:
        digest = digests[path]
        if client.blob_exists(digest):
            continue
        bar = progress.bar(f"copying file {digest[:19]}", path.stat().st_size)
        client.create_blob(digest, path, on_progress=functools.partial(progress.update, bar))
        progress.update(bar, bar.total)


class StatusRenderer:
    """Ollama's rendering of a pull/push/create progress stream: a bar per digest, a spinner per status."""

    def __init__(self, progress: Progress, verb: str, pull_mode: bool = False, status: str = "") -> None:
        self.progress = progress
        self.verb = verb  # "pulling" / "pushing": names a bar whose line has no status
        # ``ollama pull`` hides each layer's 0% announcement and names bars "pulling <hex12>:".
        self.pull_mode = pull_mode
        self.bars: dict[str, Bar] = {}
        self.status = status
        self.spinner: Spinner | None = None

    def __call__(self, resp: dict[str, Any]) -> None:
        digest = str(resp.get("digest") or "")
        if digest:
            completed = int(resp.get("completed") or 0)
            if self.pull_mode and completed == 0:
                return
            if self.spinner is not None:
                self.spinner.stop()
            bar = self.bars.get(digest)
            if bar is None:
                short = digest.removeprefix("sha256:").strip()[:12]
                message = (
                    f"pulling {short}:"
                    if self.pull_mode
                    else str(resp.get("status") or f"{self.verb} {short}...")
                )
                bar = self.progress.bar(message, int(resp.get("total") or 0), completed)
                self.bars[digest] = bar
            self.progress.update(bar, completed)
        elif (status := str(resp.get("status") or "")) != self.status:
            if self.spinner is not None:
                self.spinner.stop()
            self.status = status
            self.spinner = self.progress.spinner(status)


def create_command(client: Client, name: str, file: str | None, quantize: str | None, *, gguf: bool = False) -> None:
    if not ModelName.parse(name).is_valid:
        raise ClientError(f"invalid model name: {name}")
    text, base_dir = read_modelfile(file)
    modelfile = parse_modelfile(text)
    with Progress() as progress:
        status = "gathering model components"
        spinner = progress.spinner(status)
        hasher = _Hasher(progress)
        request, uploads = to_create_request(modelfile, base_dir, digest=hasher, warn=print)
        spinner.stop()
        upload_blobs(client, progress, uploads, hasher.digests)
        request = {"model": name, **request}
        if quantize:
            request["quantize"] = quantize
        if gguf:
            request["gguf"] = True
        render = StatusRenderer(progress, "pulling", status=status)
        render.spinner = spinner
        for resp in client.create(request):
            render(resp)


def pull_with_progress(client: Client, name: str, insecure: bool = False) -> None:
    """Pull ``name`` rendering progress like ``ollama pull`` (shared by ``pull`` and ``run``)."""
    with Progress() as progress:
        render = StatusRenderer(progress, "pulling", pull_mode=True)
        for resp in client.pull(name, insecure):
            render(resp)


def push_with_progress(client: Client, name: str, insecure: bool = False) -> None:
    with Progress() as progress:
        render = StatusRenderer(progress, "pushing")
        try:
            for resp in client.push(name, insecure):
                render(resp)
        except ClientError as exc:
            text = str(exc).lower()
            if "access denied" in text or "unauthorized" in text:
                raise ClientError(
                    "you are not authorized to push to this namespace, create the model under a namespace you own"
                ) from None
            raise
    parsed = ModelName.parse(name)
    destination = str(parsed)
    if parsed.host.endswith((".ollama.ai", ".ollama.com")):
        destination = "https://ollama.com/" + parsed.display_shortest.removesuffix(":latest")
    sys.stdout.write(f"\nYou can find your model at:\n\n\t{destination}\n")
