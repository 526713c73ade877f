"""Logprob entries: exact token bytes for byte-level BPE and SentencePiece byte-fallback vocabularies, and the
values and alternatives taken from raw logits."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from ollama_torch.engine.logprobs import TokenBytes, token_logprobs
from tests.tiny_models import chat_tokenizer

TEXTS = ["Hello world", "héllo wörld ünïcode", "emoji 😀 and 日本語", "  two spaces\nnew line", "<|im_end|> special"]


@pytest.fixture(scope="module")
def byte_level() -> Any:
    return chat_tokenizer(512)


def sentencepiece_like() -> Any:
    """A Llama-2-style tokenizer: ``▁`` for spaces, ``<0xNN>`` byte fallback for anything else."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), "▁", "▁he", "llo", "▁w", "orld", "h", "e", "l", "o"]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_byte_level_pieces_are_the_exact_bytes(byte_level: Any) -> None:
    tb = TokenBytes(byte_level)
    assert tb.byte_level
    for text in TEXTS:
        ids = byte_level.encode(text, add_special_tokens=False)
        assert b"".join(tb(i) for i in ids) == text.encode(), text
    # a token holding half of a character: its bytes stay exact, its text shows the replacement character
    ids = byte_level.encode("😀", add_special_tokens=False)
    assert len(ids) > 1 and any("\ufffd" in tb(i).decode("utf-8", errors="replace") for i in ids)


def test_sentencepiece_byte_fallback_pieces() -> None:
    tok = sentencepiece_like()
    tb = TokenBytes(tok)
    assert not tb.byte_level
    ids = tok.encode("hello wörld", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids).count("<0xC3>") == 1  # ö falls back to its two bytes
    assert b"".join(tb(i) for i in ids) == b" hello w\xc3\xb6rld"  # the leading space is SentencePiece's own


def test_values_and_alternatives(byte_level: Any) -> None:
    tb = TokenBytes(byte_level)
    logits = torch.tensor([0.0, 2.0, 1.0, -1.0] + [-30.0] * 252)
    entry = token_logprobs(logits, 2, 2, tb)
    logp = torch.log_softmax(logits, -1)
    assert math.isclose(entry["logprob"], float(logp[2]), rel_tol=1e-6)
    assert entry["bytes"] == list(tb(2)) and entry["token"] == tb(2).decode("utf-8", errors="replace")
    assert [t["logprob"] for t in entry["top_logprobs"]] == pytest.approx([float(logp[1]), float(logp[2])])
    assert "top_logprobs" not in token_logprobs(logits, 2, 0, tb)
    special = byte_level.convert_tokens_to_ids("<|im_end|>")
    assert TokenBytes(byte_level)(special) == b"<|im_end|>"
