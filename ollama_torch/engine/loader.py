"""Load a stored model into memory: device and dtype policy, the Transformers class for its kind, its
tokenizer (and processor for vision models). No per-architecture code: whatever the Auto classes build."""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from converters.hf_inspect import fim_tokens_of
from converters.int4 import stored_layout

from ..errors import BadRequest, InternalError
from ..settings import Settings
from ..store import ModelStore, StoredModel
from .cache import BatchKVCache
from .grammar.compiler import GrammarCompiler
from .lora import AdapterRegistry
from .quantized import (
    bfloat16_is_native,
    cast_unquantized,
    compute_dtype,
    int4_checkpoint,
    int4_native_available,
    prepare_for_cpu,
    quantize_head_for_cpu,
    resident_bytes,
    stored_dtype,
    swap_int4_for_cpu,
)

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32, "f32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "f16": torch.float16, "fp16": torch.float16,
}


def pick_device(settings: Settings) -> torch.device:
    if settings.device:
        return torch.device(settings.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(settings: Settings, device: torch.device) -> torch.dtype:
    """bf16 on CUDA (fp16 where bf16 is unsupported); float32 on CPU, which here decodes as fast as bf16
    and, unlike bf16, holds up when other processes compete for the cores."""
    if settings.dtype:
        if settings.dtype.lower() not in _DTYPES:
            raise InternalError(f"OLLAMA_TORCH_DTYPE must be one of float32, bfloat16, float16; got {settings.dtype!r}")
        return _DTYPES[settings.dtype.lower()]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@dataclass
class LoadedModel:
    name: str
    model: Any
    tokenizer: Any
    kind: str  # "causal" | "vision" | "embedding" | "rerank"
    device: torch.device
    dtype: torch.dtype
    eos_ids: frozenset[int]
    pad_token_id: int
    vocab_size: int
    context_length: int
    batchable: bool
    size_bytes: int
    model_dir: Path
    processor: Any = None
    cleanup: Callable[[], None] = field(default=lambda: None, repr=False)
    _grammar: GrammarCompiler | None = field(default=None, repr=False)
    _grammar_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _adapters: AdapterRegistry | None = field(default=None, repr=False)

    @functools.cached_property
    def fim(self) -> tuple[str, str, str] | None:
        """The fill-in-the-middle tokens (prefix, suffix, middle) of the model's vocabulary, if it has them."""
        return fim_tokens_of(set(self.tokenizer.get_vocab()))

    def adapters(self) -> AdapterRegistry:
        """The LoRA adapters loaded on these weights (made on first use; shared by the model's threads)."""
        with self._grammar_lock:
            if self._adapters is None:
                self._adapters = AdapterRegistry(self.model, self.device)
            return self._adapters

    def grammar_compiler(self) -> GrammarCompiler:
        """The model's structured-output compiler, built on first use (wrapping the tokenizer takes ~0.5 s);
        ``ValueError`` for a tokenizer llguidance cannot read (a slow, Python one)."""
        with self._grammar_lock:
            if self._grammar is None:
                self._grammar = GrammarCompiler(self.tokenizer, self.logits_width, sorted(self.eos_ids))
            return self._grammar

    def new_batch_cache(self, max_rows: int) -> BatchKVCache:
        cfg = self.model.config.get_text_config()
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        layers = cfg.num_hidden_layers
        return BatchKVCache(layers, max_rows, kv_heads, head_dim, self.dtype, self.device,
                            layer_devices=layer_devices(self.model, layers, self.device))

    @property
    def logits_device(self) -> torch.device:
        """Where the logits come out: the output head's device (the last GPU of a device map)."""
        head = self.model.get_output_embeddings()
        weight = getattr(head, "weight", None)
        return weight.device if isinstance(weight, torch.Tensor) and weight.device.type != "meta" else self.device

    @property
    def logits_width(self) -> int:
        """The width of the model's logits: the output head's (often padded past the tokenizer's size), read
        from the module so that packed or quantized heads work too; ``config.vocab_size`` when it has none."""
        head = self.model.get_output_embeddings()
        width = getattr(head, "out_features", None) or getattr(getattr(head, "weight", None), "shape", (0,))[0]
        if not width:
            width = getattr(self.model.config.get_text_config(), "vocab_size", 0)
        return max(int(width or 0), int(self.vocab_size))

    @property
    def size_vram(self) -> int:
        return self.size_bytes if self.device.type == "cuda" else 0


def model_directory(stored: StoredModel, store: ModelStore) -> tuple[Path, Callable[[], None]]:
    """A Hugging Face directory for the model: the GGUF's cached conversion (made now for a model an
    Ollama created), or a directory of symlinks to the stored files (removed again when the model unloads)."""
    gguf = stored.gguf_layer
    if gguf is not None:
        from converters.gguf_to_hf import converted

        try:
            return converted(store.blobs.path(gguf.digest), store.derived_dir(gguf.digest))[0], lambda: None
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    files = stored.hf_files
    if not files:
        raise BadRequest(f"{stored.name.display_shortest} has no weights to load")
    root = store.root / "ollama-torch" / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="load-", dir=root))
    for rel, layer in files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(stored.blob_path(layer))
    return directory, lambda: shutil.rmtree(directory, ignore_errors=True)


