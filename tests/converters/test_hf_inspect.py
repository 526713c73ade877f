"""``inspect_hf_files`` decides a directory's weight-side capabilities at create time: a one-label
``*ForSequenceClassification`` is a reranker (``rerank``), saved plainly or as sentence-transformers saves a
``CrossEncoder``; other classifiers and sentence-transformers embedding pipelines stay embedding models."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from converters.hf_inspect import inspect_hf_files, is_cross_encoder, num_labels

CROSS_ENCODER_MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}]
EMBEDDING_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
]


def model_dir(tmp_path: Path, config: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """config.json, a one-tensor Safetensors file and any extra JSON files, as relative path -> file."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", **config}))
    for name, data in (extra or {}).items():
        (tmp_path / name).write_text(json.dumps(data))
    return {p.name: p for p in tmp_path.iterdir()}


SEQ_CLS = {"architectures": ["BertForSequenceClassification"]}


@pytest.mark.parametrize(
    ("config", "extra", "caps"),
    [
        ({**SEQ_CLS, "id2label": {"0": "LABEL_0"}}, None, ["rerank"]),  # how the hub's cross-encoders ship
        ({**SEQ_CLS, "num_labels": 1}, None, ["rerank"]),
        ({"architectures": ["XLMRobertaForSequenceClassification"], "id2label": {"0": "LABEL_0"}}, None, ["rerank"]),  # bge-reranker
        ({**SEQ_CLS, "id2label": {"0": "LABEL_0"}}, {"modules.json": CROSS_ENCODER_MODULES,
                                                       "config_sentence_transformers.json": {"model_type": "CrossEncoder"}}, ["rerank"]),
        ({**SEQ_CLS, "id2label": {"0": "NEG", "1": "POS"}}, None, ["embedding"]),  # a two-class classifier
        (SEQ_CLS, None, ["embedding"]),  # no labels recorded: Transformers' default is two
        ({**SEQ_CLS, "id2label": {"0": "LABEL_0"}}, {"modules.json": EMBEDDING_MODULES}, ["embedding"]),
        ({**SEQ_CLS, "id2label": {"0": "LABEL_0"}}, {"modules.json": CROSS_ENCODER_MODULES,
                                                       "config_sentence_transformers.json": {"model_type": "SentenceTransformer"}}, ["embedding"]),
        ({"architectures": ["BertModel"]}, None, ["embedding"]),
        ({"architectures": ["LlamaForCausalLM"]}, None, ["completion"]),
    ],
    ids=["hub", "num_labels", "xlm-roberta", "st-cross-encoder", "two-labels", "no-labels", "st-pooling", "st-other-type",
         "encoder", "causal"],
)
def test_capabilities(tmp_path: Path, config: dict[str, Any], extra: dict[str, Any] | None, caps: list[str]) -> None:
    assert inspect_hf_files(model_dir(tmp_path, config, extra)).capabilities == caps


def test_num_labels() -> None:
    assert num_labels({"num_labels": 3, "id2label": {"0": "a"}}) == 3
    assert num_labels({"id2label": {"0": "a"}}) == 1
    assert num_labels({}) == 2


def test_unreadable_modules_json_is_not_a_cross_encoder(tmp_path: Path) -> None:
    files = model_dir(tmp_path, {**SEQ_CLS, "num_labels": 1})
    (tmp_path / "modules.json").write_text("{not json")
    files["modules.json"] = tmp_path / "modules.json"
    assert not is_cross_encoder(json.loads((tmp_path / "config.json").read_text()), files)
