"""GGUF -> Hugging Face directory: the Safetensors model the engine serves for a GGUF layer.

Owns turning one GGUF file into a directory that ``AutoModelForCausalLM`` (``AutoModel`` for embedding
models) and ``AutoTokenizer`` load with no GGUF involved: ``config.json``, ``model.safetensors`` (or
shards plus ``model.safetensors.index.json``), the tokenizer files with the GGUF chat template inside
``tokenizer_config.json``, and ``generation_config.json``.

Tensors go through the machinery Transformers' own GGUF loader uses for these architectures (the ``gguf``
package's ``dequantize``, then Transformers' per-architecture ``TensorProcessor`` and GGUF -> HF name map),
one tensor at a time, so the weights are the ones ``from_pretrained(gguf_file=...)`` would hold, while
memory stays at one shard plus one tensor. Every GGUF tensor must land on exactly one parameter of the
right shape and every parameter must be filled (tied ones excepted); anything else is a ``ValueError``
naming the tensor, never a silently half-initialised model.

The directory is built next to ``out_dir`` and renamed into place at the end, so an exception, including
one raised by ``progress`` (how a cancelled request stops the work), leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import directory_lock
from .gguf_data import TensorData, gguf_tensors
from .gguf_info import GGUFInfo, read_gguf_info

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
MAX_SHARD_BYTES = 1 << 30

# GGUF architecture names Transformers' GGUF loader knows under another name (load_gguf_checkpoint).
_TRANSFORMERS_ARCH = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
    "t5encoder": "t5",
}
# Tensors llama.cpp precomputes from the config (rope frequency factors); Transformers derives them itself.
_DERIVED = re.compile(r"^rope_(freqs|factors_long|factors_short)\.weight$|\.attn_rot_embd(\.weight)?$")
_BLOCK = re.compile(r"^blk\.(\d+)\.")


def convert_gguf_to_hf(
    gguf_path: Path,
    out_dir: Path,
    progress: Progress | None = None,
    *,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> None:
    """Write the Hugging Face form of ``gguf_path`` to ``out_dir`` (which must not exist, or be empty).

    ``progress(done, total)`` is called at the start, after the config and tokenizer are written, after
    each GGUF tensor, and at the end (``done == total``); the unit is steps (tensors + 2). Quantized
    sources are written as float32 (their dequantized values); F16 and BF16 sources keep their type.
    Raises ``ValueError`` for a file that is not GGUF, an architecture Transformers cannot load from GGUF
    (``unsupported architecture "xyz" in GGUF``) or tensors that do not fit the model.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    info = read_gguf_info(gguf_path)
    check_supported_architecture(info.architecture)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        _convert_into(gguf_path, info, tmp, progress or _no_progress, max_shard_bytes)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def converted(gguf_path: Path, out_dir: Path, progress: Progress | None = None) -> tuple[Path, bool]:
    """``out_dir`` holding the Hugging Face form of ``gguf_path``, converted now unless a conversion is
    already there; concurrent callers for one ``out_dir`` wait for a single conversion. Returns the
    directory and whether it was converted by this call (``progress`` is only called then). The
    conversion is complete once ``out_dir`` exists (it is renamed into place at the end)."""
    out_dir = Path(out_dir)
    with directory_lock(out_dir):
        if (out_dir / "config.json").is_file():
            return out_dir, False
        convert_gguf_to_hf(gguf_path, out_dir, progress)
        return out_dir, True


def _no_progress(done: int, total: int) -> None:
    pass


