"""``create_model``: Ollama's create algorithm (server/create.go) over our store.

Everything that can be refused is checked before the first status line, so a bad request gets its 400
rather than a 200 whose stream ends in an error. Weights are rewritten only for ``quantize`` (see
``quantize.py``); otherwise a Safetensors directory is stored as one layer per file, a GGUF file as one
model layer; the GGUF's Safetensors conversion is a derived artefact kept beside the store (see
``ModelStore.derived_dir``). The manifest is written last, under the store lock, so an interrupted
create leaves no model behind. Every blob the create relies on is pinned (``ModelStore.pinning``) before
it is read, checked or written, so a concurrent delete or prune cannot collect it before the manifest
references it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest, ModelNotFound, NotImplementedYet
from ..names import ModelName
from ..store import BlobPins, ConfigV2, Layer, Manifest, MediaType, ModelStore
from ..store.manifest import go_json
from . import gguf
from .derived import ensure_gguf_converted
from .quantize import QuantScheme, check_quantizable, media_type_for, parse_scheme, quantize_layers
from .request import CreateRequest, Emit, Pull

if TYPE_CHECKING:
    from converters.gguf_export import GGUFType

log = logging.getLogger(__name__)




def _detect_kind(store: ModelStore, files: dict[str, str]) -> str:
    """``detectModelTypeFromFiles``: by extension, else by sniffing the GGUF magic."""
    if any(p.endswith(".safetensors") for p in files):
        return "safetensors"
    if any(p.endswith(".gguf") for p in files):
        return "gguf"
    for digest in files.values():
        with store.blobs.open(digest) as f:
            if f.read(4) == b"GGUF":
                return "gguf"
    raise BadRequest("unknown type")


class _Layers:
    """Layers of the manifest being built, each with the status line Ollama prints for it. Each layer's
    blob is pinned before it is looked at: one already stored may belong to a model being deleted."""

    def __init__(self, store: ModelStore, pins: BlobPins) -> None:
        self.store = store
        self.pins = pins
        self.items: list[tuple[Layer, str]] = []

    def existing(self, layer: Layer) -> None:
        self.pins.add(layer.digest)
        self.items.append((layer, f"using existing layer {layer.digest}"))

    def new(self, data: bytes, media_type: str, status: str = "") -> None:
        blobs = self.store.blobs
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.pins.add(digest)
        if not status:
            status = ("using existing layer" if blobs.exists(digest) else "creating new layer") + f" {digest}"
        blobs.write_bytes(data)
        self.items.append((Layer(media_type, digest, len(data)), status))

    def remove(self, *media_types: str) -> None:
        self.items = [(layer, s) for layer, s in self.items if layer.media_type not in media_types]

    def of_type(self, media_type: str) -> list[Layer]:
        return [layer for layer, _ in self.items if layer.media_type == media_type]


def create_model(
    store: ModelStore,
    req: CreateRequest,
    emit: Emit,
    *,
    noprune: bool = False,
    pull: Pull | None = None,
) -> None:
    """Create ``req.name``, reporting progress through ``emit``. Raises ``OllamaError``s."""
    req.validate()
    scheme = None if req.gguf else parse_scheme(req.quantize)
    gguf_type = gguf.parse_type(req.quantize) if req.gguf else None
    if req.template:
        _check_template(req.template)
    parameters = _check_parameters(req.parameters)

    with store.pinning() as pins:
        _create(store, req, emit, _Layers(store, pins), scheme, parameters, noprune=noprune, pull=pull, gguf_type=gguf_type)
    emit({"status": "success"})


def _create(
    store: ModelStore,
    req: CreateRequest,
    emit: Emit,
    layers: _Layers,
    scheme: QuantScheme | None,
    parameters: dict[str, Any],
    *,
    noprune: bool,
    pull: Pull | None,
    gguf_type: GGUFType | None = None,
) -> None:
    kind = ""
    if req.from_:
        config = _from_model(store, req, layers, emit, pull, scheme)
    else:
        layers.pins.add(*req.files.values())  # uploaded blobs no manifest references yet
        for path, digest in req.files.items():
            if not store.blobs.exists(digest):
                raise BadRequest(f'file "{path}" has no blob: upload {digest} to /api/blobs first')
        kind = _detect_kind(store, req.files)
        if kind == "safetensors":
            config = _from_safetensors(store, req, layers, scheme)
        else:
            config = _from_gguf(store, req, layers, scheme, gguf_type)
    # Every adapter is checked against the base before the first status line (a GGUF file's base by its
    # config alone, see ``_base_config``), so a refusal is a 400, not an error line inside a 200.
    adapters = _gguf_adapters(store, req.adapters, layers) if req.gguf else None  # the GGUF LoRA layers
    peft = _checked_adapters(store, req.adapters, layers) if req.adapters and not req.gguf else []
    if kind == "safetensors":
        emit({"status": "converting model"})
    elif kind == "gguf":
        emit({"status": "parsing GGUF"})
        ensure_gguf_converted(store, layers.of_type(MediaType.MODEL)[0].digest, emit)
    if scheme is not None:
        layers.items, config = quantize_layers(store, layers.items, config, scheme, emit, layers.pins)
    if adapters is not None:
        config = _to_gguf(store, req, layers, config, gguf_type, emit)
        _store_gguf_adapters(layers, adapters)
    elif peft:
        _add_adapters(store, peft, layers, emit)

    if req.template:
        layers.remove(MediaType.TEMPLATE, MediaType.PROMPT)
        layers.new(req.template.encode(), MediaType.TEMPLATE)
    if req.system:
        layers.remove(MediaType.SYSTEM)
        layers.new(req.system.encode(), MediaType.SYSTEM)
    for text in req.license:
        if text:
            layers.new(text.encode(), MediaType.LICENSE)
    merged = _merge_parameters(store, layers.of_type(MediaType.PARAMS), parameters)
    if merged:
        layers.remove(MediaType.PARAMS)
        layers.new((go_json(merged) + "\n").encode(), MediaType.PARAMS)
    if req.messages:
        layers.remove(MediaType.MESSAGES)
        layers.new((go_json(req.messages) + "\n").encode(), MediaType.MESSAGES)

    config_bytes = config.to_bytes() + b"\n"
    with store.lock:
        config_digest = store.blobs.write_bytes(config_bytes)
        for _, status in layers.items:
            emit({"status": status})
        emit({"status": "writing manifest"})
        manifest = Manifest(
            config=Layer(MediaType.CONFIG, config_digest, len(config_bytes)),
            layers=tuple(layer for layer, _ in layers.items),
        )
        store.write_manifest(req.name, manifest, prune_old=not noprune)


# -- sources ------------------------------------------------------------------------------------------
def _from_model(
    store: ModelStore, req: CreateRequest, layers: _Layers, emit: Emit, pull: Pull | None, scheme: QuantScheme | None
) -> ConfigV2:
    source = ModelName.parse(req.from_)
    if not source.is_valid:
        raise BadRequest("invalid model name")
    if not store.exists(source):
        if pull is None:
            raise ModelNotFound(req.from_)
        pull(source, emit)
    with store.lock:  # read and pin at once: a delete of the source cannot fall in between
        model = store.get(source)
        layers.pins.add(*model.manifest.digests())
    check_quantizable(scheme, model.config.file_type)
    origin = model.name.display_shortest
    for layer in model.manifest.layers:
        layers.existing(replace(layer, from_=origin))
    return replace(model.config, capabilities=list(model.config.capabilities), extra=dict(model.config.extra))


def _from_safetensors(store: ModelStore, req: CreateRequest, layers: _Layers, scheme: QuantScheme | None) -> ConfigV2:
    from converters.hf_check import check_architecture
    from converters.hf_inspect import UnsupportedModel, inspect_hf_files

    with _materialized(store, req.files) as model_dir:
        files = {rel: model_dir / rel for rel in req.files}
        try:
            info = inspect_hf_files(files)
            check_architecture(model_dir, info)
        except UnsupportedModel as exc:
            raise BadRequest(str(exc)) from None
        if req.gguf:
            gguf.check_hf_dir(model_dir)
    check_quantizable(scheme, info.file_type)
    for rel in sorted(req.files):
        digest = req.files[rel]
        layers.existing(Layer(media_type_for(rel), digest, store.blobs.size(digest), name=rel))
    return ConfigV2(
        model_format="safetensors",
        model_family=info.family,
        model_families=[info.family],
        model_type=info.parameter_size,
        file_type=info.file_type,
        capabilities=info.capabilities,
        context_length=info.context_length,
        embedding_length=info.embedding_length,
        extra={"architectures": [info.architecture], "parameter_count": info.parameter_count},
    )


def _from_gguf(
    store: ModelStore, req: CreateRequest, layers: _Layers, scheme: QuantScheme | None, gguf_type: GGUFType | None = None
) -> ConfigV2:
    """The GGUF file's model layer and config, checked without streaming; the caller converts it after the
    adapter checks (the conversion streams progress)."""
    from converters.gguf_info import read_gguf_info

    candidates = sorted(p for p, d in req.files.items() if p.endswith(".gguf") or _is_gguf_blob(store, d))
    if len(candidates) != 1:
        raise BadRequest(f"only one GGUF file is supported per model, got {len(candidates)}")
    digest = req.files[candidates[0]]
    # Read (fast: header only) before the first status line, so a bad file is a 400, not a 200 whose
    # stream ends in an error.
    try:
        info = read_gguf_info(store.blobs.path(digest))
    except ValueError:
        raise BadRequest("supplied file was not in GGUF format") from None
    if info.general_type == "adapter":
        raise BadRequest("the GGUF file is a LoRA adapter, not a model: create the model FROM its base model "
                         "with the file as an adapter (ADAPTER in a Modelfile, \"adapters\" in /api/create)")
    if info.general_type in ("mmproj", "projector", "clip"):
        raise NotImplementedYet("GGUF vision projectors are not supported yet")
    _check_gguf_architecture(info.architecture)
    check_quantizable(scheme, info.file_type)
    gguf.check_retype(info.file_type, gguf_type)
    layers.existing(Layer(MediaType.MODEL, digest, store.blobs.size(digest)))
    return gguf.config_of_gguf(info, file_type=info.file_type, extra={"parameter_count": info.parameter_count})


def _check_gguf_architecture(architecture: str) -> None:
    """Refuse, before streaming, what Transformers' GGUF loader cannot convert."""
    from converters.gguf_to_hf import check_supported_architecture

    try:
        check_supported_architecture(architecture)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _is_gguf_blob(store: ModelStore, digest: str) -> bool:
    with store.blobs.open(digest) as f:
        return f.read(4) == b"GGUF"


