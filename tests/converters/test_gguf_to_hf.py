"""``convert_gguf_to_hf`` on the real SmolLM2 Q4_1 file, checked against independent references:

(a) every weight equals the ``gguf`` package's own dequantization of its GGUF tensor, through a GGUF -> HF
    name map and Q/K head permutation written here from llama.cpp's converter (not Transformers');
(b) greedy generation equals Transformers loading the GGUF directly, token for token;
(c) the tokenizer encodes like the GGUF-loaded one and carries the GGUF chat template;
(d) a conversion stopped by its progress callback leaves nothing behind.
Plus fast checks of the refusals (not GGUF, unsupported architecture, existing output).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from converters.gguf_info import read_gguf_info
from converters.gguf_to_hf import convert_gguf_to_hf

PROMPT = [{"role": "user", "content": "Why is the sky blue?"}]
TEXTS = [
    "Hello, world!",
    "  two  leading spaces\nand a newline\ttab",
    "naïve café — 東京 🚀 Ünïcödé",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "",
]

# llama.cpp's GGUF names for Llama's tensors -> Transformers' LlamaForCausalLM names.
TOP_LEVEL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
PER_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(gguf_name: str) -> str:
    if gguf_name in TOP_LEVEL:
        return TOP_LEVEL[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if m is None or m.group(2) not in PER_BLOCK:
        pytest.fail(f"GGUF tensor {gguf_name!r} has no Llama counterpart in this test's map")
    return f"model.layers.{m.group(1)}.{PER_BLOCK[m.group(2)]}"


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf does to q_proj/k_proj rows: within each head, interleave the
    two rotary halves (rows [h, half, 2] -> [h, 2, half] read back as [h, half, 2])."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def undo_llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse: GGUF rows back into Transformers' rotate-half layout."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def converted(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gguf_to_hf") / "smollm2"
    calls: list[tuple[int, int]] = []
    convert_gguf_to_hf(smollm2_gguf, out, progress=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)  # monotonic
    assert {t for _, t in calls} == {total} and total == 272 + 2
    assert_library_functions_are_their_own()
    return out


@pytest.fixture(scope="module")
def gguf_model(smollm2_gguf: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    ).eval()


@pytest.fixture(scope="module")
def gguf_tokenizer(smollm2_gguf: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="module")
def converted_tokenizer(converted: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted)


@pytest.mark.slow
def test_directory_layout(converted: Path) -> None:
    names = sorted(p.name for p in converted.iterdir())
    assert names == sorted(
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )
    config = json.loads((converted / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "float32"  # dequantized Q4_1 values are f32
    assert "quantization_config" not in config
    assert config["tie_word_embeddings"] is True
    gen = json.loads((converted / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (1, 2, 2)
    assert not list(converted.parent.glob(".*partial*"))


@pytest.mark.slow
def test_weights_equal_gguf_dequantization(smollm2_gguf: Path, converted: Path) -> None:
    from safetensors import safe_open

    info = read_gguf_info(smollm2_gguf)
    n_head = info.metadata["llama.attention.head_count"]
    n_head_kv = info.metadata["llama.attention.head_count_kv"]
    reader = gguf.GGUFReader(smollm2_gguf)
    with safe_open(str(converted / "model.safetensors"), framework="np") as st:
        hf_keys = set(st.keys())
        mapped: dict[str, str] = {}
        for t in reader.tensors:
            name = hf_name(t.name)
            assert name not in mapped.values(), f"{t.name} and another GGUF tensor both map to {name}"
            assert name in hf_keys, f"{t.name} -> {name} is missing from model.safetensors"
            mapped[t.name] = name
            ref = gguf.quants.dequantize(t.data, t.tensor_type)
            ours = st.get_tensor(name)
            assert ours.dtype == np.float32, name
            assert ours.shape == ref.shape, f"{name}: {ours.shape} vs GGUF {ref.shape}"
            heads = {"attn_q.weight": n_head, "attn_k.weight": n_head_kv}.get(t.name.split(".", 2)[-1])
            if heads is not None:
                assert np.array_equal(llama_cpp_permute(ours, heads), ref), name
                assert np.array_equal(ours, undo_llama_cpp_permute(ref, heads)), name
                assert not np.array_equal(ours, ref), f"{name} was not un-permuted"
            else:
                assert np.array_equal(ours, ref), name
    assert set(mapped.values()) == hf_keys, f"not from the GGUF: {sorted(hf_keys - set(mapped.values()))}"
    assert "output.weight" not in mapped  # tied: lm_head comes from the embedding
    assert len(mapped) == len(reader.tensors) == 272


@pytest.mark.slow
def test_greedy_generation_matches_gguf_loading(
    converted: Path, gguf_model: Any, gguf_tokenizer: Any
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(converted).eval()
    assert model.dtype == torch.float32
    ids = gguf_tokenizer.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    kwargs = {"max_new_tokens": 24, "do_sample": False}
    with torch.no_grad():
        ours = model.generate(**ids, **kwargs)[0].tolist()
        ref = gguf_model.generate(**ids, **kwargs)[0].tolist()
    assert ours == ref
    prompt_len = ids["input_ids"].shape[1]
    assert len(ours) > prompt_len + 5
    assert "sky" in gguf_tokenizer.decode(ours[prompt_len:]).lower()  # coherent, not just equal


@pytest.mark.slow
def test_tokenizer_matches_gguf_loading(
    smollm2_gguf: Path, converted_tokenizer: Any, gguf_tokenizer: Any
) -> None:
    for text in TEXTS:
        ours, ref = converted_tokenizer(text)["input_ids"], gguf_tokenizer(text)["input_ids"]
        assert ours == ref, text
        assert converted_tokenizer.decode(ours) == gguf_tokenizer.decode(ref), text
    template = read_gguf_info(smollm2_gguf).chat_template
    assert converted_tokenizer.chat_template == template == gguf_tokenizer.chat_template
    assert converted_tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False) == (
        gguf_tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    )
    assert (converted_tokenizer.eos_token, converted_tokenizer.bos_token) == ("<|im_end|>", "<|im_start|>")


class Cancelled(Exception):
    pass


@pytest.mark.slow
def test_cancelled_conversion_leaves_nothing(smollm2_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "cancelled"

    def progress(done: int, total: int) -> None:
        if done == 100:  # well into the tensors; with 1 MiB shards, some are already on disk
            raise Cancelled

    with pytest.raises(Cancelled):
        convert_gguf_to_hf(smollm2_gguf, out, progress=progress, max_shard_bytes=1 << 20)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    assert_library_functions_are_their_own()


def assert_library_functions_are_their_own() -> None:
    """The conversion swaps two library functions for the length of a call (``_parsed_once``,
    ``_one_name_map``); afterwards they are the libraries' own again."""
    import gguf
    import transformers.modeling_gguf_pytorch_utils as hf_gguf

    assert hf_gguf.load_gguf_checkpoint.__module__ == "transformers.modeling_gguf_pytorch_utils"
    assert gguf.get_tensor_name_map.__module__ == "gguf.tensor_mapping"
    assert not hasattr(gguf.get_tensor_name_map, "cache_info")


