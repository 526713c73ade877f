"""A Hugging Face tokenizer as GGUF tokenizer metadata, or an ``UnsupportedExport`` naming what llama.cpp
would tokenize differently.

Three tokenizer models, as llama.cpp knows them:

- ``gpt2``: byte-level BPE from ``tokenizer.json`` (tokens, merges). llama.cpp splits text with a fixed
  regex per *pre-tokenizer name* (``tokenizer.ggml.pre``), so the name is decided here from the structure of
  the tokenizer's own ``pre_tokenizer`` (its split regexes and digit rules), never guessed: a pre-tokenizer
  outside the known recipes is refused rather than written as ``default``, which splits differently.
- ``llama``: SentencePiece from ``tokenizer.model`` (pieces, scores, piece types, ``add_dummy_prefix``).
- ``bert``: WordPiece, in llama.cpp's phantom-space form (``##ing`` -> ``ing``, ``word`` -> ``▁word``).

Special tokens are the tokenizer's own (BOS/EOS/UNK/PAD/SEP/MASK ids, plus an end-of-turn id when the
generation config ends on another token); whether BOS/EOS/SEP are added is read off the tokenizer's
behaviour (encode a word, look at the ends), so it is what our engine does. Added tokens are ``CONTROL``
when special, ``USER_DEFINED`` otherwise; rows of the embedding beyond the tokenizer are ``[PAD<id>]``
(``UNUSED``), as llama.cpp requires one token per row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UnsupportedExport

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The split regexes of the tokenizers llama.cpp has a pre-tokenizer for (as tokenizer.json writes them).
_GPT2 = "gpt2"  # ByteLevel(use_regex=True): GPT-2's own split
_DIGITS = "digits"  # Digits(individual_digits=True)
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# recipe -> (pre name when the decoder cleans up spaces, pre name when it does not)
_PRE_NAMES: dict[tuple[str, ...], tuple[str, str]] = {
    (_GPT2,): ("gpt-2", "gpt-2"),
    (_DIGITS, _GPT2): ("refact", "smollm"),  # StarCoder/Granite and SmolLM split digits one by one
    ("split:" + _LLAMA3_REGEX,): ("llama-bpe", "llama-bpe"),
    ("split:" + _QWEN2_REGEX,): ("qwen2", "qwen2"),
}


@dataclass
class Vocab:
    """What goes under ``tokenizer.*`` in the GGUF."""

    model: str  # "gpt2" | "llama" | "bert"
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special_ids: dict[str, int] = field(default_factory=dict)  # bos/eos/unk/pad/sep/mask/eot -> id
    add_bos: bool = False
    add_eos: bool = False
    add_sep: bool | None = None
    add_space_prefix: bool | None = None
    remove_extra_whitespaces: bool | None = None
    lowercase: bool | None = None
    strip_accents: bool | None = None
    chat_template: str | None = None
    token_type_count: int | None = None

    def write(self, writer: Any) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges:
            writer.add_token_merges(self.merges)
        for kind, token_id in self.special_ids.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.add_sep is not None:
            writer.add_add_sep_token(self.add_sep)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.remove_extra_whitespaces is not None:
            writer.add_remove_extra_whitespaces(self.remove_extra_whitespaces)
        if self.lowercase is not None:
            writer.add_bool("tokenizer.ggml.normalizer.lowercase", self.lowercase)
        if self.strip_accents is not None:
            writer.add_bool("tokenizer.ggml.normalizer.strip_accents", self.strip_accents)
        if self.token_type_count is not None:
            writer.add_token_type_count(self.token_type_count)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def read_vocab(model_dir: Path, n_rows: int, config: Any) -> Vocab:
    """The tokenizer of ``model_dir`` for a model whose embedding has ``n_rows`` rows."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    tokenizer_json = _json(model_dir / "tokenizer.json")
    try:
        hf = AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:
        raise UnsupportedExport(f"cannot load the tokenizer: {exc}") from None
    kind = (tokenizer_json.get("model") or {}).get("type") if tokenizer_json else None
    if (model_dir / "tokenizer.model").is_file() and kind != "WordPiece":
        vocab = _sentencepiece(model_dir / "tokenizer.model", hf, tokenizer_json)
    elif kind == "BPE" and not tokenizer_json["model"].get("byte_fallback"):
        vocab = _byte_bpe(tokenizer_json, hf)
    elif kind == "BPE":
        raise UnsupportedExport(
            "a SentencePiece-style BPE tokenizer (byte fallback) needs its tokenizer.model for GGUF export"
        )
    elif kind == "WordPiece":
        vocab = _wordpiece(tokenizer_json, hf, config)
    else:
        raise UnsupportedExport(f"tokenizer model {kind or 'unknown'!r} cannot be exported to GGUF")
    _pad(vocab, n_rows)
    _special(vocab, hf, model_dir)
    template = hf.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    vocab.chat_template = template if isinstance(template, str) and template else None
    return vocab


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


