"""llama.cpp itself, for tests of GGUF files: load a file the way Ollama's runner does and read its logits,
embeddings and tokens.

llama-cpp-python is a test-only dependency (``make test`` builds it once, see the Makefile). Without it these
tests skip, unless ``OLLAMA_TORCH_REQUIRE_LLAMA_CPP=1`` (set by ``make test``) makes that a failure.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

_LOG_CALLBACK: Any = None  # kept alive: llama.cpp calls it for as long as the library is loaded


def llama_cpp() -> Any:
    """The ``llama_cpp`` module with its logging silenced; skips (or fails, when required) without it."""
    global _LOG_CALLBACK
    try:
        import llama_cpp as module
    except ImportError as exc:
        if os.environ.get("OLLAMA_TORCH_REQUIRE_LLAMA_CPP") == "1":
            pytest.fail(f"llama-cpp-python is required here (make test installs it): {exc}")
        pytest.skip(f"llama-cpp-python is not installed: {exc}")
    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = module.llama_log_callback(lambda level, text, data: None)
        module.llama_log_set(_LOG_CALLBACK, None)
    return module


def load(path: Path, n_ctx: int = 512, **kwargs: Any) -> Any:
    """A ``llama_cpp.Llama`` over ``path`` (all logits kept unless ``embedding=True``)."""
    module = llama_cpp()
    if not kwargs.get("embedding"):
        kwargs.setdefault("logits_all", True)
    return module.Llama(str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=2, verbose=False, **kwargs)


def logits(llm: Any, ids: list[int]) -> np.ndarray:
    """Teacher-forced logits for ``ids`` from a fresh context: ``[len(ids), n_vocab]``."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def tokenize(llm: Any, text: str) -> list[int]:
    """llama.cpp's tokens for ``text`` as Ollama tokenizes a prompt: specials parsed, BOS/EOS/SEP added when
    the GGUF says so (``add_bos=True`` asks llama.cpp to add what the vocabulary's flags ask for)."""
    return list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))


def nll(logits_: np.ndarray, targets: list[int]) -> float:
    """Summed negative log-likelihood of ``targets`` under row-wise ``logits_``."""
    shifted = logits_ - logits_.max(-1, keepdims=True)
    logprobs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return float(-logprobs[np.arange(len(targets)), targets].sum())


def perplexity(total_nll: float, count: int) -> float:
    return math.exp(total_nll / count)
