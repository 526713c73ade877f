"""GGUF models: what ``"gguf": true`` on ``/api/create`` stores, and what ``/api/x/export`` writes.

A model is stored as Ollama stores one it made: its weights are one GGUF ``model`` layer, so that a stock Ollama
that pulls it runs it with llama.cpp. The GGUF comes from

- the model's Safetensors files: exported (``converters.gguf_export.export_hf``) in the type asked for, or in
  the weights' own float type; our engine then loads the exact inverse of that file (``derive_hf``, kept as
  the blob's derived directory), with the source's config and tokenizer;
- the model's GGUF layer: kept as it is, or re-encoded in the type asked for (``retype_gguf``); a quantized
  GGUF is only re-encoded to a float type (Ollama's rule for ``quantize``).

Its LoRA adapters become Ollama's adapter layers (GGUF LoRA files, made in ``service``) at create time; an
export merges them into the weights instead (``_merged``), so the one file runs to the adapters' outputs.

At create time the model also gets what Ollama would give it: the known Go ``TEMPLATE`` that renders as its
Jinja chat template does (``template_match``), that template's stop words as ``PARAMETER stop``, and the
default system prompt the Jinja template writes, if any. The GGUF type is recorded in the config blob
(``file_type``, so ``details.quantization_level``, and ``quantization``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest
from ..store import ConfigV2, Layer, MediaType, ModelStore
from .derived import ensure_gguf_converted
from .request import Emit

if TYPE_CHECKING:
    from converters.gguf_export import GGUFType
    from converters.gguf_info import GGUFInfo

PROGRESS_DIGEST = "0000000000000000000"  # Ollama reports conversion progress under this placeholder digest
HF_TYPES = (MediaType.TENSOR, MediaType.JSON, MediaType.FILE)
_QUANTIZED_SOURCE = "quantization is only supported for F16, BF16 and F32 models"

Layers = list[tuple[Layer, str]]  # (layer, the status line Ollama prints for it)


def parse_type(name: str) -> GGUFType | None:
    """The GGUF type a ``quantize`` value names (``converters.gguf_export.GGUFType``), None without one; a
    400 listing the available types otherwise."""
    if not name:
        return None
    from converters.gguf_export import UnsupportedGGUFType, parse_gguf_type

    try:
        return parse_gguf_type(name)
    except UnsupportedGGUFType as exc:
        raise BadRequest(str(exc)) from None


@dataclass
class GGUFResult:
    """A GGUF made (or found) for a model: its blob and its type."""

    digest: str
    size: int
    file_type: str
    created: bool
    merged: int = 0  # LoRA adapters merged into the weights


class _Reporter:
    """Converter progress as Ollama-style status lines: a bar while tensors are written, a spinner while
    llama.cpp quantizes (it reports no progress), throttled to ten lines a second."""

    def __init__(self, emit: Emit, label: str, quantizing: str = "") -> None:
        self.emit, self.label, self.quantizing, self.last = emit, label, quantizing, 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        status = (self.quantizing or self.label) if stage == "quantizing" else self.label
        if total == 0:
            self.emit({"status": status})
            return
        now = time.monotonic()
        if done == 0 or done >= total or now - self.last > 0.1:
            self.last = now
            self.emit({"status": status, "digest": PROGRESS_DIGEST, "total": total, "completed": done})


def check_retype(source_type: str, target: GGUFType | None) -> None:
    """Ollama's rule for ``quantize``: a quantized GGUF is re-encoded only to a float type."""
    if target is not None and target.quantized and target.name != source_type.upper() and source_type.upper() not in ("F32", "F16", "BF16"):
        raise BadRequest(_QUANTIZED_SOURCE)


def check_hf_dir(model_dir: Path) -> None:
    """400 for a Hugging Face directory the export would refuse (checked without its weights)."""
    from converters.gguf_export import UnsupportedExport, check_exportable

    try:
        check_exportable(model_dir)
    except UnsupportedExport as exc:
        raise BadRequest(str(exc)) from None


def preflight(store: ModelStore, items: Layers, config: ConfigV2, target: GGUFType | None) -> None:
    """Everything ``make_gguf`` would refuse, before a status line is streamed."""
    gguf = [layer for layer, _ in items if layer.media_type == MediaType.MODEL]
    if gguf:
        check_retype(config.file_type or _file_type(store, gguf[0].digest), target)
        if _adapters(items):  # merged through the GGUF's Hugging Face form, exported again
            check_hf_dir(ensure_gguf_converted(store, gguf[0].digest))
        return
    with _workdir(store) as work:
        check_hf_dir(_link_files(store, items, work / "src"))


