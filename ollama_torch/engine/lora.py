"""LoRA adapters on a loaded base model, several at once, each batch row with its own (PEFT's mixed-adapter
batches, done here so it works over our packed and quantized linears too).

Every module an adapter targets gets one :class:`LoraHost`, whose forward becomes the module's own (an instance
attribute: the module stays where it is in the model, so a compiled decode step, which reads each weight by its
path in the module tree, still runs for rows without adapters): ``y = base(x) + sum over the row's adapters of
B(A(x)) * scaling``, computed as PEFT computes it (the adapter weights kept in float32 and the input cast to them,
the sum cast back to the base's output dtype). Which rows use which adapters is a
:class:`Routing` set around each forward by the thread running it (a thread-local, so the generation worker
and an embedder thread on the same weights never see each other's): for each adapter key, the batch
positions (a device index tensor) it applies to. No routing, no adapter: the base model as it was.

:class:`AdapterRegistry` loads adapters on first use and, beyond a bound, evicts the least recently used
one that no request holds (``acquire``/``release`` count the requests using each); a stored model's
adapters are its :class:`AdapterRef`s.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from converters.common import directory_lock
from converters.lora import read_adapter, strip_prefix

from ..store import Layer, MediaType, ModelStore, StoredModel

log = logging.getLogger(__name__)
_local = threading.local()
MAX_LOADED = 8  # adapters kept loaded per base model beyond those in use


@dataclass(frozen=True)
class AdapterRef:
    """One stored adapter: ``key`` (its weights' digest) and the directory holding its files."""

    key: str
    directory: Path


class Routing:
    """For one forward of ``size`` batch rows: adapter key -> the positions it applies to ([n] long, on the
    model's device)."""

    def __init__(self, size: int, rows: dict[str, torch.Tensor]) -> None:
        self.size, self.rows = size, rows


def current_routing() -> Routing | None:
    routing: Routing | None = getattr(_local, "routing", None)
    return routing


@contextmanager
def routed(adapter_sets: Sequence[tuple[str, ...]], device: torch.device) -> Iterator[None]:
    """Route a forward whose batch position ``i`` uses the adapters ``adapter_sets[i]`` (empty: the base)."""
    positions: dict[str, list[int]] = {}
    for i, keys in enumerate(adapter_sets):
        for key in keys:
            positions.setdefault(key, []).append(i)
    if not positions:
        yield
        return
    previous = current_routing()
    _local.routing = Routing(len(adapter_sets), {k: torch.tensor(v, dtype=torch.long).to(device) for k, v in positions.items()})
    try:
        yield
    finally:
        _local.routing = previous


class LoraHost:
    """The adapters of a module some adapter targets: set as that module's forward (``host_of``), its own output
    plus each routed adapter's low-rank update. (Put in the module's place in the tree, as it was, it broke the
    compiled decode step of every later request: the step's code reads ``q_proj._parameters['weight']`` and the
    like, and a wrapper has none, so the worker decoded eager from then on.)"""

    def __init__(self, base: nn.Module) -> None:
        self.base = base
        self.lora: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]] = {}
        self._own_forward = base.forward
        base.__dict__["forward"] = self.forward  # the instance's own: nn.Module's call finds it before the class's
        base.__dict__["_lora_host"] = self

    @staticmethod
    def host_of(base: nn.Module) -> LoraHost:
        """``base``'s host, made (and set as its forward) on first use."""
        host = base.__dict__.get("_lora_host")
        return host if isinstance(host, LoraHost) else LoraHost(base)

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        out: torch.Tensor = self._own_forward(x, *args, **kwargs)
        routing = current_routing()
        if routing is None or not self.lora:
            return out
        if x.shape[0] != routing.size:  # a module that flattens the batch (e.g. MoE experts) cannot be routed by row
            raise RuntimeError(f"LoRA on a module whose input is not batch-first ({list(x.shape)} for {routing.size} rows)")
        result = out.float() if any(k in self.lora for k in routing.rows) else out
        for key, rows in routing.rows.items():
            weights = self.lora.get(key)
            if weights is None:
                continue
            a, b, bias, scaling = weights  # a: [r, in], b: [out, r] (float32)
            xs = x.index_select(0, rows).to(a.dtype)  # [n, ..., in]
            delta = nn.functional.linear(nn.functional.linear(xs, a), b, bias) * scaling  # [n, ..., out]
            result.index_add_(0, rows, delta)
        return result.to(out.dtype)


