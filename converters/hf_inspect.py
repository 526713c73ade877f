"""Inspect a Hugging Face model directory before it is stored: architecture, size, dtype, capabilities.

Reads only ``config.json``, tokenizer metadata and Safetensors *headers* (never tensor data), then checks
the architecture by building the config with Transformers (``hf_check``): anything ``AutoConfig`` cannot
build or whose ``architectures[0]`` Transformers does not provide is refused with ``unsupported
architecture "X"``, before a single byte is copied.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chat_template import jinja_template_capabilities
from .common import human_number

SAFETENSORS_DTYPES = {
    "F64": ("F64", 8),
    "F32": ("F32", 4),
    "F16": ("F16", 2),
    "BF16": ("BF16", 2),
    "I64": ("I64", 8),
    "I32": ("I32", 4),
    "I16": ("I16", 2),
    "I8": ("I8", 1),
    "U8": ("U8", 1),
    "BOOL": ("BOOL", 1),
    "F8_E4M3": ("F8_E4M3", 1),
    "F8_E5M2": ("F8_E5M2", 1),
}
FIM_TOKENS = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<PRE>", "<SUF>", "<MID>"),
    ("<|fim▁begin|>", "<|fim▁hole|>", "<|fim▁end|>"),
)
GENERATIVE_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# Tensors a quantizer stores beside a quantized weight (bitsandbytes state, int4 scales and mins): not parameters.
_QUANT_STATE = re.compile(r"\.(absmax|quant_map|nested_absmax|nested_quant_map|quant_state\.bitsandbytes__\w+|SCB|weight_format|scales|mins)$")


class UnsupportedModel(ValueError):
    """The directory cannot be served: the message says why (shown to the client as a 400)."""


@dataclass
class HFModelInfo:
    config: dict[str, Any]
    architecture: str
    family: str
    parameter_count: int
    file_type: str  # dominant floating dtype of the weights: "F32", "BF16", "F16"
    context_length: int
    embedding_length: int
    capabilities: list[str]
    chat_template: str | None
    fim_tokens: tuple[str, str, str] | None = None
    tensors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def parameter_size(self) -> str:
        return human_number(self.parameter_count)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a Safetensors file (tensor name -> dtype, shape, offsets)."""
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise UnsupportedModel(f"{path.name} is not a Safetensors file")
        (length,) = struct.unpack("<Q", raw_len)
        if length > 100 * 1024 * 1024:
            raise UnsupportedModel(f"{path.name} is not a Safetensors file")
        try:
            header = json.loads(f.read(length))
        except ValueError:
            raise UnsupportedModel(f"{path.name} is not a Safetensors file") from None
    if not isinstance(header, dict):
        raise UnsupportedModel(f"{path.name} is not a Safetensors file")
    header.pop("__metadata__", None)
    return header


def _read_json(path: Path | None) -> Any:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def chat_template_of(files: dict[str, Path]) -> str | None:
    """The model's own Jinja chat template: chat_template.jinja, chat_template.json or tokenizer_config."""
    if "chat_template.jinja" in files:
        return files["chat_template.jinja"].read_text(encoding="utf-8")
    data = _read_json(files.get("chat_template.json"))
    if isinstance(data, dict) and isinstance(data.get("chat_template"), str):
        return str(data["chat_template"])
    tok_cfg = _read_json(files.get("tokenizer_config.json"))
    if isinstance(tok_cfg, dict):
        template = tok_cfg.get("chat_template")
        if isinstance(template, str):
            return template
        if isinstance(template, list):  # [{"name": "default", "template": "..."}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            chosen = named.get("default") or next(iter(named.values()), None)
            return chosen if isinstance(chosen, str) else None
    return None


def fim_tokens_of(vocab: set[str]) -> tuple[str, str, str] | None:
    for triple in FIM_TOKENS:
        if all(t in vocab for t in triple):
            return triple
    return None


def _tokenizer_vocab(files: dict[str, Path]) -> set[str]:
    vocab: set[str] = set()
    tok = _read_json(files.get("tokenizer.json"))
    if isinstance(tok, dict):
        for added in tok.get("added_tokens") or []:
            if isinstance(added, dict) and isinstance(added.get("content"), str):
                vocab.add(added["content"])
        model_vocab = (tok.get("model") or {}).get("vocab")
        if isinstance(model_vocab, dict):
            vocab.update(k for k in model_vocab if k.startswith("<"))
    tok_cfg = _read_json(files.get("tokenizer_config.json"))
    if isinstance(tok_cfg, dict):
        for added in (tok_cfg.get("added_tokens_decoder") or {}).values():
            if isinstance(added, dict) and isinstance(added.get("content"), str):
                vocab.add(added["content"])
    return vocab


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, dict) else {}


def _config_int(config: dict[str, Any], *keys: str) -> int:
    for source in (_text_config(config), config):
        for key in keys:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return 0


def num_labels(config: dict[str, Any]) -> int:
    """The classifier's outputs: ``num_labels``, else the size of ``id2label``, else Transformers' default 2."""
    value = config.get("num_labels")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    labels = config.get("id2label")
    return len(labels) if isinstance(labels, dict) and labels else 2