def make_gguf(
    store: ModelStore, items: Layers, config: ConfigV2, target: GGUFType | None, emit: Emit, *, name: str = "", derive: bool = False
) -> GGUFResult:
    """The GGUF of the model whose layers are ``items`` in ``target`` type (None: as it is), as a blob.
    ``derive``: also write the Hugging Face directory our engine loads for an exported file (a create).
    Adapter layers among ``items`` are merged into the weights (``_merged``): one file, the adapters' outputs."""
    gguf = [layer for layer, _ in items if layer.media_type == MediaType.MODEL]
    if _adapters(items):
        return _merged(store, items, config, target, emit, name)
    if gguf:
        return _from_gguf_layer(store, gguf[0], config, target, emit)
    return _from_safetensors(store, items, target, emit, name, derive)


def _from_gguf_layer(store: ModelStore, layer: Layer, config: ConfigV2, target: GGUFType | None, emit: Emit) -> GGUFResult:
    from converters.gguf_export import UnsupportedExport, retype_gguf

    source_type = config.file_type.upper() or _file_type(store, layer.digest)
    if target is None or target.name == source_type:
        return GGUFResult(layer.digest, layer.size, source_type, False)
    check_retype(source_type, target)
    with _workdir(store) as work:
        out = work / "model.gguf"
        try:
            label = f"quantizing {source_type} model to {target.name}"
            retype_gguf(store.blobs.path(layer.digest), out, target, _Reporter(emit, label, label))
        except UnsupportedExport as exc:
            raise BadRequest(str(exc)) from None
        digest = store.blobs.import_file(out)
    return GGUFResult(digest, store.blobs.size(digest), target.name, True)


def _from_safetensors(store: ModelStore, items: Layers, target: GGUFType | None, emit: Emit, name: str, derive: bool) -> GGUFResult:
    from converters.gguf_export import UnsupportedExport, derive_hf, export_hf, load_source

    with _workdir(store) as work:
        src_dir = _link_files(store, items, work / "src")
        try:
            source = load_source(src_dir)
            kind = target.name if target is not None else source.dtype
            out = work / "model.gguf"
            report = _Reporter(emit, f"converting model to GGUF {'F32' if target is not None and target.writer == 'llama.cpp' else kind}", f"quantizing F32 model to {kind}")
            export_hf(src_dir, out, target, report, name=name, source=source)
            digest = store.blobs.import_file(out)
            derived = store.derived_dir(digest)
            if derive and not (derived / "config.json").is_file():
                emit({"status": "deriving the Safetensors our engine loads"})
                shutil.rmtree(derived, ignore_errors=True)
                derive_hf(store.blobs.path(digest), source, derived)
        except UnsupportedExport as exc:
            raise BadRequest(str(exc)) from None
    return GGUFResult(digest, store.blobs.size(digest), kind, True)


def _adapters(items: Layers) -> list[Layer]:
    return [layer for layer, _ in items if layer.media_type == MediaType.ADAPTER]


def _merged(store: ModelStore, items: Layers, config: ConfigV2, target: GGUFType | None, emit: Emit, name: str) -> GGUFResult:
    """The model with its LoRA adapters merged into the weights (PEFT's ``merge_and_unload``: ``W + scaling *
    B @ A`` in float32, before any quantization), exported from its Hugging Face form: its Safetensors
    files, or a GGUF layer's conversion (re-encoded in the GGUF's own type unless another is asked for). One
    file a llama.cpp without adapter support runs to the adapters' outputs."""
    from converters.gguf_export import UnsupportedExport, export_hf, load_source
    from converters.gguf_export.lora import merge_loras
    from converters.lora import UnsupportedAdapter

    gguf = [layer for layer, _ in items if layer.media_type == MediaType.MODEL]
    with _workdir(store) as work:
        if gguf:
            src_dir = ensure_gguf_converted(store, gguf[0].digest, emit)
            target = target or parse_type(config.file_type or _file_type(store, gguf[0].digest))
        else:
            src_dir = _link_files(store, items, work / "src")
        try:
            adapter_dirs = _adapter_dirs(store, _adapters(items), src_dir, work / "adapters")
            source = load_source(src_dir)
            emit({"status": f"merging {len(adapter_dirs)} LoRA adapter{'s' if len(adapter_dirs) != 1 else ''} into the weights"})
            merge_loras(source, adapter_dirs, keep_dtype=target is None)
            kind = target.name if target is not None else source.dtype
            out = work / "model.gguf"
            report = _Reporter(emit, f"converting model to GGUF {'F32' if target is not None and target.writer == 'llama.cpp' else kind}", f"quantizing F32 model to {kind}")
            export_hf(src_dir, out, target, report, name=name, source=source)
            digest = store.blobs.import_file(out)
        except (UnsupportedExport, UnsupportedAdapter) as exc:
            raise BadRequest(str(exc)) from None
    return GGUFResult(digest, store.blobs.size(digest), kind, True, merged=len(adapter_dirs))


