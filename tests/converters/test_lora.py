"""Reading PEFT LoRA adapters: what is accepted, the scaling of each module as PEFT computes it, and every
refusal naming its reason (the end-to-end tests check the engine against PEFT itself)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from converters.lora import UnsupportedAdapter, read_adapter

BASE = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def adapter(tmp_path: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> Path:
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    if tensors is None:
        tensors = {}
        for module in ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"):
            tensors[f"base_model.model.{module}.lora_A.weight"] = torch.zeros(4, 64)
            tensors[f"base_model.model.{module}.lora_B.weight"] = torch.zeros(32, 4)
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    return tmp_path


def test_reads_modules_ranks_and_scaling(tmp_path: Path) -> None:
    read = read_adapter(adapter(tmp_path, BASE))
    assert [(m.module, m.rank, m.in_features, m.out_features, m.scaling) for m in read.modules] == [
        ("model.layers.0.self_attn.q_proj", 4, 64, 32, 2.0),
        ("model.layers.1.self_attn.v_proj", 4, 64, 32, 2.0),
    ]


def test_rslora_and_alpha_pattern(tmp_path: Path) -> None:
    config = {**BASE, "use_rslora": True, "alpha_pattern": {"v_proj": 16}}
    scalings = {m.module.rsplit(".", 1)[1]: m.scaling for m in read_adapter(adapter(tmp_path, config)).modules}
    assert scalings == {"q_proj": 8 / math.sqrt(4), "v_proj": 16 / math.sqrt(4)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"peft_type": "LOHA"}, 'unsupported adapter type "LOHA"'),
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save (lm_head)"),
        ({"layer_replication": [[0, 1]]}, "layer_replication"),
    ],
)
def test_refuses_what_it_cannot_apply_exactly(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedAdapter, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_adapter(adapter(tmp_path, {**BASE, **change}))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"base_model.model.embed_tokens.lora_embedding_A": torch.zeros(4, 10)}, "LoRA on embeddings"),
        ({"base_model.model.x.lora_A.weight": torch.zeros(4, 8)}, "needs 2-D lora_A and lora_B"),
        ({"base_model.model.x.lora_A.weight": torch.zeros(4, 8), "base_model.model.x.lora_B.weight": torch.zeros(8, 2)}, "disagree on the rank"),
        ({"base_model.model.x.weight": torch.zeros(4, 8)}, "unexpected tensor"),
        ({}, "holds no LoRA tensors"),
    ],
)
def test_refuses_malformed_weights(tmp_path: Path, tensors: dict[str, torch.Tensor], message: str) -> None:
    with pytest.raises(UnsupportedAdapter, match=message):
        read_adapter(adapter(tmp_path, BASE, tensors))


def test_needs_both_files(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedAdapter, match=r"no adapter_config\.json"):
        read_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps(BASE))
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(UnsupportedAdapter, match=r"no adapter_model.safetensors \(found adapter_model.bin; only Safetensors is read\)"):
        read_adapter(tmp_path)
