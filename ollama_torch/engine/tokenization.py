"""The model's tokenizer, for clients that tokenize as the server does (``/tokenize``, ``/detokenize``,
``/tokenizer_info``: what lm-evaluation-harness's remote tokenizer reads, in vLLM's shapes).

It is the tokenizer of the loaded runner, the one generations use, so a token-id prompt built from these
ids runs exactly those ids. Functions of a loaded model; the engine front runs them on a thread.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequest
from .api import TokenizeCall, Tokenized, TokenizerInfo
from .loader import LoadedModel


def tokenize(loaded: LoadedModel, call: TokenizeCall) -> Tokenized:
    tok = loaded.tokenizer
    ids = [int(t) for t in tok.encode(call.text, add_special_tokens=call.add_special_tokens)]
    pieces = tuple(str(p) for p in tok.convert_ids_to_tokens(ids)) if call.pieces else ()
    return Tokenized(tuple(ids), loaded.context_length, pieces)


def detokenize(loaded: LoadedModel, tokens: tuple[int, ...]) -> str:
    vocab = loaded.vocab_size
    bad = next((t for t in tokens if not 0 <= t < vocab), None)
    if bad is not None:
        raise BadRequest(f"invalid tokens: token id {bad} is outside the model's vocabulary (0..{vocab - 1})")
    return str(loaded.tokenizer.decode(list(tokens), skip_special_tokens=False, clean_up_tokenization_spaces=False))


def info(loaded: LoadedModel) -> TokenizerInfo:
    tok = loaded.tokenizer
    template = getattr(loaded.processor, "chat_template", None) or getattr(tok, "chat_template", None)
    return TokenizerInfo(
        tokenizer_class=type(tok).__name__,
        bos_token=_special(tok, "bos_token"),
        eos_token=_special(tok, "eos_token"),
        pad_token=_special(tok, "pad_token"),
        unk_token=_special(tok, "unk_token"),
        add_bos_token=_adds_bos(tok),
        context_length=loaded.context_length,
        chat_template=template if isinstance(template, str) and template else None,
    )


def _special(tok: Any, name: str) -> str | None:
    value = getattr(tok, name, None)
    return str(value) if value is not None else None


def _adds_bos(tok: Any) -> bool:
    """Whether encoding with special tokens puts BOS first, as measured (the flag is not kept uniformly
    across tokenizer classes)."""
    bos = getattr(tok, "bos_token_id", None)
    if bos is None:
        return False
    ids = tok.encode("a", add_special_tokens=True)
    return bool(ids) and ids[0] == bos
