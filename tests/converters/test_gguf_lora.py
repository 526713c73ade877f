"""GGUF LoRA adapters both ways, against the real parts: PEFT adapters trained here on a tiny Llama, written
as llama.cpp's ``convert_lora_to_gguf.py`` writes them (``write_gguf_lora``) and read back to PEFT
(``gguf_lora_to_peft``). llama.cpp itself applies the written file on the base exported to F32 GGUF and
generates PEFT's greedy tokens, which proves the names, shapes, q/k row order and alpha are what llama.cpp
expects; the read-back is exact. What cannot be represented is refused naming why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.gguf_export import UnsupportedExport, export_hf
from converters.gguf_export.lora import write_gguf_lora
from converters.gguf_lora import gguf_lora_to_peft
from converters.lora import UnsupportedAdapter, check_against_base, read_adapter
from tests import llama_cpp_support as lc
from tests.lora_support import peft_greedy, train_lora
from tests.tiny_families import build_family
from tests.tiny_models import build_tiny_llama

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
N = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Llama, a LoRA on every linear layer (q/k included: the permuted ones), and its GGUF."""
    root = tmp_path_factory.mktemp("gguf-lora")
    base = build_tiny_llama(root / "base")
    adapter = train_lora(base, root / "all", targets=ALL_LINEAR, seed=1)
    return {"root": root, "base": base, "adapter": adapter, "gguf": write_gguf_lora(adapter, base, root / "all.gguf")}


def _tensors(directory: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(directory / "adapter_model.safetensors"))


def _scalings(directory: Path) -> dict[str, float]:
    return {m.module: m.scaling for m in read_adapter(directory).modules}


def _prompt(base: Path) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    return list(tok.apply_chat_template([{"role": "user", "content": "Hello! How are you today?"}], add_generation_prompt=True)["input_ids"])


def test_the_file_is_what_llama_cpp_writes(tiny: dict[str, Path]) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(tiny["gguf"])
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    assert (fields["general.architecture"], fields["general.type"], fields["adapter.type"]) == ("llama", "adapter", "lora")
    assert fields["adapter.lora.alpha"] == 8.0
    shapes = {t.name: list(t.shape) for t in reader.tensors}  # ggml order: fastest dimension first
    assert shapes["blk.0.attn_q.weight.lora_a"] == [64, 4] and shapes["blk.0.attn_q.weight.lora_b"] == [4, 64]
    assert shapes["blk.1.ffn_down.weight.lora_a"] == [128, 4] and shapes["blk.1.ffn_down.weight.lora_b"] == [4, 64]
    assert len(shapes) == 2 * 2 * len(ALL_LINEAR)


def test_llama_cpp_applies_it_as_peft_does(tiny: dict[str, Path]) -> None:
    lc.llama_cpp()
    base, ids = tiny["base"], _prompt(tiny["base"])
    model = export_hf(base, tiny["root"] / "base-f32.gguf") and tiny["root"] / "base-f32.gguf"
    want = peft_greedy(base, [tiny["adapter"]], ids, N)
    assert want != peft_greedy(base, [], ids, N)  # the adapter changes the output

    def greedy(**kwargs: Any) -> list[int]:
        got: list[int] = []
        for token in lc.load(model, **kwargs).generate(ids, temp=0.0, top_k=1, reset=True):
            got.append(int(token))
            if len(got) == N:
                break
        return got

    assert greedy(lora_path=str(tiny["gguf"]))[: len(want)] == want
    assert greedy()[: len(want)] != want


