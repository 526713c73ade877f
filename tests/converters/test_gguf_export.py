"""GGUF export (``converters/gguf_export``) checked in llama.cpp itself, one tiny model per family.

Each family's tiny random-weight model (``tests/tiny_families.py``, ``configs/``) is exported and loaded by
llama.cpp (llama-cpp-python): it must tokenize like the Hugging Face tokenizer (the tokenizer metadata:
pre-tokenizer, merges, SentencePiece scores, special tokens, BOS) and, teacher-forced, give the logits
Transformers gives (F32: every argmax, values within llama.cpp's F16 KV cache rounding). What cannot be
exported faithfully is refused with a message naming it. The real SmolLM2 and MiniLM are in
``test_gguf_export_real.py``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.gguf_export import (
    UnsupportedExport,
    derive_hf,
    export_hf,
    load_source,
    parse_gguf_type,
    retype_gguf,
)
from converters.gguf_info import read_gguf_info
from tests import llama_cpp_support as lc
from tests.tiny_families import FAMILY_MODELS, build_family

TEXTS = (
    "The sky is blue because of Rayleigh scattering. Once upon a time there was a small robot.",
    "Numbers: 0 1 2 3 42 100 2024 3.14\n\tdef add(a, b):\n        return a + b",
    "Hello! How are you today?  I am fine, thank you.\n\nWhat's the capital of France? It's Paris.",
)
FAMILIES = ["llama", *FAMILY_MODELS]


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Callable[[str], Path]:
    built: dict[str, Path] = {"llama": tiny_llama_dir}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_family(name, tmp_path_factory.mktemp(f"tiny-{name}"))
        return built[name]

    return get


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, family_dir: Callable[[str], Path]) -> Callable[[str, str], Path]:
    """``exported(family, type)``: the family's GGUF of that type, written once per session."""
    root = tmp_path_factory.mktemp("gguf")
    files: dict[tuple[str, str], Path] = {}

    def get(name: str, kind: str = "f32") -> Path:
        if (name, kind) not in files:
            out = root / f"{name}-{kind}.gguf"
            export_hf(family_dir(name), out, parse_gguf_type(kind), name=f"tiny-{name}")
            files[(name, kind)] = out
        return files[(name, kind)]

    return get