def check_supported_architecture(arch: str) -> None:
    """Raise ``ValueError`` (``unsupported architecture "x" in GGUF``) unless Transformers can convert it."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    name = _TRANSFORMERS_ARCH.get(arch, arch)
    if name in GGUF_SUPPORTED_ARCHITECTURES and name not in ("general", "tokenizer"):
        return
    try:
        from transformers.integrations.gguf import is_gguf_arch_supported
    except ImportError:  # Transformers before its packed GGUF path
        packed_only = False
    else:
        packed_only = is_gguf_arch_supported(arch)
    if packed_only:
        raise ValueError(
            f'unsupported architecture "{arch}" in GGUF: Transformers loads it only with its weights kept '
            "packed, which cannot be converted to Safetensors"
        )
    raise ValueError(f'unsupported architecture "{arch}" in GGUF')


def _target_dtype(file_type: str) -> torch.dtype:
    import torch

    return {"F16": torch.float16, "BF16": torch.bfloat16}.get(file_type, torch.float32)


def _convert_into(
    gguf_path: Path, info: GGUFInfo, tmp: Path, progress: Progress, max_shard_bytes: int
) -> None:
    from transformers import AutoTokenizer

    tensors = gguf_tensors(gguf_path, info)  # memory-mapped: tensor data is read one tensor at a time below
    total = len(tensors) + 2
    progress(0, total)

    parsed, config, model = _hf_config(gguf_path, info)
    config.save_pretrained(tmp)
    with _parsed_once(gguf_path, parsed):
        _write_tokenizer(AutoTokenizer, gguf_path, info, tmp)
    if "embedding" not in info.capabilities:
        _write_generation_config(info.metadata, tmp)
    progress(1, total)

    _write_weights(tensors, info.architecture, parsed, model, _target_dtype(info.file_type), tmp, max_shard_bytes, progress, total)
    progress(total, total)


_SWAPS = threading.RLock()  # re-entrant: the swaps can nest


@contextlib.contextmanager
def _swapped(module: Any, name: str, wrap: Callable[[Any], Any]) -> Iterator[None]:
    """``module.name`` replaced by ``wrap(module.name)`` inside the block, put back at the end. For module
    attributes that Transformers looks up at each call; the lock keeps concurrent conversions from
    interleaving the swaps (each is held about a second)."""
    with _SWAPS:
        original = getattr(module, name)
        setattr(module, name, wrap(original))
        try:
            yield
        finally:
            setattr(module, name, original)


def _parsed_once(gguf_path: Path, parsed: dict[str, Any]) -> contextlib.AbstractContextManager[None]:
    """Inside the block, ``load_gguf_checkpoint(gguf_path)`` without tensors (what ``AutoTokenizer`` calls for
    the config of most architectures) returns a copy of ``parsed``, the parse this conversion made, instead of
    parsing the whole header again with ``gguf.GGUFReader`` (4.3 s of SmolLM2's 25 s conversion). Other
    files and calls go through unchanged. ``parsed`` must not change while the block runs."""
    import transformers.modeling_gguf_pytorch_utils as hf_gguf

    target = os.path.realpath(gguf_path)

    def wrap(load: Callable[..., Any]) -> Callable[..., Any]:
        def load_once(path: Any, return_tensors: bool = False, **kwargs: Any) -> Any:
            if not return_tensors and not any(kwargs.values()) and os.path.realpath(path) == target:
                return copy.deepcopy(parsed)  # a copy per call: the caller may change it
            return load(path, return_tensors, **kwargs)

        return load_once

    return _swapped(hf_gguf, "load_gguf_checkpoint", wrap)


def _one_name_map() -> contextlib.AbstractContextManager[None]:
    """Inside the block, ``gguf.get_tensor_name_map`` builds one map per (architecture, block count).
    Transformers' GGUF -> HF name mapping asks for it once per submodule of the model: 397 times for SmolLM2,
    5.6 s of its conversion."""
    import gguf

    return _swapped(gguf, "get_tensor_name_map", functools.cache)


def write_hf_config(gguf_path: Path, out_dir: Path) -> Path:
    """Only the ``config.json`` ``convert_gguf_to_hf`` writes for ``gguf_path``, from its metadata (no tensor
    is read): what checking a LoRA adapter against the base needs, before the conversion, which can take
    minutes, has run. Same ``ValueError``s as the conversion for an architecture it cannot convert."""
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    info = read_gguf_info(gguf_path)
    check_supported_architecture(info.architecture)
    _hf_config(gguf_path, info)[1].save_pretrained(out_dir)
    return out_dir


def _hf_config(gguf_path: Path, info: GGUFInfo) -> tuple[dict[str, Any], Any, Any]:
    """(Transformers' parse of the GGUF, the Hugging Face config written for it, the model on the meta
    device: names, shapes and tied keys only, no memory)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    # The same config Transformers builds for `from_pretrained(gguf_file=...)` on these architectures.
    parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=False)
    config = CONFIG_MAPPING[parsed["config"]["model_type"]].from_dict(dict(parsed["config"]))
    embedding = "embedding" in info.capabilities
    auto = AutoModel if embedding else AutoModelForCausalLM
    if type(config) not in auto._model_mapping:
        kind = "an embedding" if embedding else "a text-generation"
        raise ValueError(
            f'unsupported architecture "{info.architecture}" in GGUF: not {kind} model in Transformers'
        )
    with torch.device("meta"):
        model = auto.from_config(config)

    config.architectures = [type(model).__name__]
    config.dtype = _target_dtype(info.file_type)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return parsed, config, model


def _write_tokenizer(auto_tokenizer: Any, gguf_path: Path, info: GGUFInfo, tmp: Path) -> None:
    tokenizer = auto_tokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    if info.chat_template:
        tokenizer.chat_template = info.chat_template
    # The template inside tokenizer_config.json rather than chat_template.jinja: every reader knows that.
    tokenizer.save_pretrained(tmp, save_jinja_files=False)