# -- GGUF ---------------------------------------------------------------------------------------------
def _to_gguf(store: ModelStore, req: CreateRequest, layers: _Layers, config: ConfigV2, gguf_type: GGUFType | None, emit: Emit) -> ConfigV2:
    """The weights as one GGUF model layer (``gguf.py``), with the template, stop words and default system
    prompt Ollama would give the model unless the request or its source already sets a template."""
    from .template_match import match_template

    weights = [(layer, status) for layer, status in layers.items if layer.media_type != MediaType.ADAPTER]
    if req.from_:  # a source from files was checked before the first status line
        gguf.preflight(store, weights, config, gguf_type)
    result = gguf.make_gguf(store, weights, config, gguf_type, emit, name=req.name.display_shortest, derive=True)
    layers.pins.add(result.digest)
    hf_dir = ensure_gguf_converted(store, result.digest, emit)  # the exported file's exact inverse, or Transformers' reading
    status = "creating new layer" if result.created else "using existing layer"
    layers.remove(MediaType.MODEL, *gguf.HF_TYPES)
    layers.items.insert(0, (Layer(MediaType.MODEL, result.digest, result.size), f"{status} {result.digest}"))
    if not req.template and not layers.of_type(MediaType.TEMPLATE) and not layers.of_type(MediaType.PROMPT):
        choice = match_template(hf_dir, gguf.add_bos(store, result.digest))
        if choice is not None:
            layers.new(choice.template.encode(), MediaType.TEMPLATE, status=f"using autodetected template {choice.name}")
            if not any("stop" in _layer_json(store, layer) for layer in layers.of_type(MediaType.PARAMS)):
                layers.new((go_json({"stop": list(choice.stop)}) + "\n").encode(), MediaType.PARAMS)
            if choice.system and not req.system and not layers.of_type(MediaType.SYSTEM):
                layers.new(choice.system.encode(), MediaType.SYSTEM)
    return gguf.gguf_config(store, result, config)


