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

from .api import JsonObject, TokenLogprob


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


def entry(token_bytes: TokenBytes, token: int, logprob: float, top: tuple[TokenLogprob, ...] = ()) -> TokenLogprob:
    raw = token_bytes(token)
    return TokenLogprob(raw.decode("utf-8", errors="replace"), logprob, tuple(raw), top)


def batch_logprobs(raw: torch.Tensor, chosen: torch.Tensor, top: int) -> torch.Tensor:
    """For rows of raw logits ``raw`` [n, V] and the tokens ``chosen`` [n] from them: one float64 tensor
    [n, 1 + 2 * top] holding each chosen token's log-probability, then the ``top`` best log-probabilities and
    their ids (exact in float64), so the host reads everything in one transfer with the chosen ids."""
    logp = torch.log_softmax(raw.float(), dim=-1)  # [n, V]
    parts = [logp.gather(-1, chosen[:, None])]
    if top > 0:
        values, ids = torch.topk(logp, min(top, logp.shape[-1]), dim=-1)
        parts += [values, ids.to(logp.dtype)]
    return torch.cat([p.double() for p in parts], dim=-1)


def entry_from_row(row: list[float], token: int, top: int, token_bytes: TokenBytes) -> TokenLogprob:
    """One response entry from a row of :func:`batch_logprobs` (read back as floats) for ``token``, with the
    request's own ``top`` alternatives (at most as many as the row holds)."""
    alternatives: tuple[TokenLogprob, ...] = ()
    if top > 0:
        width = (len(row) - 1) // 2
        values, ids = row[1 : 1 + width], row[1 + width :]
        alternatives = tuple(entry(token_bytes, int(i), v) for v, i in zip(values[:top], ids[:top], strict=True))
    return entry(token_bytes, token, row[0], alternatives)


def token_logprobs(logits: torch.Tensor, token: int, top: int, token_bytes: TokenBytes) -> JsonObject:
    """The entry for ``token`` sampled from one row of raw ``logits`` [V], with the ``top`` best alternatives,
    as Ollama's JSON has it."""
    chosen = torch.tensor([token], device=logits.device)
    row = batch_logprobs(logits[None], chosen, top)[0].tolist()
    return entry_from_row(row, token, top, token_bytes).as_json()
