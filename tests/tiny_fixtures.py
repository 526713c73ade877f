"""Session-scoped pytest fixtures for the tiny models of ``tests/tiny_models.py``.

Each directory is built once per test session into its own temporary directory (about a second each;
the first also pays for importing Transformers). Import the fixtures into a conftest (or a test module)
to use them::

    from tests.tiny_fixtures import *  # noqa: F403 - tiny_llama_dir, tiny_vision_dir, tiny_bert_dir, ...
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_bert, build_tiny_cross_encoder, build_tiny_llama, build_tiny_vision

__all__ = [
    "tiny_bert_dir", "tiny_cross_encoder_dir", "tiny_llama_bos_dir", "tiny_llama_dir", "tiny_vision_bos_dir", "tiny_vision_dir",
]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-weight ``LlamaForCausalLM`` with a ChatML tokenizer (configs/tiny-llama.json)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight LLaVA (CLIP vision tower + Llama) with its processor (configs/tiny-vision.json)."""
    return build_tiny_vision(tmp_path_factory.mktemp("tiny-vision"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-weight ``BertModel`` with sentence-transformers mean pooling (configs/tiny-bert.json)."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-weight one-label ``BertForSequenceClassification``, a reranker as the hub's cross-encoders
    ship (configs/tiny-cross-encoder.json; sentence-transformers' CrossEncoder scores it with Sigmoid)."""
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="session")
def tiny_llama_bos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_llama_dir`` whose tokenizer adds BOS and whose template writes ``{{ bos_token }}`` (Gemma-like)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-bos"), add_bos=True)


@pytest.fixture(scope="session")
def tiny_vision_bos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_vision_dir`` whose tokenizer adds BOS and whose template writes ``{{ bos_token }}`` (Gemma-3-like)."""
    return build_tiny_vision(tmp_path_factory.mktemp("tiny-vision-bos"), add_bos=True)
