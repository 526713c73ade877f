"""The reranker's pure parts: ranking (best first, ties in order, ``top_n``, no NaN), and reading the activation
a cross-encoder directory records, checked against the one sentence-transformers' ``CrossEncoder`` picks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from ollama_torch.engine.api import RankedDocument
from ollama_torch.engine.reranker import rank, read_cross_encoder, resolve_activation
from ollama_torch.errors import InternalError
from tests.tiny_models import build_tiny_cross_encoder

IDENTITY = "torch.nn.modules.linear.Identity"
TANH = "torch.nn.modules.activation.Tanh"
SIGMOID = "torch.nn.modules.activation.Sigmoid"


# -- ranking ---------------------------------------------------------------------------------------------------
def test_rank_best_first_ties_in_order() -> None:
    assert rank([0.1, 0.9, 0.5, 0.9], None) == (
        RankedDocument(1, 0.9), RankedDocument(3, 0.9), RankedDocument(2, 0.5), RankedDocument(0, 0.1),
    )


@pytest.mark.parametrize(("top_n", "indices"), [(1, [1]), (2, [1, 2]), (3, [1, 2, 0]), (10, [1, 2, 0]), (None, [1, 2, 0])])
def test_rank_top_n(top_n: int | None, indices: list[int]) -> None:
    assert [r.index for r in rank([-1.0, 3.0, 0.0], top_n)] == indices


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_rank_refuses_non_finite_scores(bad: float) -> None:
    with pytest.raises(InternalError) as info:
        rank([0.5, bad], None)
    assert info.value.status == 500


# -- the activation --------------------------------------------------------------------------------------------
def test_resolve_activation() -> None:
    assert isinstance(resolve_activation(IDENTITY), torch.nn.Identity)
    assert resolve_activation("my_package.Activation") is None  # not under torch.: the default applies
    with pytest.raises(InternalError, match=r"not a torch\.nn module"):
        resolve_activation("torch.sigmoid")
    with pytest.raises(InternalError, match="unknown activation function"):
        resolve_activation("torch.nn.modules.activation.NoSuchThing")


def _config(**attrs: Any) -> SimpleNamespace:
    return SimpleNamespace(**attrs)


def test_read_cross_encoder_without_sentence_transformers_files(tmp_path: Path) -> None:
    head = read_cross_encoder(tmp_path, _config())
    assert isinstance(head.activation, torch.nn.Sigmoid) and head.max_seq_length is None and not head.do_lower_case
    assert isinstance(read_cross_encoder(tmp_path, _config(sentence_transformers={"activation_fn": IDENTITY})).activation, torch.nn.Identity)
    assert isinstance(read_cross_encoder(tmp_path, _config(sbert_ce_default_activation_function=TANH)).activation, torch.nn.Tanh)
    # config.json's sentence_transformers key wins over the legacy one, even when its path is not usable
    assert isinstance(read_cross_encoder(tmp_path, _config(sentence_transformers={"activation_fn": "x.Y"},
                                                           sbert_ce_default_activation_function=TANH)).activation, torch.nn.Sigmoid)


def test_read_cross_encoder_saved_by_sentence_transformers(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x.Transformer"}]))
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"model_type": "CrossEncoder", "activation_fn": IDENTITY}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": True}))
    head = read_cross_encoder(tmp_path, _config(sentence_transformers={"activation_fn": TANH}))
    assert isinstance(head.activation, torch.nn.Identity) and head.max_seq_length == 64 and head.do_lower_case


# name -> (how the directory is built, what is added to its config.json)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "plain": ({}, {}),
    "config-identity": ({"activation": IDENTITY}, {}),
    "legacy-tanh": ({}, {"sbert_ce_default_activation_function": TANH}),
    "untrusted-path": ({"activation": "my_package.Activation"}, {}),
    "st-identity": ({"sentence_transformers": True, "activation": IDENTITY}, {"sentence_transformers": {"activation_fn": TANH}}),
    "st-untrusted-then-config": ({"sentence_transformers": True, "activation": "my_package.Activation"},
                                 {"sentence_transformers": {"activation_fn": TANH}}),
    "st-sigmoid": ({"sentence_transformers": True, "activation": SIGMOID, "max_seq_length": 24}, {}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_activation_is_cross_encoders(tmp_path: Path, variant: str) -> None:
    """Whatever sentence-transformers' CrossEncoder picks from the same directory (ST 6.3 reads these files)."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig

    build, extra = VARIANTS[variant]
    directory = build_tiny_cross_encoder(tmp_path / variant, **build)
    if extra:
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**config, **extra}))
    head = read_cross_encoder(directory, AutoConfig.from_pretrained(str(directory)))
    reference = CrossEncoder(str(directory), device="cpu")
    assert type(head.activation) is type(reference.activation_fn)
    if build.get("max_seq_length"):
        assert head.max_seq_length == reference.max_seq_length