def _linear_names(base: Path) -> tuple[str, ...]:
    """The last name of every Linear in the base but the head: PEFT's ``all-linear``, per family."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    return tuple(sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}))


@pytest.mark.parametrize("family", ["mistral", "granite", "qwen2", "phi3", "gemma3"])
def test_llama_cpp_applies_it_as_peft_does_in_other_families(family: str, tmp_path: Path) -> None:
    """Permuted q/k (mistral, granite), plain (qwen2, gemma3) and fused qkv/gate-up (phi3) projections:
    llama.cpp's teacher-forced logits with the adapter are PEFT's as closely as its base logits are
    Transformers' (a near tie can flip a greedy token in these random models, so logits, not tokens)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lc.llama_cpp()
    base = build_family(family, tmp_path / "base")
    adapter = train_lora(base, tmp_path / "adapter", targets=_linear_names(base), seed=4)
    model = tmp_path / "base.gguf"
    export_hf(base, model)
    lora = write_gguf_lora(adapter, base, tmp_path / "a.gguf")
    ids = list(AutoTokenizer.from_pretrained(base)("Hello! How are you today? The lighthouse keeper climbed").input_ids)
    hf: Any = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.inference_mode():
        want_base = hf(torch.tensor([ids])).logits[0].numpy()
        want = PeftModel.from_pretrained(hf, str(adapter)).eval()(torch.tensor([ids])).logits[0].numpy()
    base_error = np.abs(lc.logits(lc.load(model), ids) - want_base).max()
    error = np.abs(lc.logits(lc.load(model, lora_path=str(lora)), ids) - want).max()
    effect = np.abs(want - want_base).max()
    assert error < 3 * base_error + 1e-3 and error < 0.05 * effect, (error, base_error, effect)
    back = gguf_lora_to_peft(lora, base, tmp_path / "back")
    for key, value in _tensors(adapter).items():
        np.testing.assert_array_equal(_tensors(back)[key], value, err_msg=key)


def test_read_back_is_exact(tiny: dict[str, Path], tmp_path: Path) -> None:
    back = gguf_lora_to_peft(tiny["gguf"], tiny["base"], tmp_path / "back")
    check_against_base(read_adapter(back), tiny["base"])
    original, converted = _tensors(tiny["adapter"]), _tensors(back)
    assert sorted(original) == sorted(converted)
    for key, value in original.items():
        np.testing.assert_array_equal(converted[key], value, err_msg=key)
    assert _scalings(back) == pytest.approx(_scalings(tiny["adapter"]))


@pytest.mark.parametrize(
    "config",
    [
        {"rank_pattern": {"q_proj": 8}},  # ranks differ: one alpha, alpha / rank each
        {"use_rslora": True},  # rsLoRA folds into the alpha when the rank is one
    ],
)
def test_ranks_and_scalings_survive_the_round_trip(config: dict[str, Any], tiny: dict[str, Path], tmp_path: Path) -> None:
    adapter = train_lora(tiny["base"], tmp_path / "adapter", targets=("q_proj", "k_proj", "v_proj"), seed=2, steps=1, **config)
    back = gguf_lora_to_peft(write_gguf_lora(adapter, tiny["base"], tmp_path / "a.gguf"), tiny["base"], tmp_path / "back")
    assert _scalings(back) == pytest.approx(_scalings(adapter))
    assert {k: v.shape for k, v in _tensors(back).items()} == {k: v.shape for k, v in _tensors(adapter).items()}