# -- byte-level BPE -----------------------------------------------------------------------------------
def pre_tokenizer_recipe(tokenizer_json: dict[str, Any]) -> tuple[str, ...]:
    """The splits a ``tokenizer.json`` pre-tokenizer applies, in order (``("digits", "gpt2")``)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    items = (pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre] if pre else []
    recipe: list[str] = []
    for item in items:
        kind = item.get("type")
        if kind == "ByteLevel":
            if item.get("add_prefix_space"):
                raise UnsupportedExport("a byte-level pre-tokenizer that adds a prefix space is not supported by llama.cpp")
            if item.get("use_regex", True):
                recipe.append(_GPT2)
        elif kind == "Digits" and item.get("individual_digits"):
            recipe.append(_DIGITS)
        elif kind == "Split" and item.get("behavior") == "Isolated" and not item.get("invert"):
            regex = (item.get("pattern") or {}).get("Regex")
            if not isinstance(regex, str):
                raise UnsupportedExport(f"pre-tokenizer split on a plain string {item.get('pattern')!r} is not supported")
            recipe.append("split:" + regex)
        else:
            raise UnsupportedExport(f"pre-tokenizer {json.dumps(item)[:200]} has no llama.cpp counterpart")
    return tuple(recipe)


def pre_tokenizer_name(tokenizer_json: dict[str, Any], clean_spaces: bool) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for this byte-level BPE tokenizer; ``UnsupportedExport`` if none
    splits text the same way."""
    normalizer = tokenizer_json.get("normalizer")
    if normalizer and normalizer.get("type") != "NFC":  # NFC: Qwen's; llama.cpp leaves text as given
        raise UnsupportedExport(f"tokenizer normalizer {normalizer.get('type')!r} has no llama.cpp counterpart")
    recipe = pre_tokenizer_recipe(tokenizer_json)
    names = _PRE_NAMES.get(recipe)
    if names is None:
        shown = ", ".join(r.removeprefix("split:") for r in recipe) or "none"
        raise UnsupportedExport(f"unknown BPE pre-tokenizer (splits: {shown}): llama.cpp would split text differently")
    return names[0] if clean_spaces else names[1]


def _byte_bpe(tokenizer_json: dict[str, Any], hf: Any) -> Vocab:
    model = tokenizer_json["model"]
    if (tokenizer_json.get("decoder") or {}).get("type") != "ByteLevel":
        raise UnsupportedExport("a BPE tokenizer without a byte-level decoder is not supported")
    by_id: dict[int, str] = {int(i): tok for tok, i in model["vocab"].items()}
    types = dict.fromkeys(by_id, NORMAL)
    for added in tokenizer_json.get("added_tokens") or []:
        by_id[int(added["id"])] = added["content"]
        types[int(added["id"])] = CONTROL if added.get("special") else USER_DEFINED
    tokens, token_types = _dense(by_id, types)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    clean = bool(getattr(hf, "clean_up_tokenization_spaces", False))
    return Vocab("gpt2", pre_tokenizer_name(tokenizer_json, clean), tokens, token_types, merges=merges)


def _dense(by_id: dict[int, str], types: dict[int, int]) -> tuple[list[str], list[int]]:
    n = max(by_id) + 1 if by_id else 0
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(n)]
    return tokens, [types.get(i, UNUSED) for i in range(n)]


# -- SentencePiece ------------------------------------------------------------------------------------
def _sentencepiece(path: Path, hf: Any, tokenizer_json: dict[str, Any]) -> Vocab:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
    proto.ParseFromString(path.read_bytes())
    if proto.trainer_spec.model_type not in (1, 2):  # UNIGRAM, BPE: llama.cpp's SPM tokenizer
        raise UnsupportedExport(f"SentencePiece model type {proto.trainer_spec.model_type} is not supported")
    rule = proto.normalizer_spec.name
    if rule not in ("identity", ""):
        raise UnsupportedExport(f"SentencePiece normalization {rule!r} is not applied by llama.cpp's tokenizer")
    by_id = {i: p.piece for i, p in enumerate(proto.pieces)}
    types = {i: int(p.type) for i, p in enumerate(proto.pieces)}
    scores = {i: float(p.score) for i, p in enumerate(proto.pieces)}
    base = len(by_id)
    for added in tokenizer_json.get("added_tokens") or []:
        i, content = int(added["id"]), added["content"]
        if i < base and by_id[i] != content:
            raise UnsupportedExport(f"added token {content!r} replaces SentencePiece piece {by_id[i]!r} at {i}")
        by_id[i] = content
        if i >= base:
            types[i] = CONTROL if added.get("special") else USER_DEFINED
        elif added.get("special") and types[i] not in (UNKNOWN, BYTE):
            types[i] = CONTROL
        scores.setdefault(i, -1000.0)
    tokens, token_types = _dense(by_id, types)
    return Vocab(
        "llama", "default", tokens, token_types, scores=[scores.get(i, -1000.0) for i in range(len(tokens))],
        add_space_prefix=_prepends_space(hf),
        remove_extra_whitespaces=bool(proto.normalizer_spec.remove_extra_whitespaces),
    )