def test_a_swap_is_undone_when_its_block_raises(smollm2_gguf: Path) -> None:
    from converters.gguf_to_hf import _one_name_map, _parsed_once

    with pytest.raises(Cancelled), _one_name_map(), _parsed_once(smollm2_gguf, {"config": {"model_type": "llama"}}):
        import gguf
        import transformers.modeling_gguf_pytorch_utils as hf_gguf

        assert hf_gguf.load_gguf_checkpoint(str(smollm2_gguf))["config"] == {"model_type": "llama"}
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
        raise Cancelled
    assert_library_functions_are_their_own()


# -- refusals (fast: nothing is converted) ------------------------------------------------------------------
def _tiny_gguf(path: Path, arch: str) -> Path:
    w = gguf.GGUFWriter(path, arch)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unsupported_architecture(tmp_path: Path) -> None:
    src = _tiny_gguf(tmp_path / "xyz.gguf", "xyz")
    with pytest.raises(ValueError, match=r'^unsupported architecture "xyz" in GGUF'):
        convert_gguf_to_hf(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xyz.gguf"]


def test_not_gguf(tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"^supplied file was not in GGUF format$"):
        convert_gguf_to_hf(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused(tmp_path: Path) -> None:
    src = _tiny_gguf(tmp_path / "llama.gguf", "llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        convert_gguf_to_hf(src, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


# -- tiny synthetic Qwen3 files: the paths SmolLM2 does not take ----------------------------------------------
def tiny_qwen3_gguf(
    path: Path,
    *,
    pooling: bool = False,
    untied: bool = False,
    dtype: type = np.float32,
    extra: dict[str, tuple[int, ...]] | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    """A 2-layer random Qwen3 with a toy byte-level BPE vocabulary (head_dim 128, Transformers' GGUF default)."""
    rng = np.random.default_rng(0)
    arch, hidden, heads, kv_heads, head_dim, ff = "qwen3", 64, 4, 2, 128, 128
    tokens = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        *[chr(c) for c in range(33, 127)],
        "Ġ",
        "Ġt",
        "he",
    ]
    w = gguf.GGUFWriter(path, arch)
    for key, value in {
        "context_length": 256,
        "embedding_length": hidden,
        "block_count": 2,
        "feed_forward_length": ff,
        "attention.head_count": heads,
        "attention.head_count_kv": kv_heads,
        "attention.key_length": head_dim,
        "attention.value_length": head_dim,
        **({"pooling_type": 3} if pooling else {}),
    }.items():
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    w.add_file_type(1 if dtype == np.float16 else 0)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "qwen2")
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.token_type", [3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_array("tokenizer.ggml.merges", ["Ġ t", "h e"])
    w.add_uint32("tokenizer.ggml.bos_token_id", 0)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)
    w.add_string(
        "tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"
    )
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (len(tokens), hidden),
        "output_norm.weight": (hidden,),
    }
    if untied:
        shapes["output.weight"] = (len(tokens), hidden)
    for b in range(2):
        shapes |= {
            f"blk.{b}.attn_norm.weight": (hidden,),
            f"blk.{b}.ffn_norm.weight": (hidden,),
            f"blk.{b}.attn_q.weight": (heads * head_dim, hidden),
            f"blk.{b}.attn_k.weight": (kv_heads * head_dim, hidden),
            f"blk.{b}.attn_v.weight": (kv_heads * head_dim, hidden),
            f"blk.{b}.attn_output.weight": (hidden, heads * head_dim),
            f"blk.{b}.attn_q_norm.weight": (head_dim,),
            f"blk.{b}.attn_k_norm.weight": (head_dim,),
            f"blk.{b}.ffn_gate.weight": (ff, hidden),
            f"blk.{b}.ffn_up.weight": (ff, hidden),
            f"blk.{b}.ffn_down.weight": (hidden, ff),
        }
    for name, shape in (shapes | (extra or {})).items():
        if name in drop:
            continue
        w.add_tensor(
            name, (rng.standard_normal(shape) * 0.02).astype(dtype if len(shape) > 1 else np.float32)
        )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(
    ("kwargs", "architecture", "dtype"),
    [
        ({"untied": True, "extra": {"rope_freqs.weight": (64,)}}, "Qwen3ForCausalLM", "float32"),
        ({"dtype": np.float16}, "Qwen3ForCausalLM", "float16"),  # an F16 source stays F16
        ({"pooling": True}, "Qwen3Model", "float32"),  # pooling_type: an embedding model, AutoModel
    ],
)
def test_tiny_qwen3_equals_direct_gguf_loading(
    tmp_path: Path, kwargs: dict[str, Any], architecture: str, dtype: str
) -> None:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    src = tiny_qwen3_gguf(tmp_path / "tiny.gguf", **kwargs)
    out = tmp_path / "out"
    convert_gguf_to_hf(src, out)
    config = json.loads((out / "config.json").read_text())
    assert (config["architectures"], config["dtype"]) == ([architecture], dtype)
    assert (out / "generation_config.json").exists() == (architecture != "Qwen3Model")
    auto = AutoModel if architecture == "Qwen3Model" else AutoModelForCausalLM
    ours = auto.from_pretrained(out)
    ref = auto.from_pretrained(tmp_path, gguf_file=src.name, dtype=getattr(torch, dtype))
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert ours_sd.keys() == ref_sd.keys()
    for key, value in ours_sd.items():
        assert value.dtype == getattr(torch, dtype) and torch.equal(value, ref_sd[key]), key
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == read_gguf_info(src).chat_template


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"extra": {"blk.0.bogus.weight": (64,)}},
            r"'blk\.0\.bogus\.weight' has no counterpart in Qwen3ForCausalLM",
        ),
        ({"extra": {"blk.0.ffn_norm.weight": (32,)}}, r"'blk\.0\.ffn_norm\.weight' has shape \[32\]"),
        (
            {"drop": ("blk.1.ffn_up.weight",)},
            r"no tensor for Qwen3ForCausalLM's model\.layers\.1\.mlp\.up_proj",
        ),
    ],
)
def test_unmapped_misshaped_or_missing_tensors_fail_loudly(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    src = tiny_qwen3_gguf(tmp_path / "tiny.gguf", **kwargs)
    with pytest.raises(ValueError, match=message):
        convert_gguf_to_hf(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]
