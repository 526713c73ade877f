"""Quantize names and the quantized checkpoint, on the tiny random-weight Llama.

The checkpoint test is differential: our per-tensor writer against Transformers' own quantize-on-load +
``save_pretrained``, key for key, so a change in either serialized format fails here rather than at load.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch

from converters.quantize import quantization_targets, quantize_directory, verify_quantized
from converters.quantize_schemes import (
    SCHEMES,
    SOURCE_ERROR,
    QuantScheme,
    UnsupportedQuantization,
    check_source,
    parse_quantize,
)


@pytest.mark.parametrize(
    ("name", "scheme", "method"),
    [
        ("f32", "F32", "cast"),
        ("F16", "F16", "cast"),
        ("bf16", "BF16", "cast"),
        ("q8_0", "Q8_0", "int8"),
        ("Q8_0", "Q8_0", "int8"),
        ("q4_K_M", "Q4_K_M", "int4"),
        ("Q4_K_M", "Q4_K_M", "int4"),
        ("q4_k_s", "Q4_K_S", "int4"),
        ("q4_K", "Q4_K_M", "int4"),
        ("int8", "INT8", "int8"),
        ("NF4", "NF4", "nf4"),
        ("fp4", "FP4", "fp4"),
        (" q4_K_M ", "Q4_K_M", "int4"),
    ],
)
def test_parse_quantize(name: str, scheme: str, method: str) -> None:
    parsed = parse_quantize(name)
    assert (parsed.name, parsed.method) == (scheme, method)


@pytest.mark.parametrize("name", ["q4_0", "Q5_K_M", "q2_K", "int4", "fp8", "q8", "nf4x", "f64"])
def test_unknown_quantize_names_list_the_supported_ones(name: str) -> None:
    with pytest.raises(UnsupportedQuantization) as err:
        parse_quantize(name)
    assert str(err.value) == (
        f"unsupported quantization type {name.upper()} - supported types are "
        "F32, F16, BF16, Q8_0, Q4_K_S, Q4_K_M (alias Q4_K), INT8, NF4, FP4"
    )


@pytest.mark.parametrize(("file_type", "ok"), [("F32", True), ("F16", True), ("BF16", True), ("bf16", True), ("Q4_1", False), ("Q8_0", False), ("NF4", False), ("Q4_K_M", False), ("", False)])
def test_only_unquantized_sources(file_type: str, ok: bool) -> None:
    if ok:
        check_source(file_type)
    else:
        with pytest.raises(UnsupportedQuantization, match=f"^{SOURCE_ERROR}$"):
            check_source(file_type)


def test_scheme_record_is_explicit() -> None:
    assert SCHEMES["NF4"].to_json() == {"method": "bitsandbytes", "scheme": "nf4", "bits": 4, "compute_dtype": "bfloat16", "blocksize": 64}
    assert SCHEMES["Q4_K_S"].to_json() == {"method": "ollama_int4", "scheme": "int4", "bits": 4, "compute_dtype": "bfloat16", "blocksize": 32}
    assert SCHEMES["F16"].to_json() == {"method": "cast", "scheme": "cast", "dtype": "float16"}
    assert SCHEMES["Q8_0"].bits == 8 and SCHEMES["FP4"].bits == 4 and SCHEMES["BF16"].bits == 16


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize(
    "scheme", [SCHEMES["Q8_0"], SCHEMES["NF4"], SCHEMES["FP4"], QuantScheme("NF4-DQ", "nf4", "bfloat16", 64, True)], ids=lambda s: s.name
)
def test_checkpoint_matches_transformers_own_quantized_save(scheme: QuantScheme, tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    ours = tmp_path / "ours"
    quantize_directory(tiny_llama_dir, ours, scheme, device="cpu")
    stored = json.loads((ours / "config.json").read_text())["quantization_config"]
    config = BitsAndBytesConfig.from_dict(stored)
    # Transformers quantizes what it loaded in ``dtype``: bfloat16 values for 4-bit, float16 rows for 8-bit
    # (Int8Params), as ours does.
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.bfloat16, quantization_config=config, device_map="cpu")
    model.save_pretrained(str(tmp_path / "theirs"))
    mine, theirs = _tensors(ours / "model.safetensors"), _tensors(tmp_path / "theirs" / "model.safetensors")
    assert sorted(mine) == sorted(theirs)
    for key, value in theirs.items():
        assert mine[key].dtype == value.dtype and mine[key].shape == value.shape, key
        if value.is_floating_point():
            torch.testing.assert_close(mine[key].float(), value.float(), atol=1e-2, rtol=1e-2, msg=key)
        elif value.dtype == torch.int8:
            # Ours rounds the float32 source to float16 rows; Transformers rounds bfloat16-loaded values.
            assert (mine[key].int() - value.int()).abs().max() <= 1, key
        else:
            assert torch.equal(mine[key], value), key


@pytest.mark.parametrize("name", ["F16", "BF16", "Q8_0", "Q4_K_M", "Q4_K_S", "FP4"])
def test_quantized_directory_loads_and_source_is_untouched(name: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    before = _digests(tiny_llama_dir)
    scheme = SCHEMES[name]
    seen: list[tuple[int, int]] = []
    written = quantize_directory(tiny_llama_dir, tmp_path / "q", scheme, progress=lambda d, t: seen.append((d, t)), device="cpu")
    assert written == ["config.json", "model.safetensors"]
    assert seen[-1][0] == seen[-1][1] and all(a <= b for (a, _), (b, _) in itertools.pairwise(seen))
    verify_quantized(tmp_path / "q", scheme, device="cpu")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["dtype"] == scheme.dtype
    assert ("quantization_config" in config) == scheme.quantized
    assert _digests(tiny_llama_dir) == before


def test_targets_are_the_linear_layers_transformers_converts(tiny_llama_dir: Path) -> None:
    from transformers import AutoConfig

    targets, keep = quantization_targets(AutoConfig.from_pretrained(str(tiny_llama_dir)))
    assert keep == ["lm_head"]
    assert "model.layers.0.self_attn.q_proj" in targets and "model.layers.1.mlp.down_proj" in targets
    assert len(targets) == 2 * 7


@pytest.fixture(scope="module")
def wide_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-label BertForSequenceClassification (a reranker) 64 wide, the least bitsandbytes' 4-bit blocks take."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from tests.tiny_models import load_config

    data = {**load_config("tiny-cross-encoder"), "hidden_size": 64, "intermediate_size": 128}
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("wide-cross-encoder")
    AutoModelForSequenceClassification.from_config(config).save_pretrained(str(directory))
    return directory


@pytest.mark.parametrize("name", ["Q8_0", "Q4_K_M", "NF4", "FP4"])
def test_a_reranker_keeps_its_one_logit_head(name: str, wide_cross_encoder_dir: Path, tmp_path: Path) -> None:
    """The int4 kernel packs output rows by sixteen and bitsandbytes' 4-bit layers cannot hold one row: a
    reranker's classifier (one output) failed every 4-bit scheme until heads of under 16 outputs were kept."""
    from transformers import AutoConfig

    targets, keep = quantization_targets(AutoConfig.from_pretrained(str(wide_cross_encoder_dir)))
    assert "classifier" in keep and "classifier" not in targets and "bert.pooler.dense" in targets
    quantize_directory(wide_cross_encoder_dir, tmp_path / "q", SCHEMES[name], device="cpu")
    verify_quantized(tmp_path / "q", SCHEMES[name], device="cpu")