def _prepends_space(hf: Any) -> bool:
    """Whether the tokenizer writes a word-boundary marker before the first word (SentencePiece's dummy
    prefix), as it behaves, which is what llama.cpp's ``add_space_prefix`` must say."""
    pieces = hf.tokenize("Hello")
    return bool(pieces) and pieces[0].startswith("\u2581")


# -- WordPiece ----------------------------------------------------------------------------------------
def _wordpiece(tokenizer_json: dict[str, Any], hf: Any, config: Any) -> Vocab:
    normalizer = tokenizer_json.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        raise UnsupportedExport(f"WordPiece normalizer {normalizer.get('type')!r} has no llama.cpp counterpart")
    by_id = {int(i): tok for tok, i in tokenizer_json["model"]["vocab"].items()}
    special = set(hf.all_special_ids)
    for added in tokenizer_json.get("added_tokens") or []:
        by_id[int(added["id"])] = added["content"]
        if added.get("special"):
            special.add(int(added["id"]))
    types = {i: CONTROL if i in special else NORMAL for i in by_id}
    tokens, token_types = _dense(by_id, types)
    phantom = [
        tok if kind in (CONTROL, UNUSED) else tok[2:] if tok.startswith("##") else "\u2581" + tok
        for tok, kind in zip(tokens, token_types, strict=True)
    ]
    lowercase = bool(normalizer.get("lowercase", True))
    strip = normalizer.get("strip_accents")
    return Vocab(
        "bert", "default", phantom, token_types, lowercase=lowercase,
        strip_accents=lowercase if strip is None else bool(strip),
        token_type_count=int(getattr(config, "type_vocab_size", 1) or 1),
    )


# -- shared -------------------------------------------------------------------------------------------
def _pad(vocab: Vocab, n_rows: int) -> None:
    n = len(vocab.tokens)
    if n > n_rows:
        raise UnsupportedExport(f"the tokenizer has {n} tokens but the embedding only {n_rows} rows")
    for i in range(n, n_rows):
        vocab.tokens.append(f"[PAD{i}]")
        vocab.types.append(UNUSED)
        if vocab.scores is not None:
            vocab.scores.append(-1000.0)


def _special(vocab: Vocab, hf: Any, model_dir: Path) -> None:
    """Special ids (only those inside the vocabulary), and BOS/EOS/SEP addition as the tokenizer does it."""
    n = len(vocab.tokens)
    ids: dict[str, int | None] = {
        "bos": hf.bos_token_id if vocab.model != "bert" else hf.cls_token_id,
        "eos": hf.eos_token_id,
        "unk": hf.unk_token_id,
        "pad": hf.pad_token_id,
        "sep": hf.sep_token_id,
        "mask": hf.mask_token_id,
    }
    eos = _generation_eos(model_dir)
    if ids["eos"] is None and eos:
        ids["eos"] = eos[0]
    other = [i for i in eos if i != ids["eos"]]
    if other:
        ids["eot"] = other[0]  # the chat turn's end, when the tokenizer's EOS is the document's end
    vocab.special_ids = {k: int(v) for k, v in ids.items() if isinstance(v, int) and 0 <= v < n}
    encoded = list(hf("Hello world").input_ids)
    first, last = (encoded[0], encoded[-1]) if encoded else (None, None)
    vocab.add_bos = ids["bos"] is not None and first == ids["bos"]
    if vocab.model == "bert":
        vocab.add_sep = ids["sep"] is not None and last == ids["sep"]
        vocab.add_eos = False
    else:
        vocab.add_eos = ids["eos"] is not None and last == ids["eos"] and len(encoded) > 1


def _generation_eos(model_dir: Path) -> list[int]:
    value = _json(model_dir / "generation_config.json").get("eos_token_id")
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return []