def test_writer_refuses_what_llama_cpp_would_scale_differently(tiny: dict[str, Path], tmp_path: Path) -> None:
    adapter = train_lora(tiny["base"], tmp_path / "adapter", seed=3, steps=1, alpha_pattern={"q_proj": 32})
    with pytest.raises(UnsupportedExport, match="one LoRA alpha"):
        write_gguf_lora(adapter, tiny["base"], tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()


def _gguf_adapter(path: Path, arch: str, tensors: dict[str, np.ndarray], **kv: Any) -> Path:
    """A GGUF adapter written by hand, for the refusals."""
    import gguf

    writer = gguf.GGUFWriter(path, arch)
    writer.add_type(str(kv.pop("general_type", "adapter")))
    writer.add_string("adapter.type", str(kv.pop("adapter_type", "lora")))
    writer.add_float32("adapter.lora.alpha", 8.0)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _pair(name: str, out_f: int = 64, in_f: int = 64, rank: int = 2) -> dict[str, np.ndarray]:
    return {f"{name}.lora_a": np.ones((rank, in_f), np.float32), f"{name}.lora_b": np.ones((out_f, rank), np.float32)}


@pytest.mark.parametrize(
    ("arch", "tensors", "kv", "message"),
    [
        ("qwen2", _pair("blk.0.attn_q.weight"), {}, 'the GGUF adapter is for a "qwen2" model, but the base model is "llama"'),
        ("llama", _pair("blk.0.attn_q.weight"), {"adapter_type": "control_vector"}, 'unsupported GGUF adapter type "control_vector"'),
        ("llama", _pair("blk.0.attn_q.weight"), {"general_type": "model"}, 'the GGUF file is not an adapter (general.type is "model")'),
        ("llama", _pair("blk.7.attn_q.weight"), {}, 'adapts "blk.7.attn_q.weight", which the base model has no linear layer'),
        ("llama", {**_pair("blk.0.attn_q.weight"), "blk.0.attn_q.weight.dora_m": np.ones(64, np.float32)}, {}, 'unexpected tensor "blk.0.attn_q.weight.dora_m"'),
        ("llama", _pair("blk.0.attn_q.weight", in_f=32), {}, "do not fit the base's model.layers.0.self_attn.q_proj [64, 64]"),
        ("llama", {"blk.0.attn_q.weight.lora_a": np.ones((2, 64), np.float32)}, {}, 'has only its lora_a'),
        ("llama", _pair("token_embd.weight"), {}, "LoRA on the token embedding"),
    ],
)
def test_reader_refuses_what_cannot_be_represented(arch: str, tensors: dict[str, np.ndarray], kv: dict[str, Any], message: str,
                                                   tiny: dict[str, Path], tmp_path: Path) -> None:
    path = _gguf_adapter(tmp_path / "bad.gguf", arch, tensors, **kv)
    with pytest.raises(UnsupportedAdapter) as info:
        gguf_lora_to_peft(path, tiny["base"], tmp_path / "out")
    assert message in str(info.value)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["bad.gguf"]


@pytest.mark.parametrize("data", [b"GGUF\x03\x00\x00\x00" + b"\xff" * 40, b"not a gguf file at all"])
def test_reader_refuses_a_corrupt_file(data: bytes, tiny: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "bad.gguf").write_bytes(data)
    with pytest.raises(UnsupportedAdapter, match="not a readable GGUF file"):
        gguf_lora_to_peft(tmp_path / "bad.gguf", tiny["base"], tmp_path / "out")


def test_norms_llama_cpp_skips_are_skipped_and_alpha_zero_means_scale_one(tiny: dict[str, Path], tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "a.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    for name, data in {**_pair("blk.0.attn_v.weight", out_f=32), "blk.0.attn_norm.weight": np.ones(64, np.float32)}.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    back = gguf_lora_to_peft(path, tiny["base"], tmp_path / "back")
    assert _scalings(back) == {"model.layers.0.self_attn.v_proj": 1.0}
    assert json.loads((back / "adapter_config.json").read_text())["target_modules"] == ["model.layers.0.self_attn.v_proj"]


def test_quantized_and_half_tensors_are_read_as_llama_cpp_multiplies_them(tiny: dict[str, Path], tmp_path: Path) -> None:
    """``convert_lora_to_gguf.py --outtype q8_0`` writes Q8_0 where rows are whole blocks (``lora_a``) and F16
    elsewhere: both are dequantized to the values llama.cpp computes with."""
    import gguf

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 64)).astype(np.float32), rng.standard_normal((64, 4)).astype(np.float32)
    q8 = gguf.GGMLQuantizationType.Q8_0
    path = tmp_path / "q8.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 4.0)
    writer.add_tensor("blk.1.attn_output.weight.lora_a", gguf.quants.quantize(a, q8), raw_dtype=q8)
    writer.add_tensor("blk.1.attn_output.weight.lora_b", b.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    back = _tensors(gguf_lora_to_peft(path, tiny["base"], tmp_path / "back"))
    key = "base_model.model.model.layers.1.self_attn.o_proj"
    np.testing.assert_array_equal(back[f"{key}.lora_A.weight"], gguf.quants.dequantize(gguf.quants.quantize(a, q8), q8))
    np.testing.assert_array_equal(back[f"{key}.lora_B.weight"], b.astype(np.float16).astype(np.float32))
    assert np.abs(back[f"{key}.lora_A.weight"] - a).max() > 0  # really quantized


def test_a_base_the_export_does_not_cover_is_named(tmp_path: Path) -> None:
    base = build_tiny_llama(tmp_path / "gpt2", config="tiny-gpt2")
    path = _gguf_adapter(tmp_path / "a.gguf", "gpt2", _pair("blk.0.attn_qkv.weight"))
    with pytest.raises(UnsupportedAdapter, match='GGUF LoRA adapters need a base model the GGUF export covers: unsupported architecture "GPT2LMHeadModel"'):
        gguf_lora_to_peft(path, base, tmp_path / "out")