def _adapter_dirs(store: ModelStore, layers: list[Layer], base_dir: Path, root: Path) -> list[Path]:
    """Each adapter among ``layers`` as a PEFT directory: its stored PEFT files linked, or a GGUF LoRA layer
    converted for the base in ``base_dir``; in the order they were added."""
    from converters.gguf_lora import gguf_lora_to_peft

    dirs: dict[str, Path] = {}
    for layer in layers:
        if not layer.name:
            dirs[layer.digest] = gguf_lora_to_peft(store.blobs.path(layer.digest), base_dir, root / layer.digest.removeprefix("sha256:"))
        elif layer.name.startswith("adapters/"):
            _, adapter_id, file = layer.name.split("/", 2)
            directory = dirs.setdefault(adapter_id, root / adapter_id)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / file).symlink_to(store.blobs.path(layer.digest))
    return list(dirs.values())


def _link_files(store: ModelStore, items: Layers, directory: Path) -> Path:
    """The model's Hugging Face files as symlinks to their blobs, in ``directory``."""
    files = {layer.name: layer.digest for layer, _ in items if layer.media_type in HF_TYPES and layer.name}
    if not any(rel.endswith(".safetensors") for rel in files):
        raise BadRequest("the model has no weights to export")
    for rel, digest in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(store.blobs.path(digest))
    return directory


def _file_type(store: ModelStore, digest: str) -> str:
    from converters.gguf_info import read_gguf_info

    return read_gguf_info(store.blobs.path(digest)).file_type


@contextmanager
def _workdir(store: ModelStore) -> Iterator[Path]:
    root = store.root / "ollama-torch" / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gguf-", dir=root))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def gguf_config(store: ModelStore, result: GGUFResult, source: ConfigV2) -> ConfigV2:
    """The config blob of a model stored as ``result``: Ollama's GGUF fields from the file's metadata, the
    type in ``file_type`` and ``quantization``, and where it came from."""
    from converters.gguf_info import read_gguf_info

    info = read_gguf_info(store.blobs.path(result.digest))
    extra = {k: v for k, v in source.extra.items() if k not in ("quantization", "torch_dtype")}
    writer = "llama.cpp" if result.file_type not in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1") else "gguf"
    extra.update(
        parameter_count=info.parameter_count,
        quantization={"method": writer, "type": result.file_type, "source_file_type": source.file_type or result.file_type},
    )
    extra.setdefault("source_format", source.model_format or "gguf")
    return config_of_gguf(info, file_type=result.file_type, extra=extra)


def config_of_gguf(info: GGUFInfo, *, file_type: str, extra: dict[str, Any]) -> ConfigV2:
    """Ollama's config fields for a model whose weights are the GGUF ``info`` describes: family, size,
    context, and capabilities (with what its Jinja chat template adds: tools, thinking)."""
    from converters.chat_template import jinja_template_capabilities
    from converters.common import human_number

    caps = list(info.capabilities)
    if "completion" in caps and info.chat_template:
        caps += sorted(jinja_template_capabilities(info.chat_template))
    return ConfigV2(
        model_format="gguf",
        model_family=info.architecture,
        model_families=[info.architecture],
        model_type=human_number(info.parameter_count),
        file_type=file_type,
        capabilities=caps,
        context_length=info.context_length,
        embedding_length=info.embedding_length,
        extra=extra,
    )


def add_bos(store: ModelStore, digest: str) -> bool:
    """Whether llama.cpp adds BOS to this GGUF's prompts (``tokenizer.ggml.add_bos_token``)."""
    from converters.gguf_info import read_gguf_info

    return bool(read_gguf_info(store.blobs.path(digest)).metadata.get("tokenizer.ggml.add_bos_token", False))