def _layer_json(store: ModelStore, layer: Layer) -> dict[str, Any]:
    try:
        value = json.loads(store.blobs.read_bytes(layer.digest))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# -- adapters -----------------------------------------------------------------------------------------
def _checked_adapters(store: ModelStore, files: dict[str, str], layers: _Layers) -> list[dict[str, str | bytes]]:
    """Check each uploaded LoRA adapter against the base being built; per adapter, its PEFT files (file name ->
    blob digest, or converted bytes) for ``_add_adapters``. A unit is a directory of the ``adapters`` map:
    its ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT's format); each GGUF file (a LoRA as
    Ollama takes it) is a unit of its own, converted here once to that PEFT form. Nothing is stored here, so
    a refusal leaves nothing behind."""
    from converters.lora import UnsupportedAdapter

    units, gguf_units = _adapter_units(store, files, layers)
    checked: list[dict[str, str | bytes]] = []
    with _base_config(store, layers) as base_dir:
        for unit, unit_files in sorted(units.items()):
            label = unit or "the adapter"
            try:
                if unit in gguf_units:
                    checked.append(_converted_gguf_lora(store, unit_files[unit], base_dir))
                    continue
                checked.append(dict(_checked_peft(store, unit_files, base_dir)))
            except UnsupportedAdapter as exc:
                raise BadRequest(f"{label}: {exc}") from None
    return checked