def _write_generation_config(metadata: dict[str, Any], tmp: Path) -> None:
    """bos/eos/pad from the GGUF; llama.cpp's end-of-turn/end-of-message tokens also end generation."""
    from transformers import GenerationConfig

    def token(key: str) -> int | None:
        v = metadata.get(f"tokenizer.ggml.{key}_token_id")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    eos = list(dict.fromkeys(t for t in (token("eos"), token("eot"), token("eom")) if t is not None))
    kwargs: dict[str, Any] = {"bos_token_id": token("bos"), "pad_token_id": token("padding")}
    if eos:
        kwargs["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    GenerationConfig(**{k: v for k, v in kwargs.items() if v is not None}).save_pretrained(tmp)


def _write_weights(
    tensors: list[TensorData],
    arch: str,
    parsed: dict[str, Any],
    model: Any,
    dtype: torch.dtype,
    tmp: Path,
    max_shard_bytes: int,
    progress: Progress,
    total: int,
) -> None:
    import numpy as np
    import torch
    from gguf import dequantize
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    cls = type(model).__name__
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    tied = model.get_expanded_tied_weights_keys(all_submodels=True)  # target -> source
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=parsed["config"])
    with _one_name_map():
        name_map = get_gguf_hf_weights_map(model, processor)
    # Processors that merge or split tensors (MoE experts, GPT-2's head) leave their results here.
    side: dict[str, torch.Tensor] = {}
    parsed["tensors"] = side
    writer = _ShardWriter(tmp, max_shard_bytes)

    def add(hf_name: str, tensor: torch.Tensor, source: str) -> None:
        if hf_name not in expected:
            raise ValueError(f"GGUF tensor {source!r} maps to {hf_name!r}, which {cls} does not have")
        if hf_name in writer.names:
            raise ValueError(f"GGUF tensor {source!r} maps to {hf_name!r}, which was already written")
        if tuple(tensor.shape) != expected[hf_name]:
            raise ValueError(
                f"GGUF tensor {source!r} has shape {list(tensor.shape)} as {hf_name!r}; "
                f"{cls} expects {list(expected[hf_name])}"
            )
        writer.add(hf_name, tensor.to(dtype).contiguous())

    def flush_side(source: str) -> None:
        for hf_name, tensor in side.items():
            add(hf_name, tensor, source)
        side.clear()

    block: str | None = None
    last = ""
    for i, t in enumerate(tensors):
        m = _BLOCK.match(t.name)
        if (m.group(1) if m else None) != block:
            flush_side(last)  # a block's merged experts are complete once the next block starts
            block = m.group(1) if m else None
        weights = dequantize(t.data, t.tensor_type)
        result = processor.process(
            weights=weights, name=t.name, tensor_key_mapping=name_map, parsed_parameters=parsed
        )
        if result.name is None:
            pass  # went to `side`
        elif result.name in name_map:
            add(name_map[result.name], torch.from_numpy(np.copy(result.weights)), t.name)
        elif _DERIVED.search(t.name):
            log.info("skipping %s: Transformers derives it from the config", t.name)
        else:
            raise ValueError(f"GGUF tensor {t.name!r} has no counterpart in {cls}")
        del weights, result
        last = t.name
        progress(2 + i, total)
    flush_side(last)

    filled = writer.names | {target for target, source in tied.items() if source in writer.names}
    missing = sorted(set(expected) - filled)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"the GGUF file has no tensor for {cls}'s {', '.join(missing[:5])}{more}")
    writer.finish()


class _ShardWriter:
    """Safetensors shards of at most ``max_bytes`` (a bigger tensor gets a shard of its own), renamed to
    Transformers' ``model-0000i-of-0000n.safetensors`` with an index at the end, or ``model.safetensors``
    when one shard holds everything."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.names: set[str] = set()
        self.total_bytes = 0
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[str, list[str]]] = []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_bytes:
            self._flush()
        self._pending[name] = tensor
        self._pending_bytes += size
        self.total_bytes += size
        self.names.add(name)

    def _flush(self) -> None:
        from safetensors.torch import save_file

        fname = f".shard-{len(self._shards) + 1:05d}.safetensors"
        save_file(self._pending, str(self.root / fname), metadata={"format": "pt"})
        self._shards.append((fname, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def finish(self) -> None:
        if self._pending or not self._shards:
            self._flush()
        n = len(self._shards)
        if n == 1:
            os.replace(self.root / self._shards[0][0], self.root / "model.safetensors")
            return
        weight_map: dict[str, str] = {}
        for i, (fname, names) in enumerate(self._shards, 1):
            final = f"model-{i:05d}-of-{n:05d}.safetensors"
            os.replace(self.root / fname, self.root / final)
            weight_map.update(dict.fromkeys(names, final))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