def test_a_weight_missing_from_the_checkpoint_fails_loudly(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    src = tmp_path / "src"
    shutil.copytree(tiny_llama_dir, src)
    tensors = _tensors(src / "model.safetensors")
    tensors["renamed.weight"] = tensors.pop("model.layers.0.mlp.up_proj.weight")
    save_file(tensors, str(src / "model.safetensors"))
    with pytest.raises(UnsupportedQuantization, match=r"model\.layers\.0\.mlp\.up_proj\.weight"):
        quantize_directory(src, tmp_path / "q", SCHEMES["NF4"], device="cpu")


def test_an_already_quantized_directory_is_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    quantize_directory(tiny_llama_dir, tmp_path / "q", SCHEMES["NF4"], device="cpu")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tiny_llama_dir / name).exists():
            shutil.copy(tiny_llama_dir / name, tmp_path / "q" / name)
    with pytest.raises(UnsupportedQuantization, match="already quantized"):
        quantize_directory(tmp_path / "q", tmp_path / "qq", SCHEMES["Q8_0"], device="cpu")


def test_an_exception_from_progress_stops_the_work(tiny_llama_dir: Path, tmp_path: Path) -> None:
    def cancel(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize_directory(tiny_llama_dir, tmp_path / "q", SCHEMES["Q8_0"], progress=cancel, device="cpu")
    assert not (tmp_path / "q" / "config.json").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["Q8_0", "Q4_K_M"])
def test_quantize_and_load_on_cuda(name: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    scheme: QuantScheme = SCHEMES[name]
    quantize_directory(tiny_llama_dir, tmp_path / "q", scheme, device="cuda")
    verify_quantized(tmp_path / "q", scheme, device="cuda")