def layer_devices(model: Any, num_layers: int, default: torch.device) -> list[torch.device]:
    """The device of each decoder layer's attention (Transformers' attention modules carry ``layer_idx``),
    so each layer's KV cache sits where its keys are computed; ``default`` for any not found."""
    found: dict[int, torch.device] = {}
    for module in model.modules():
        idx = getattr(module, "layer_idx", None)
        if isinstance(idx, int) and 0 <= idx < num_layers and idx not in found:
            param = next(module.parameters(recurse=True), None)
            if param is not None and param.device.type != "meta":
                found[idx] = param.device
    return [found.get(i, default) for i in range(num_layers)]


def _batchable(config: Any) -> bool:
    """Whether our column-aligned batch cache reproduces the model's attention exactly: plain causal
    attention in every layer (no sliding window, no recurrent/linear-attention layers)."""
    text = config.get_text_config()
    layer_types = getattr(text, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        return False
    window = getattr(text, "sliding_window", None)
    if window and getattr(text, "use_sliding_window", True):
        return False
    return not getattr(text, "is_encoder_decoder", False)


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _kind(caps: tuple[str, ...]) -> str:
    """Which Transformers head the stored capabilities ask for."""
    if "rerank" in caps:
        return "rerank"
    if "embedding" in caps and "completion" not in caps:
        return "embedding"
    return "vision" if "vision" in caps else "causal"


def load_model(stored: StoredModel, settings: Settings, store: ModelStore) -> LoadedModel:
    import transformers

    transformers.utils.logging.disable_progress_bar()  # the server's log is not a terminal
    # Transformers 5.x deprecates the ``past_key_values`` argument the engine passes, for ``cache``, and warns
    # again and again in the server's log; it is ours to act on, not a user's (pyproject keeps Transformers
    # below 5.40, which removes it).
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
    caps = stored.capabilities
    kind = _kind(caps)
    device = pick_device(settings)
    dtype = pick_dtype(settings, device)
    quantized_dtype = stored_dtype(stored)  # weights quantized at create time load in their stored dtype
    widened = False  # their unquantized layers cast to float32 (see ``bfloat16_is_native``)
    if quantized_dtype is not None and not settings.dtype:
        dtype = quantized_dtype
        if device.type == "cpu" and dtype == torch.bfloat16 and not bfloat16_is_native():
            dtype, widened = torch.float32, True
    directory, cleanup = model_directory(stored, store)
    try:
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
        if device.type == "cuda":
            kwargs["device_map"] = "auto" if settings.device in ("", "cuda") else str(device)
        kwargs["attn_implementation"] = "sdpa"
        processor = None
        if kind == "embedding":
            auto: Any = transformers.AutoModel
        elif kind == "rerank":  # a cross-encoder: the classifier head gives each (query, document) pair its logit
            auto = transformers.AutoModelForSequenceClassification
        elif kind == "vision":
            auto = transformers.AutoModelForImageTextToText
            processor = transformers.AutoProcessor.from_pretrained(str(directory), local_files_only=True)
        else:
            auto = transformers.AutoModelForCausalLM
        # 4-bit layers keep the stored layout where our kernel runs them (swapped below)
        own_int4 = device.type == "cpu" and int4_checkpoint(directory) and int4_native_available()
        with stored_layout() if own_int4 else contextlib.nullcontext():
            try:
                model = auto.from_pretrained(str(directory), **kwargs)
            except (ValueError, TypeError) as exc:
                if "attn_implementation" in str(exc) or "sdpa" in str(exc).lower():
                    kwargs.pop("attn_implementation")
                    model = auto.from_pretrained(str(directory), **kwargs)
                else:
                    raise
        if device.type != "cuda":
            model = model.to(device)
        model.eval()
        if device.type == "cpu" and quantized_dtype is not None and prepare_for_cpu(model):
            log.info("8-bit layers of %s run by PyTorch's weight-only int8 kernel", stored.name.display_shortest)
        if own_int4 and swap_int4_for_cpu(model):
            log.info("4-bit layers of %s run by our int4 kernel", stored.name.display_shortest)
        if quantized_dtype is not None and (settings.dtype or widened):  # the unquantized layers' dtype
            cast_unquantized(model, dtype)
        if device.type == "cpu" and quantized_dtype is not None and quantize_head_for_cpu(model, float32=widened):
            log.info("output head of %s quantized to 8 bits for the int8 kernel", stored.name.display_shortest)
        dtype = compute_dtype(model, dtype)
        tokenizer = processor.tokenizer if processor is not None else transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception:
        cleanup()
        raise
    text_cfg = model.config.get_text_config()
    size = resident_bytes(model)
    eos = _eos_ids(model, tokenizer) if kind not in ("embedding", "rerank") else frozenset()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (min(eos) if eos else 0)
    ctx = int(getattr(text_cfg, "max_position_embeddings", 0) or stored.config.context_length or 0)
    log.info("loaded %s: %s on %s (%s), %.1f MiB", stored.name.display_shortest, type(model).__name__, device, str(dtype).removeprefix("torch."), size / 2**20)
    return LoadedModel(
        name=stored.name.display_shortest,
        model=model,
        tokenizer=tokenizer,
        kind=kind,
        device=device,
        dtype=dtype,
        eos_ids=eos,
        pad_token_id=int(pad),
        vocab_size=len(tokenizer),
        context_length=ctx,
        batchable=kind == "causal" and _batchable(model.config),
        size_bytes=size,
        model_dir=directory,
        processor=processor,
        cleanup=cleanup,
    )
