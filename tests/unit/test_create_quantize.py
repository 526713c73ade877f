"""``quantize`` in the create service over a real store, on the tiny random-weight Llama: the statuses
Ollama streams, what the manifest records, the 400s, and that an interrupted quantization leaves nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ollama_torch.create import CreateRequest
from ollama_torch.create.service import create_model
from ollama_torch.errors import BadRequest
from ollama_torch.names import ModelName
from ollama_torch.store import ConfigV2, MediaType, ModelStore


@pytest.fixture()
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def upload(store: ModelStore, directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): store.blobs.import_file(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def create(store: ModelStore, name: str, **fields: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    create_model(store, CreateRequest(name=ModelName.parse(name), **fields), events.append)
    return events


def config_of(store: ModelStore, name: str) -> ConfigV2:
    return store.get(ModelName.parse(name)).config


@pytest.fixture()
def source(store: ModelStore, tiny_llama_dir: Path) -> dict[str, str]:
    files = upload(store, tiny_llama_dir)
    create(store, "tiny-f32", files=files)
    return files


def test_quantize_streams_ollamas_statuses_and_records_the_scheme(store: ModelStore, source: dict[str, str]) -> None:
    events = create(store, "tiny-q4", files=source, quantize="q4_K_M")
    statuses = [e["status"] for e in events]
    assert statuses[0] == "converting model"
    quantizing = [e for e in events if e["status"] == "quantizing F32 model to Q4_K_M"]
    assert quantizing and all(e["digest"] == "0000000000000000000" for e in quantizing)
    assert quantizing[-1]["completed"] == quantizing[-1]["total"] > 1
    assert statuses.index("verifying conversion") > statuses.index(quantizing[-1]["status"])
    assert statuses[-2:] == ["writing manifest", "success"]

    model = store.get(ModelName.parse("tiny-q4"))
    assert model.config.file_type == "Q4_K_M" and model.config.model_format == "safetensors"
    assert model.config.extra["quantization"] == {
        "method": "ollama_int4", "scheme": "int4", "bits": 4, "compute_dtype": "bfloat16", "blocksize": 32, "source_file_type": "F32",
    }
    layers = model.hf_files
    # Rewritten files are new layers; the tokenizer and every other file keep the uploaded blobs.
    assert layers["model.safetensors"].digest != source["model.safetensors"]
    assert layers["config.json"].digest != source["config.json"]
    assert f"creating new layer {layers['model.safetensors'].digest}" in statuses
    for rel, digest in source.items():
        if rel not in ("model.safetensors", "config.json"):
            assert layers[rel].digest == digest and f"using existing layer {digest}" in statuses
    stored_config = json.loads(store.blobs.read_bytes(layers["config.json"].digest))
    assert stored_config["quantization_config"] == {
        "quant_method": "ollama_int4", "bits": 4, "group_size": 32, "modules_to_not_convert": ["lm_head"],
    }


def test_quantize_from_a_model_leaves_the_source_untouched(store: ModelStore, source: dict[str, str]) -> None:
    before = store.read_manifest(ModelName.parse("tiny-f32"))[2]
    create(store, "tiny-q8", from_="tiny-f32", quantize="Q8_0")
    assert config_of(store, "tiny-q8").file_type == "Q8_0"
    assert store.read_manifest(ModelName.parse("tiny-f32"))[2] == before
    assert config_of(store, "tiny-f32").file_type == "F32"
    # The same scheme again writes the same blobs: every layer is an existing one.
    again = [e["status"] for e in create(store, "tiny-q8-again", from_="tiny-f32", quantize="q8_0")]
    weights = store.get(ModelName.parse("tiny-q8")).hf_files["model.safetensors"].digest
    assert f"using existing layer {weights}" in again


def test_a_cast_is_a_rewrite_and_the_same_type_is_not(store: ModelStore, source: dict[str, str]) -> None:
    create(store, "tiny-f16", from_="tiny-f32", quantize="f16")
    assert config_of(store, "tiny-f16").file_type == "F16"
    assert config_of(store, "tiny-f16").extra["quantization"]["dtype"] == "float16"
    events = create(store, "tiny-same", from_="tiny-f32", quantize="F32")
    assert not any(e["status"].startswith("quantizing") for e in events)
    assert store.get(ModelName.parse("tiny-same")).hf_files["model.safetensors"].digest == source["model.safetensors"]


@pytest.mark.parametrize("name", ["q4_0", "Q5_K_M", "int4"])
def test_unknown_name_is_a_400_before_any_status(store: ModelStore, source: dict[str, str], name: str) -> None:
    events: list[dict[str, Any]] = []
    with pytest.raises(BadRequest, match=r"^unsupported quantization type .* - supported types are F32, F16, BF16, Q8_0"):
        create_model(store, CreateRequest(name=ModelName.parse("bad"), files=source, quantize=name), events.append)
    assert events == [] and not store.exists(ModelName.parse("bad"))


def test_a_quantized_source_is_a_400_before_any_status(store: ModelStore, source: dict[str, str]) -> None:
    create(store, "tiny-nf4", from_="tiny-f32", quantize="nf4")
    events: list[dict[str, Any]] = []
    with pytest.raises(BadRequest, match=r"^quantization is only supported for F16, BF16 and F32 models$"):
        create_model(store, CreateRequest(name=ModelName.parse("twice"), from_="tiny-nf4", quantize="q8_0"), events.append)
    assert events == [] and not store.exists(ModelName.parse("twice"))


def test_interrupted_quantization_leaves_no_manifest_and_no_temp_files(store: ModelStore, source: dict[str, str]) -> None:
    class Gone(Exception):
        pass

    def emit(event: dict[str, Any]) -> None:
        if event["status"].startswith("quantizing") and event.get("completed"):
            raise Gone

    with pytest.raises(Gone):
        create_model(store, CreateRequest(name=ModelName.parse("half"), files=source, quantize="Q4_K_S"), emit)
    assert not store.exists(ModelName.parse("half"))
    assert list((store.root / "ollama-torch" / "tmp").iterdir()) == []
    assert {m.name.display_shortest for m in store.list()} == {"tiny-f32:latest"}


def test_the_stored_layers_are_the_hugging_face_files(store: ModelStore, source: dict[str, str]) -> None:
    create(store, "tiny-fp4", from_="tiny-f32", quantize="FP4")
    model = store.get(ModelName.parse("tiny-fp4"))
    assert set(model.hf_files) == set(source)
    assert model.hf_files["model.safetensors"].media_type == MediaType.TENSOR
    assert model.manifest.by_type(MediaType.MODEL) == []


def test_an_unquantized_gguf_is_quantized_through_its_conversion(store: ModelStore, tmp_path: Path) -> None:
    from tests.converters.test_gguf_to_hf import tiny_qwen3_gguf

    gguf = tiny_qwen3_gguf(tmp_path / "tiny-qwen3-f32.gguf")
    digest = store.blobs.import_file(gguf)
    create(store, "qwen-f32", files={"tiny-qwen3-f32.gguf": digest})
    assert config_of(store, "qwen-f32").file_type == "F32"
    events = create(store, "qwen-q8", from_="qwen-f32", quantize="q8_0")
    assert "quantizing F32 model to Q8_0" in [e["status"] for e in events]
    model = store.get(ModelName.parse("qwen-q8"))
    # The result is a Safetensors model: the conversion's files are its layers, the GGUF layer is gone.
    assert model.format == "safetensors" and model.gguf_layer is None
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(model.hf_files)
    assert model.config.extra["source_format"] == "gguf" and model.config.file_type == "Q8_0"
    assert config_of(store, "qwen-f32").file_type == "F32" and store.get(ModelName.parse("qwen-f32")).gguf_layer is not None


def test_an_uploaded_quantized_directory_is_not_quantized_again(store: ModelStore, tiny_llama_dir: Path, tmp_path: Path) -> None:
    import shutil

    from converters.quantize import quantize_directory
    from converters.quantize_schemes import SCHEMES

    quantized = tmp_path / "nf4"
    shutil.copytree(tiny_llama_dir, quantized)
    quantize_directory(tiny_llama_dir, quantized, SCHEMES["NF4"], device="cpu")
    files = upload(store, quantized)
    events: list[dict[str, Any]] = []
    with pytest.raises(BadRequest, match=r"^quantization is only supported for F16, BF16 and F32 models$"):
        create_model(store, CreateRequest(name=ModelName.parse("again"), files=files, quantize="q8_0"), events.append)
    assert events == []
    create(store, "pre-nf4", files=files)
    assert config_of(store, "pre-nf4").file_type == "NF4"
    create(store, "tiny-f32", files=upload(store, tiny_llama_dir))
    assert config_of(store, "pre-nf4").model_type == config_of(store, "tiny-f32").model_type  # parameters counted unpacked
