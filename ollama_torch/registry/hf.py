"""``pull hf.co/<org>/<repo>[:<tag>]``: a Hugging Face repository, fetched with ``huggingface_hub`` and
created through the create service (Ollama gets these from hf.co's registry endpoint; we read the repo).

The tag picks the files (``select_hf_files``, a pure function with table tests):

- a file name (``model-Q4_K_M.gguf``): that GGUF file;
- a GGUF quantization (``Q4_K_M``, ``q8_0``, ``IQ3_M``, ``F16``): the ``.gguf`` whose name carries it;
- none (or ``latest``): the Safetensors directory (weights, JSON configs, tokenizer files) when the repo
  has ``.safetensors`` files, else the default GGUF: Q4_K_M when present, as Ollama and the Hub do,
  else the first present of ``DEFAULT_QUANTS``.

A ``mmproj*.gguf`` vision projector is added to a GGUF selection. Downloads honour ``HF_ENDPOINT`` and
``HF_TOKEN`` (read by ``huggingface_hub`` itself) and resume through its ``local_dir`` cache.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from ..create import CreateModel, CreateRequest
from ..errors import OllamaError
from ..names import ModelName
from ..store import BlobPins, ModelStore
from .client import RegistryError, RegistryNotFound
from .download import DigestMismatch

log = logging.getLogger(__name__)

HF_HOSTS = frozenset({"hf.co", "huggingface.co", "www.huggingface.co"})
DEFAULT_QUANTS = (
    "Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q5_K_M", "Q5_K_S", "Q5_0", "Q6_K", "Q8_0",
    "IQ4_XS", "IQ4_NL", "Q3_K_M", "Q3_K_L", "Q3_K_S", "Q2_K", "BF16", "F16", "F32",
)  # fmt: skip
# Files of a Hugging Face model directory that create understands; everything else is left out.
HF_DIR_SUFFIXES = (".safetensors", ".json", ".model", ".txt", ".jinja", ".tiktoken")
SKIPPED_DIRS = frozenset(
    {"onnx", "openvino", "original", "coreml", "tflite", "tf", "flax", "gguf", "runs", "mlx"}
)
_QUANT = re.compile(r"(?:^|[-._])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|FP16|F32|FP32|TQ\d_\d)(?=$|[-.])")
_SHARD = re.compile(r"-\d{5}-of-\d{5}$", re.IGNORECASE)

Emit = Callable[[dict[str, Any]], None]


class HfSelectionError(ValueError):
    """The repository has nothing the tag can name."""


@dataclass(frozen=True)
class HfRef:
    repo_id: str
    tag: str  # "" for the default selection


@dataclass(frozen=True)
class HfSelection:
    format: str  # "safetensors" | "gguf"
    files: tuple[str, ...]  # repository paths, the model file first
    quant: str = ""


def parse_hf_name(name: ModelName) -> HfRef | None:
    """``hf.co/org/repo:tag`` -> ``HfRef("org/repo", "tag")``; ``None`` for other hosts."""
    if name.host.lower() not in HF_HOSTS:
        return None
    tag = "" if name.tag.lower() == "latest" else name.tag
    return HfRef(f"{name.namespace}/{name.model}", tag)


def normalize_quant(text: str) -> str:
    text = text.upper()
    return {"FP16": "F16", "FP32": "F32"}.get(text, text)


def gguf_quant(path: str) -> str:
    """The quantization a GGUF file name carries (``x-Q4_K_M.gguf`` -> ``Q4_K_M``), or ``""``."""
    stem = _SHARD.sub("", PurePosixPath(path).name[: -len(".gguf")]).upper()
    found = _QUANT.findall(stem)
    return normalize_quant(found[-1]) if found else ""


def _is_projector(path: str) -> bool:
    return PurePosixPath(path).name.lower().startswith("mmproj")


def _hf_dir_files(files: Iterable[str]) -> list[str]:
    out = []
    for path in files:
        parts = PurePosixPath(path).parts
        if any(p.startswith(".") or p.lower() in SKIPPED_DIRS for p in parts[:-1]) or parts[-1].startswith(
            "."
        ):
            continue
        if path.lower().endswith(HF_DIR_SUFFIXES):
            out.append(path)
    return sorted(out)


def select_hf_files(files: Iterable[str], tag: str) -> HfSelection:
    """Which files of a repository ``tag`` names (see the module docstring). Pure: no network."""
    files = list(files)
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    models = [f for f in ggufs if not _is_projector(f)]
    projectors = [f for f in ggufs if _is_projector(f)]
    if not tag and any(f.endswith(".safetensors") for f in files):
        return HfSelection("safetensors", tuple(_hf_dir_files(files)))
    if not models:
        raise HfSelectionError(
            "no Safetensors or GGUF model files" if not tag else f'no GGUF file for tag "{tag}"'
        )
    if tag.lower().endswith(".gguf"):
        chosen = [f for f in ggufs if PurePosixPath(f).name.lower() == tag.lower()]
        quant = gguf_quant(chosen[0]) if chosen else ""
    else:
        available = {gguf_quant(f) for f in models} - {""}
        quant = normalize_quant(tag) if tag else next((q for q in DEFAULT_QUANTS if q in available), "")
        chosen = [f for f in models if gguf_quant(f) == quant] if quant else models[:1]
        if not chosen:
            listed = ", ".join(sorted(available)) or "none"
            raise HfSelectionError(
                f'no GGUF file for tag "{tag}" (quantizations in the repository: {listed})'
            )
    if not chosen:
        raise HfSelectionError(f'no file named "{tag}"')
    if len(chosen) > 1 or _SHARD.search(chosen[0][: -len(".gguf")]):
        raise HfSelectionError(f"split GGUF files are not supported: {', '.join(chosen)}")
    extra = [_pick_projector(projectors)] if projectors and not _is_projector(chosen[0]) else []
    return HfSelection("gguf", (chosen[0], *extra), quant)


def _pick_projector(projectors: list[str]) -> str:
    for preferred in ("F16", "BF16", "F32", "Q8_0"):
        for path in projectors:
            if gguf_quant(path) == preferred:
                return path
    return projectors[0]


# -- the network part (huggingface_hub); not exercised by tests, the hub is unreachable there ---------------
def pull_hf(store: ModelStore, name: ModelName, emit: Emit, *, create: CreateModel, noprune: bool = False) -> None:
    """Download the selected files, import them as blobs and ``create`` ``name`` from them. Blocking."""
    ref = parse_hf_name(name)
    if ref is None:
        raise ValueError(f"{name} is not a Hugging Face name")
    emit({"status": "pulling manifest"})
    workdir = store.root / "ollama-torch" / "hf-downloads" / quote(ref.repo_id, safe="")
    with store.pinning() as pins:  # the files' blobs, found stored or imported, until the create holds them
        files = _download(store, ref, workdir, emit, pins)
        emit({"status": "verifying sha256 digest"})
        create(store, CreateRequest(name=_store_name(name), files=files), emit, noprune=noprune)
    shutil.rmtree(workdir, ignore_errors=True)


def _download(store: ModelStore, ref: HfRef, workdir: Path, emit: Emit, pins: BlobPins) -> dict[str, str]:
    """Fetch the files ``ref`` selects into the store; repository path -> digest. Each blob is pinned before
    it is looked for (or, without an LFS hash to know it by, once imported): a concurrent delete of another
    model holding it would otherwise collect it before the create references it."""
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    refused: list[BaseException] = []  # an error from emit itself (the client went away) passes through

    def report(line: dict[str, Any]) -> None:
        try:
            emit(line)
        except BaseException as exc:
            refused.append(exc)
            raise

    try:
        info = huggingface_hub.HfApi().model_info(ref.repo_id, files_metadata=True)
        siblings = {s.rfilename: s for s in info.siblings or []}
        files: dict[str, str] = {}
        for path in select_hf_files(siblings, ref.tag).files:
            sibling = siblings[path]
            sha = sibling.lfs.sha256 if sibling.lfs else ""
            size = int(sibling.size or 0)
            if sha:
                pins.add(f"sha256:{sha}")
            if not (sha and store.blobs.exists(f"sha256:{sha}")):
                local = huggingface_hub.hf_hub_download(
                    ref.repo_id,
                    path,
                    revision=info.sha,
                    local_dir=workdir,
                    tqdm_class=_tqdm_for(report, path, sha, size),
                )
                digest = store.blobs.import_file(Path(str(local)))
                pins.add(digest)
                if sha and digest != f"sha256:{sha}":
                    raise DigestMismatch(f"sha256:{sha}", digest)
            report(_progress(path, sha, size, size))
            files[path] = f"sha256:{sha}" if sha else digest
        return files
    except Exception as exc:
        if refused:
            raise refused[0] from None
        if isinstance(exc, OllamaError):
            raise
        if isinstance(exc, HfSelectionError):
            raise RegistryError(f"hf.co/{ref.repo_id}: {exc}") from None
        if isinstance(exc, hf_errors.GatedRepoError):
            raise RegistryError(
                f"{ref.repo_id} is gated: accept its terms on the Hub and set HF_TOKEN"
            ) from None
        if isinstance(exc, (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError)):
            message = f"pull model manifest: {ref.repo_id} not found on the Hub (private? set HF_TOKEN)"
            raise RegistryNotFound(message) from None
        if isinstance(exc, hf_errors.OfflineModeIsEnabled):
            raise RegistryError("HF_HUB_OFFLINE is set: cannot pull from the Hugging Face Hub") from None
        endpoint = huggingface_hub.constants.ENDPOINT  # network and hub errors come in many types
        raise RegistryError(f"pulling {ref.repo_id} from {endpoint} failed: {exc}") from exc


def _store_name(name: ModelName) -> ModelName:
    return ModelName(host=name.host, namespace=name.namespace, model=name.model, tag=name.tag)


def _progress(path: str, sha: str, total: int, completed: int) -> dict[str, Any]:
    line: dict[str, Any] = {"status": f"pulling {sha[:12] if sha else path}", "total": total}
    if sha:
        line["digest"] = f"sha256:{sha}"
    if completed:
        line["completed"] = completed
    return line


def _tqdm_for(emit: Emit, path: str, sha: str, total: int) -> Any:
    """A tqdm class that reports through ``emit`` (at most every 100 ms) instead of drawing a bar."""
    import io

    from tqdm.auto import tqdm

    class _Progress(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(disable=False, file=io.StringIO())
            super().__init__(*args, **kwargs)
            self._last = 0.0

        def update(self, n: float | None = 1) -> bool | None:
            result = super().update(n)
            now = time.monotonic()
            if now - self._last >= 0.1:
                self._last = now
                emit(_progress(path, sha, total or int(self.total or 0), int(self.n)))
            return result

    return _Progress