def _checked_peft(store: ModelStore, unit_files: dict[str, str], base_dir: Path) -> dict[str, str]:
    """A PEFT adapter's files (``adapter_config.json``, ``adapter_model.safetensors``: name -> blob digest),
    checked against the base in ``base_dir`` (``UnsupportedAdapter`` naming what does not fit)."""
    from converters.lora import CONFIG, WEIGHTS, check_against_base, read_adapter

    wanted = {name: unit_files[name] for name in (CONFIG, WEIGHTS) if name in unit_files}
    with _materialized(store, wanted) as adapter_dir:
        check_against_base(read_adapter(adapter_dir), base_dir)
    return wanted


def _add_adapters(store: ModelStore, checked: list[dict[str, str | bytes]], layers: _Layers, emit: Emit) -> None:
    """Add the adapters ``_checked_adapters`` passed as ``adapter`` layers named ``adapters/<id>/<file>``
    (several ADAPTER lines stack), storing converted files now."""
    from converters.lora import WEIGHTS

    existing = {layer.name for layer in layers.of_type(MediaType.ADAPTER)}
    for adapter_files in checked:
        digests = {name: _stored(store, layers, value) for name, value in adapter_files.items()}
        adapter_id = digests[WEIGHTS].removeprefix("sha256:")[:12]
        emit({"status": f"adding adapter {adapter_id}"})
        for name, digest in digests.items():
            layer = Layer(MediaType.ADAPTER, digest, store.blobs.size(digest), name=f"adapters/{adapter_id}/{name}")
            if layer.name not in existing:
                layers.existing(layer)