def _hf_logits(model_dir: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def _hf_tokens(model_dir: Path, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(str(model_dir))(text).input_ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_tokenizes_and_computes_as_transformers(family: str, family_dir: Callable[[str], Path], exported: Callable[[str, str], Path]) -> None:
    model_dir = family_dir(family)
    llm = lc.load(exported(family, "f32"))
    for text in TEXTS:
        assert lc.tokenize(llm, text) == _hf_tokens(model_dir, text), text
    ids = _hf_tokens(model_dir, " ".join(TEXTS))
    ref = _hf_logits(model_dir, ids)
    got = lc.logits(llm, ids)
    assert got.shape == ref.shape
    # llama.cpp keeps its KV cache in F16: values agree to that rounding, not to float32's
    tolerance = 0.01 * np.abs(ref).max() + 1e-3
    assert np.abs(got - ref).max() <= tolerance
    agree = got.argmax(-1) == ref.argmax(-1)
    top2 = np.sort(ref, -1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 2 * np.abs(got - ref).max()  # no rounding can flip these
    assert agree[decided].all()
    assert agree.mean() >= 0.97


@pytest.mark.parametrize("family", ["llama3", "gemma3", "phi3"])
# Random weights are no measure of quantization quality (SmolLM2's is in test_gguf_export_real.py): these say
# each type is written the way llama.cpp reads it (chance agreement over ~500 tokens is under 1%).
@pytest.mark.parametrize(("kind", "agree"), [("f16", 0.97), ("q8_0", 0.85), ("q4_0", 0.2)])
def test_quantized_types_run(family: str, kind: str, agree: float, family_dir: Callable[[str], Path], exported: Callable[[str, str], Path]) -> None:
    model_dir = family_dir(family)
    path = exported(family, kind)
    assert read_gguf_info(path).file_type == kind.upper()
    ids = _hf_tokens(model_dir, " ".join(TEXTS))
    got = lc.logits(lc.load(path), ids)
    ref = _hf_logits(model_dir, ids)
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= agree


def test_k_quant_is_llama_cpps_own(family_dir: Callable[[str], Path], tmp_path: Path) -> None:
    lc.llama_cpp()
    out = tmp_path / "q4km.gguf"
    export_hf(family_dir("llama3"), out, parse_gguf_type("q4_K_M"))
    info = read_gguf_info(out)
    assert info.file_type == "Q4_K_M"
    assert info.metadata["tokenizer.ggml.pre"] == "llama-bpe"  # metadata carried through llama.cpp's quantizer
    ids = _hf_tokens(family_dir("llama3"), TEXTS[0])
    assert lc.logits(lc.load(out), ids).shape == (len(ids), 384)


def test_k_quant_without_llama_cpp_is_refused_listing_types(monkeypatch: pytest.MonkeyPatch) -> None:
    from converters.gguf_export import types

    monkeypatch.setattr(types, "llama_cpp_available", lambda: False)
    with pytest.raises(ValueError, match=r"Q4_K_M needs llama.cpp's quantizer.*available types are F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1$"):
        parse_gguf_type("q4_k_m")
    with pytest.raises(ValueError, match="unsupported GGUF type NF4 - supported types are F32"):
        parse_gguf_type("nf4")


@pytest.mark.parametrize(
    ("family", "model", "pre"),
    [("llama", "gpt2", "gpt-2"), ("llama3", "gpt2", "llama-bpe"), ("qwen2", "gpt2", "qwen2"), ("granite", "gpt2", "refact"), ("mistral", "llama", "default"), ("gemma", "llama", "default")],
)
def test_tokenizer_metadata(family: str, model: str, pre: str, exported: Callable[[str, str], Path]) -> None:
    md = read_gguf_info(exported(family, "f32")).metadata
    assert md["tokenizer.ggml.model"] == model
    assert md["tokenizer.ggml.pre"] == pre
    assert md["tokenizer.chat_template"] == FAMILY_MODELS[family].template if family != "llama" else md["tokenizer.chat_template"]
    if model == "gpt2":
        assert md["tokenizer.ggml.merges"]
    else:
        scores = md["tokenizer.ggml.scores"]
        assert len(set(scores)) > 100  # SentencePiece's own scores, not placeholders


def test_special_tokens_and_padding_rows(exported: Callable[[str, str], Path]) -> None:
    md = read_gguf_info(exported("phi3", "f32")).metadata
    tokens, types = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"]
    assert len(tokens) == 520  # the embedding's rows: the tokenizer's 517 and 3 padding rows
    assert tokens[512:517] == ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|system|>", "<|user|>"]
    assert types[512] == 3 and types[513] == 4  # special -> CONTROL, added -> USER_DEFINED
    assert tokens[517:] == ["[PAD517]", "[PAD518]", "[PAD519]"] and set(types[517:]) == {5}
    assert md["tokenizer.ggml.eos_token_id"] == 512 and md["tokenizer.ggml.eot_token_id"] == 514
    assert md["tokenizer.ggml.add_bos_token"] is True


def test_sliding_window_pattern(exported: Callable[[str, str], Path]) -> None:
    gemma3 = read_gguf_info(exported("gemma3", "f32")).metadata
    assert gemma3["gemma3.attention.sliding_window"] == 8
    assert gemma3["gemma3.attention.sliding_window_pattern"] == [True, False]  # not llama.cpp's default of 6
    assert gemma3["gemma3.rope.freq_base_swa"] == 10000.0
    gemma2 = read_gguf_info(exported("gemma2", "f32")).metadata
    assert "gemma2.attention.sliding_window_pattern" not in gemma2  # llama.cpp's default pattern for gemma2


def test_bert_embeds_as_sentence_transformers(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "bert.gguf"
    export_hf(tiny_bert_dir, out)
    md = read_gguf_info(out).metadata
    assert (md["bert.pooling_type"], md["tokenizer.ggml.model"], md["bert.attention.causal"]) == (1, "bert", False)
    model = SentenceTransformer(str(tiny_bert_dir), device="cpu")
    llm = lc.load(out, embedding=True)
    for text in TEXTS:
        assert lc.tokenize(llm, text) == list(model.tokenizer(text).input_ids)
        got = np.array(llm.embed(text))
        ref = model.encode([text], normalize_embeddings=True)[0]
        assert float(got @ ref / np.linalg.norm(got)) > 0.999


@pytest.mark.parametrize("family", ["llama3", "gemma3", "mixtral", "phi3"])
def test_derived_hf_directory_is_the_export_undone(family: str, family_dir: Callable[[str], Path], exported: Callable[[str, str], Path], tmp_path: Path) -> None:
    import torch
    from gguf import GGUFReader, dequantize
    from transformers import AutoModelForCausalLM

    src = load_source(family_dir(family))
    exact = derive_hf(exported(family, "f32"), src, tmp_path / "f32")
    derived = AutoModelForCausalLM.from_pretrained(str(exact), dtype=torch.float32).state_dict()
    assert derived.keys() == src.state.keys()
    for name, tensor in src.state.items():
        assert torch.equal(derived[name], tensor.float()), name
    q8 = derive_hf(exported(family, "q8_0"), src, tmp_path / "q8")
    embed = AutoModelForCausalLM.from_pretrained(str(q8), dtype=torch.float32).get_input_embeddings().weight
    t = next(t for t in GGUFReader(exported(family, "q8_0")).tensors if t.name == "token_embd.weight")
    assert torch.equal(embed.detach(), torch.from_numpy(np.array(dequantize(t.data, t.tensor_type))))


def test_retype_equals_a_direct_export(exported: Callable[[str, str], Path], tmp_path: Path) -> None:
    from gguf import GGUFReader

    retyped = tmp_path / "q8.gguf"
    retype_gguf(exported("qwen2", "f32"), retyped, parse_gguf_type("Q8_0"))
    direct = {t.name: (t.tensor_type, bytes(t.data)) for t in GGUFReader(exported("qwen2", "q8_0")).tensors}
    again = {t.name: (t.tensor_type, bytes(t.data)) for t in GGUFReader(retyped).tensors}
    assert again == direct
    assert read_gguf_info(retyped).metadata == read_gguf_info(exported("qwen2", "q8_0")).metadata


# -- refusals: a 400 naming what llama.cpp would reject or run wrongly ---------------------------------------
def _edited(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None], file: str = "config.json") -> Path:
    shutil.copytree(src, dst)
    data = json.loads((dst / file).read_text())
    edit(data)
    (dst / file).write_text(json.dumps(data))
    return dst


def test_unsupported_architecture_is_named(tiny_vision_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedExport, match='unsupported architecture "LlavaForConditionalGeneration" for GGUF export'):
        export_hf(tiny_vision_dir, tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(hidden_act="gelu"), 'activation "gelu" is not what llama.cpp computes for llama'),
        (lambda c: c.update(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 128}), 'RoPE scaling "yarn" is not supported'),
        (lambda c: c.update(quantization_config={"quant_method": "bitsandbytes", "load_in_8bit": True}), "a quantized checkpoint cannot be exported"),
    ],
)
def test_config_llama_cpp_would_run_differently_is_refused(edit: Callable[[dict[str, Any]], None], message: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    model = _edited(tiny_llama_dir, tmp_path / "m", edit)
    with pytest.raises(UnsupportedExport, match=message):
        export_hf(model, tmp_path / "x.gguf")


def test_gemma_attention_scale_llama_cpp_does_not_read(family_dir: Callable[[str], Path], tmp_path: Path) -> None:
    model = _edited(family_dir("gemma2"), tmp_path / "m", lambda c: c.update(query_pre_attn_scalar=64))
    with pytest.raises(UnsupportedExport, match=r"query_pre_attn_scalar=64 differs from the 16 llama\.cpp uses"):
        export_hf(model, tmp_path / "x.gguf")


def test_unknown_pre_tokenizer_is_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    split = {"type": "Split", "pattern": {"Regex": r"\p{L}+|\s+"}, "behavior": "Isolated", "invert": False}

    def edit(t: dict[str, Any]) -> None:
        t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [split, {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}

    model = _edited(tiny_llama_dir, tmp_path / "m", edit, "tokenizer.json")
    with pytest.raises(UnsupportedExport, match=r"unknown BPE pre-tokenizer \(splits: \\p\{L\}\+\|\\s\+\): llama.cpp would split text differently"):
        export_hf(model, tmp_path / "x.gguf")


def test_unmapped_and_misshaped_tensors_are_refused(tiny_llama_dir: Path) -> None:
    from converters.gguf_export.tensors import plan_tensors

    src = load_source(tiny_llama_dir)
    shapes = {n: tuple(t.shape) for n, t in src.state.items()}
    with pytest.raises(UnsupportedExport, match=r'tensor "model\.layers\.0\.mlp\.extra\.weight" has no counterpart in llama\.cpp\'s "llama" architecture'):
        plan_tensors(src.family, src.config, src.hp, {**shapes, "model.layers.0.mlp.extra.weight": (4, 4)}, 384, src.tied)
    shapes["model.layers.1.self_attn.k_proj.weight"] = (64, 64)
    with pytest.raises(UnsupportedExport, match=r'"model.layers.1.self_attn.k_proj.weight" has shape \[64, 64\] as blk.1.attn_k.weight; llama.cpp expects \[32, 64\]'):
        plan_tensors(src.family, src.config, src.hp, shapes, 384, src.tied)