class AdapterRegistry:
    """The adapters loaded on one base model (at most ``max_loaded``, least recently used evicted)."""

    def __init__(self, model: nn.Module, device: torch.device, max_loaded: int = MAX_LOADED) -> None:
        self.model, self.device, self.max_loaded = model, device, max_loaded
        self.loaded: OrderedDict[str, list[str]] = OrderedDict()  # key -> the modules it adapts
        self.users: Counter[str] = Counter()  # key -> requests holding it
        self._hosts: dict[str, LoraHost] = {}
        self._lock = threading.Lock()

    def acquire(self, refs: Sequence[AdapterRef]) -> float:
        """Hold the adapters of ``refs`` for one request, loading those not loaded yet (then evicting the
        least recently used ones nobody holds, beyond ``max_loaded``). Returns the seconds spent loading."""
        started = time.perf_counter()
        loaded_any = False
        with self._lock:
            for ref in refs:
                if ref.key in self.loaded:
                    self.loaded.move_to_end(ref.key)
                else:
                    self._load(ref)
                    loaded_any = True
                self.users[ref.key] += 1
            idle = [k for k in self.loaded if not self.users[k]]
            while len(self.loaded) > self.max_loaded and idle:
                self._evict(idle.pop(0))
        return time.perf_counter() - started if loaded_any else 0.0

    def release(self, refs: Sequence[AdapterRef]) -> None:
        with self._lock:
            for ref in refs:
                self.users[ref.key] -= 1
                if self.users[ref.key] <= 0:
                    del self.users[ref.key]

    def _load(self, ref: AdapterRef) -> None:
        from safetensors.torch import load_file

        adapter = read_adapter(ref.directory)
        tensors = load_file(str(ref.directory / "adapter_model.safetensors"), device="cpu")
        by_module: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in tensors.items():
            stem = strip_prefix(name)
            for part in ("lora_A.weight", "lora_B.weight", "lora_B.bias"):
                if stem.endswith("." + part):
                    by_module.setdefault(stem[: -len(part) - 1], {})[part] = tensor
        modules = []
        for lora in adapter.modules:
            host = self._host(lora.module)
            weights = by_module[lora.module]
            device = _module_device(host.base, self.device)
            a = weights["lora_A.weight"].to(device=device, dtype=torch.float32)
            b = weights["lora_B.weight"].to(device=device, dtype=torch.float32)
            bias = weights.get("lora_B.bias")
            host.lora[ref.key] = (a, b, bias.to(device=device, dtype=torch.float32) if bias is not None else None, lora.scaling)
            modules.append(lora.module)
        self.loaded[ref.key] = modules
        log.info("adapter %s loaded: %d modules", ref.key[:19], len(modules))

    def _evict(self, key: str) -> None:
        for module in self.loaded.pop(key, []):
            host = self._hosts.get(module)
            if host is not None:
                host.lora.pop(key, None)
        log.info("adapter %s evicted", key[:19])

    def _host(self, module: str) -> LoraHost:
        host = self._hosts.get(module)
        if host is None:
            host = self._hosts[module] = LoraHost.host_of(self.model.get_submodule(module))
        return host


def _module_device(module: nn.Module, default: torch.device) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return default


def adapter_refs(store: ModelStore, model: StoredModel) -> tuple[AdapterRef, ...]:
    """``model``'s adapters as directories the registry reads: for PEFT files, symlinks to the stored blobs,
    made once in the adapter weights' derived directory (removed with the blob); for a GGUF LoRA layer, its
    PEFT form for this base (``gguf_adapter_dir``)."""
    refs = []
    for adapter in model.adapters:
        if adapter.gguf:
            refs.append(AdapterRef(adapter.key, gguf_adapter_dir(store, model, adapter.key)))
            continue
        directory = store.derived_dir(adapter.key)
        if not (directory / "adapter_model.safetensors").exists():
            directory.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))
            for name, layer in adapter.files.items():
                (tmp / name).symlink_to(model.blob_path(layer))
            try:
                os.replace(tmp, directory)
            except OSError:  # made meanwhile by another request
                shutil.rmtree(tmp, ignore_errors=True)
        refs.append(AdapterRef(adapter.key, directory))
    return tuple(refs)


def gguf_adapter_dir(store: ModelStore, model: StoredModel, digest: str) -> Path:
    """The PEFT form of the GGUF LoRA in blob ``digest`` for ``model``'s base (``gguf_lora_to_peft``),
    converted once and kept in the LoRA blob's derived directory, one per base: the mapping back to the base's
    modules (names, the q/k row order) depends on the base. A LoRA that cannot be represented is a 400."""
    from converters.gguf_lora import gguf_lora_to_peft
    from converters.lora import UnsupportedAdapter

    from ..errors import BadRequest

    base = model.gguf_layer or model.hf_files.get("config.json")
    if base is None:
        raise BadRequest(f"{model.name.display_shortest} has no weights to apply its adapters to")
    out = store.derived_dir(digest) / f"peft-{base.digest.removeprefix('sha256:')[:16]}"
    with directory_lock(out):  # one adapter digest on one base: converted once, other adapters in parallel
        if (out / "adapter_model.safetensors").is_file():
            return out
        log.info("converting the GGUF LoRA %s for %s", digest[:19], model.name.display_shortest)
        with _base_config_dir(store, model, base) as base_dir:
            try:
                return gguf_lora_to_peft(store.blobs.path(digest), base_dir, out)
            except UnsupportedAdapter as exc:
                raise BadRequest(f"adapter {digest.removeprefix('sha256:')[:12]}: {exc}") from None


@contextmanager
def _base_config_dir(store: ModelStore, model: StoredModel, base: Layer) -> Iterator[Path]:
    """A directory with the base's config.json: a GGUF's conversion (made when the model loaded), or the
    stored config.json linked into a temporary directory."""
    if base.media_type == MediaType.MODEL:
        from converters.gguf_to_hf import converted

        yield converted(store.blobs.path(base.digest), store.derived_dir(base.digest))[0]
        return
    root = store.root / "ollama-torch" / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="lora-base-", dir=root))
    try:
        (directory / "config.json").symlink_to(model.blob_path(base))
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)

