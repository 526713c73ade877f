"""Log probabilities of generated tokens (``logprobs`` / ``top_logprobs`` on /api/generate and /api/chat).

As Ollama reports them (llama.cpp's ``n_probs``): the log-softmax of the model's raw logits, before penalties,
temperature, truncation or a grammar mask, so a value says what the model itself thought of the token. Each
entry names the token by its text and by its exact bytes: a byte-level BPE token can hold part of a UTF-8
character, whose text alone (with U+FFFD) would lose it.
"""

from __future__ import annotations

import functools
from typing import Any

import torch


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable character standing for each byte -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class TokenBytes:
    """Token id -> the bytes it stands for, per tokenizer family; cached, as a generation asks for the same
    few thousand ids over and over."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.byte_level = self._is_byte_level(tokenizer)
        self.special = set(getattr(tokenizer, "all_special_ids", ()) or ())
        self._cache: dict[int, bytes] = {}

    @staticmethod
    def _is_byte_level(tokenizer: Any) -> bool:
        backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
        decoder = getattr(backend, "decoder", None)
        return decoder is not None and "ByteLevel" in repr(decoder)

    def __call__(self, token: int) -> bytes:
        cached = self._cache.get(token)
        if cached is None:
            cached = self._cache[token] = self._bytes(token)
        return cached

    def _bytes(self, token: int) -> bytes:
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if isinstance(piece, str) and token not in self.special:
            if self.byte_level:
                table = _byte_decoder()
                if all(ch in table for ch in piece):
                    return bytes(table[ch] for ch in piece)
            elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):  # SentencePiece byte fallback
                try:
                    return bytes([int(piece[3:5], 16)])
                except ValueError:
                    pass
            elif "▁" in piece:  # SentencePiece marks spaces with U+2581
                return piece.replace("▁", " ").encode()
        text = self.tokenizer.decode([token], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return str(text).encode()


def entry(token_bytes: TokenBytes, token: int, logprob: float) -> dict[str, Any]:
    raw = token_bytes(token)
    out: dict[str, Any] = {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob}
    if raw:
        out["bytes"] = list(raw)
    return out


def token_logprobs(logits: torch.Tensor, token: int, top: int, token_bytes: TokenBytes) -> dict[str, Any]:
    """The entry for ``token`` sampled from ``logits`` [V] (raw), with the ``top`` most likely alternatives."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    out = entry(token_bytes, token, float(logp[token]))
    if top > 0:
        values, ids = torch.topk(logp, min(top, logp.shape[-1]))
        out["top_logprobs"] = [entry(token_bytes, int(i), float(v)) for v, i in zip(values.tolist(), ids.tolist(), strict=True)]
    return out