def _adapter_units(store: ModelStore, files: dict[str, str], layers: _Layers) -> tuple[dict[str, dict[str, str]], set[str]]:
    """The ``adapters`` map as units (a directory's PEFT files, or one GGUF file each) and which are GGUF."""
    layers.pins.add(*files.values())
    units: dict[str, dict[str, str]] = {}
    gguf_units: set[str] = set()
    for path, digest in files.items():
        if not store.blobs.exists(digest):
            raise BadRequest(f'file "{path}" has no blob: upload {digest} to /api/blobs first')
        if path.endswith(".gguf") or _is_gguf_blob(store, digest):
            units[path] = {path: digest}
            gguf_units.add(path)
            continue
        unit, _, name = path.rpartition("/")
        units.setdefault(unit, {})[name] = digest
    return units, gguf_units


def _gguf_adapters(store: ModelStore, files: dict[str, str], layers: _Layers) -> list[str | bytes]:
    """For ``"gguf": true``: every adapter of the model being built (the source model's, then the request's)
    as a GGUF LoRA, Ollama's adapter layer: the digest of one already stored or given as a GGUF file (checked
    by converting it to the PEFT form our engine serves), or the bytes ``write_gguf_lora`` writes for a PEFT
    adapter (checked against the base first). What has no GGUF LoRA form is a 400 naming why; nothing is
    stored here."""
    from converters.gguf_export import UnsupportedExport
    from converters.lora import UnsupportedAdapter

    units, gguf_units = _adapter_units(store, files, layers)
    inherited: dict[str, dict[str, str]] = {}  # the source model's adapters, in order: id -> file -> digest
    for layer in layers.of_type(MediaType.ADAPTER):
        if not layer.name:  # already a GGUF LoRA
            inherited[layer.digest] = {"": layer.digest}
        elif layer.name.startswith("adapters/"):
            _, adapter_id, name = layer.name.split("/", 2)
            inherited.setdefault(adapter_id, {})[name] = layer.digest
    out: list[str | bytes] = []
    if not units and not inherited:
        return out
    with _base_config(store, layers) as base_dir:
        for adapter_id, unit_files in inherited.items():
            if "" in unit_files:
                out.append(unit_files[""])
                continue
            try:
                out.append(_peft_to_gguf_lora(store, unit_files, base_dir))
            except UnsupportedExport as exc:
                raise BadRequest(f"adapter {adapter_id} of the source model: {exc}") from None
        for unit, unit_files in sorted(units.items()):
            label = unit or "the adapter"
            try:
                if unit in gguf_units:
                    _converted_gguf_lora(store, unit_files[unit], base_dir)
                    out.append(unit_files[unit])
                    continue
                out.append(_peft_to_gguf_lora(store, _checked_peft(store, unit_files, base_dir), base_dir))
            except (UnsupportedAdapter, UnsupportedExport) as exc:
                raise BadRequest(f"{label}: {exc}") from None
    return out


def _peft_to_gguf_lora(store: ModelStore, files: dict[str, str], base_dir: Path) -> bytes:
    """The GGUF LoRA file ``write_gguf_lora`` writes for the stored PEFT adapter ``files`` on ``base_dir``."""
    from converters.gguf_export.lora import write_gguf_lora

    with _materialized(store, files) as adapter_dir:
        return write_gguf_lora(adapter_dir, base_dir, adapter_dir / "adapter.gguf").read_bytes()


def _store_gguf_adapters(layers: _Layers, adapters: list[str | bytes]) -> None:
    """Replace the model's adapter layers by ``adapters`` (``_gguf_adapters``), one unnamed GGUF LoRA layer
    each, as Ollama stores ``ADAPTER x.gguf``; the same file twice is one layer."""
    layers.remove(MediaType.ADAPTER)
    seen: set[str] = set()
    for value in adapters:
        if isinstance(value, bytes):
            digest = "sha256:" + hashlib.sha256(value).hexdigest()
            if digest not in seen:
                layers.new(value, MediaType.ADAPTER)
        else:
            digest = value
            if digest not in seen:
                layers.existing(Layer(MediaType.ADAPTER, digest, layers.store.blobs.size(digest)))
        seen.add(digest)