def is_cross_encoder(config: dict[str, Any], files: dict[str, Path]) -> bool:
    """A reranker as sentence-transformers' ``CrossEncoder`` runs one: a ``*ForSequenceClassification`` with
    one label, scoring a (query, document) pair. Saved as a plain Transformers directory (how the hub's
    cross-encoders ship), or by sentence-transformers as a ``CrossEncoder`` whose modules.json holds only the
    Transformer; a modules.json with other modules (pooling, dense heads) makes a different model."""
    archs = config.get("architectures") or []
    if not (archs and str(archs[0]).endswith("ForSequenceClassification") and num_labels(config) == 1):
        return False
    if "modules.json" not in files:
        return True
    modules = _read_json(files["modules.json"])
    st_config = _read_json(files.get("config_sentence_transformers.json"))
    return (
        isinstance(st_config, dict) and st_config.get("model_type") == "CrossEncoder"
        and isinstance(modules, list) and len(modules) == 1 and isinstance(modules[0], dict)
        and str(modules[0].get("type", "")).rsplit(".", 1)[-1] == "Transformer"  # its head: the model's classifier
    )


def family_of(config: dict[str, Any]) -> str:
    """Ollama's rule (x/server/show.go): ``model_type``, else the lower-cased class name minus its head."""
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type:
        return model_type
    archs = config.get("architectures") or [""]
    arch = str(archs[0]).lower()
    return re.sub(r"(forcausallm|forconditionalgeneration)$", "", arch)


def inspect_hf_files(files: dict[str, Path]) -> HFModelInfo:
    """Inspect a directory given as relative path -> local file. Raises ``UnsupportedModel``."""
    config = _read_json(files.get("config.json"))
    if not isinstance(config, dict):
        raise UnsupportedModel("config.json not found or not valid JSON in the model files")
    archs = config.get("architectures") or []
    arch = str(archs[0]) if archs else ""
    weights = sorted(p for p in files if p.endswith(".safetensors"))
    if not weights:
        raise UnsupportedModel("no .safetensors weight files in the model files")

    params = 0
    dtype_bytes: Counter[str] = Counter()
    tensors: list[dict[str, Any]] = []
    quantization = config.get("quantization_config")
    for rel in weights:
        header = read_safetensors_header(files[rel])
        for name, meta in header.items():
            if quantization and _QUANT_STATE.search(name):
                continue
            dtype = str(meta.get("dtype", ""))
            shape = [int(d) for d in meta.get("shape", [])]
            count = 1
            for d in shape:
                count *= d
            if quantization and dtype == "U8" and (name.endswith(".qweight") or any(k.startswith(f"{name}.quant_state.") for k in header)):
                count *= 2  # 4-bit (bitsandbytes or int4): two weights per byte
            params += count
            label, width = SAFETENSORS_DTYPES.get(dtype, (dtype, 1))
            dtype_bytes[label] += count * width
            tensors.append({"name": name, "type": label, "shape": shape})
    floats = {k: v for k, v in dtype_bytes.items() if k in {"F32", "F16", "BF16", "F64"}}
    file_type = max(floats, key=lambda k: floats[k]) if floats else (max(dtype_bytes, key=lambda k: dtype_bytes[k]) if dtype_bytes else "unknown")
    if isinstance(quantization, dict):
        file_type = quantized_file_type(quantization)

    chat_template = chat_template_of(files)
    vocab = _tokenizer_vocab(files)
    fim = fim_tokens_of(vocab)
    generative = arch.endswith(GENERATIVE_SUFFIXES)
    sentence_transformers = "modules.json" in files
    caps: list[str] = []
    if is_cross_encoder(config, files):
        caps.append("rerank")
    elif generative and not sentence_transformers:
        caps.append("completion")
        if chat_template:
            caps += sorted(jinja_template_capabilities(chat_template))
        if fim:
            caps.append("insert")
    else:
        caps.append("embedding")
    if isinstance(config.get("vision_config"), dict) and generative:
        caps.append("vision")

    return HFModelInfo(
        config=config,
        architecture=arch,
        family=family_of(config),
        parameter_count=params,
        file_type=file_type,
        context_length=_config_int(config, "max_position_embeddings", "n_positions", "max_seq_len", "seq_length"),
        embedding_length=_config_int(config, "hidden_size", "n_embd", "d_model"),
        capabilities=caps,
        chat_template=chat_template,
        fim_tokens=fim if generative else None,
        tensors=tensors,
    )


def quantized_file_type(quantization: dict[str, Any]) -> str:
    """``file_type`` of a checkpoint saved quantized (``quantization_config`` in config.json): never one
    of the float types, so it is never quantized again."""
    method = str(quantization.get("quant_method") or "")
    if method == "bitsandbytes":
        if quantization.get("load_in_4bit"):
            return str(quantization.get("bnb_4bit_quant_type") or "nf4").upper()
        return "INT8"
    if method == "ollama_int4":
        return "INT4"
    return method.upper() or "QUANTIZED"


def show_model_info(info: HFModelInfo) -> dict[str, Any]:
    """``model_info`` for /api/show, with the keys Ollama's Safetensors path uses (x/server/show.go)."""
    arch = info.family
    cfg = info.config
    out: dict[str, Any] = {"general.architecture": arch}
    pairs = (
        ("context_length", info.context_length),
        ("embedding_length", info.embedding_length),
        ("block_count", _config_int(cfg, "num_hidden_layers", "n_layer", "num_layers")),
        ("attention.head_count", _config_int(cfg, "num_attention_heads", "n_head")),
        ("attention.head_count_kv", _config_int(cfg, "num_key_value_heads")),
        ("feed_forward_length", _config_int(cfg, "intermediate_size", "n_inner")),
        ("vocab_size", _config_int(cfg, "vocab_size")),
    )
    for key, value in pairs:
        if value:
            out[f"{arch}.{key}"] = value
    if info.parameter_count:
        out["general.parameter_count"] = info.parameter_count
    return out