def _converted_gguf_lora(store: ModelStore, digest: str, base_dir: Path) -> dict[str, str | bytes]:
    """The PEFT files of the GGUF LoRA in blob ``digest`` for the base in ``base_dir``, checked against it
    (``UnsupportedAdapter`` naming what cannot be represented); nothing is stored yet."""
    from converters.gguf_lora import gguf_lora_to_peft
    from converters.lora import check_against_base, read_adapter

    root = store.root / "ollama-torch" / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gguf-lora-", dir=root) as tmp:
        out = gguf_lora_to_peft(store.blobs.path(digest), base_dir, Path(tmp) / "peft")
        check_against_base(read_adapter(out), base_dir)
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _stored(store: ModelStore, layers: _Layers, value: str | bytes) -> str:
    """The digest of an uploaded blob, or of converted bytes written as a blob now (and pinned)."""
    if isinstance(value, str):
        return value
    digest = "sha256:" + hashlib.sha256(value).hexdigest()
    layers.pins.add(digest)  # before it exists: a concurrent prune must not take it
    store.blobs.write_bytes(value)
    return digest


@contextmanager
def _base_config(store: ModelStore, layers: _Layers) -> Iterator[Path]:
    """A directory holding the config.json of the base the manifest being built runs (for the adapter
    checks): the Safetensors layers' own, or a GGUF's (``_gguf_config``)."""
    gguf = layers.of_type(MediaType.MODEL)
    if gguf:
        with _gguf_config(store, gguf[0].digest) as directory:
            yield directory
        return
    config = [layer for layer in layers.of_type(MediaType.JSON) if layer.name == "config.json"]
    if not config:
        raise BadRequest("adapters need a base model: the model has no weights to apply them to")
    with _materialized(store, {"config.json": config[0].digest}) as directory:
        yield directory


@contextmanager
def _gguf_config(store: ModelStore, digest: str) -> Iterator[Path]:
    """The GGUF's conversion when it was converted already, else the same config.json written from the
    file's metadata alone: the adapter checks run before the first status line, and the conversion streams
    progress and can take minutes."""
    from converters.gguf_to_hf import write_hf_config

    converted = store.derived_dir(digest)
    if (converted / "config.json").is_file():
        yield converted
        return
    root = store.root / "ollama-torch" / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gguf-config-", dir=root) as tmp:
        try:
            directory = write_hf_config(store.blobs.path(digest), Path(tmp))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        yield directory


# -- checks ---------------------------------------------------------------------------------------------
def _check_template(template: str) -> None:
    from ..templates import TemplateError
    from ..templates.ollama import OllamaTemplate

    try:
        OllamaTemplate.parse(template)
    except TemplateError as exc:
        raise BadRequest(f"template error: {exc}") from None


def _check_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters become the model's option defaults, so a known option must have its type now (a value
    every later request would trip over is refused here); unknown names are kept, as Ollama's API does,
    and ignored with a warning when the model runs."""
    from ..options_schema import OPTIONS, coerce_option

    checked: dict[str, Any] = {}
    for key, value in parameters.items():
        if key in OPTIONS and value is not None:
            try:
                value = coerce_option(key, value)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        elif isinstance(value, dict):
            raise BadRequest(f"invalid value for parameter {key!r}")
        checked[key] = value
    return checked


def _merge_parameters(store: ModelStore, existing: list[Layer], parameters: dict[str, Any]) -> dict[str, Any]:
    merged = dict(parameters)
    for layer in existing:
        try:
            inherited = json.loads(store.blobs.read_bytes(layer.digest))
        except ValueError:
            continue
        if isinstance(inherited, dict):
            for key, value in inherited.items():
                merged.setdefault(key, value)
    return merged


class _materialized:
    """A temp directory of symlinks (relative path -> blob), as Ollama builds for conversion."""

    def __init__(self, store: ModelStore, files: dict[str, str]) -> None:
        self.store = store
        self.files = files
        self.dir: Path | None = None

    def __enter__(self) -> Path:
        root = self.store.root / "ollama-torch" / "tmp"
        root.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="create-", dir=root))
        for rel, digest in self.files.items():
            target = self.dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(self.store.blobs.path(digest))
        return self.dir

    def __exit__(self, *exc: object) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
