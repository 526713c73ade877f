"""``converters.gguf_info``: the GGUF header as Ollama reports it, checked against the real SmolLM2 file,
the ``gguf`` package's own reader and writer, and Ollama's tables (fs/ggml/type_test.go)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from converters.gguf_info import (
    NOT_GGUF,
    GGUFInfo,
    file_type_name,
    is_gguf,
    read_gguf_info,
    show_model_info,
    show_tensors,
    tensor_type_name,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smollm2_info(smollm2_gguf: Path) -> GGUFInfo:
    return read_gguf_info(smollm2_gguf)


def write_gguf(
    path: Path, arch: str, kv: dict[str, Any], endian: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE
) -> Path:
    """A tiny GGUF written by the ``gguf`` package (the reference writer), with two small tensors."""
    w = gguf.GGUFWriter(path, arch, endianess=endian)
    for key, value in kv.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, value)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float16))
    w.add_tensor("output_norm.weight", np.zeros((8,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- the real file ---------------------------------------------------------------------------------------
def test_smollm2_header(smollm2_info: GGUFInfo) -> None:
    info = smollm2_info
    assert info.architecture == "llama"
    assert info.general_type == "model"
    assert info.file_type == "Q4_1"
    assert info.context_length == 8192
    assert info.embedding_length == 576
    assert info.parameter_count == 134_515_008  # the sum of the tensors' elements, as Ollama counts
    assert 130e6 < info.parameter_count < 140e6
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert info.capabilities == ["completion"]
    assert len(info.metadata["tokenizer.ggml.tokens"]) == 49152
    assert info.metadata["llama.attention.layer_norm_rms_epsilon"] == 1e-05  # float32, shortest decimal
    assert len(info.tensors) == 272
    assert (info.tensors[0].name, info.tensors[0].type, info.tensors[0].shape) == (
        "token_embd.weight",
        "Q8_0",
        [576, 49152],
    )
    assert {t.type for t in info.tensors} == {"Q8_0", "Q4_1", "F32"}


def test_smollm2_matches_the_gguf_package(smollm2_gguf: Path, smollm2_info: GGUFInfo) -> None:
    """Every key/value and tensor entry agrees with ``gguf.GGUFReader`` (float32 compared as float32)."""
    reader = gguf.GGUFReader(smollm2_gguf)
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert keys == list(smollm2_info.metadata)
    for key in keys:
        field, ours = reader.fields[key], smollm2_info.metadata[key]
        if field.types[0] == gguf.GGUFValueType.FLOAT32:
            assert np.float32(ours) == np.float32(field.contents()), key
        else:
            assert ours == field.contents(), key
    assert [(t.name, t.tensor_type.name, [int(d) for d in t.shape]) for t in reader.tensors] == [
        (t.name, t.type, t.shape) for t in smollm2_info.tensors
    ]


def test_reading_is_fast(smollm2_gguf: Path) -> None:
    start = time.perf_counter()
    read_gguf_info(smollm2_gguf)
    assert time.perf_counter() - start < 1.0  # ~0.06 s here: no tensor data, no per-string numpy views


def test_show_model_info(smollm2_info: GGUFInfo) -> None:
    brief = show_model_info(smollm2_info, verbose=False)
    assert "general.name" not in brief and "tokenizer.chat_template" not in brief
    assert "general.name" in smollm2_info.metadata  # dropped from the view only
    assert list(brief) == sorted(brief)  # Go's JSON encoder sorts map keys
    assert brief["general.parameter_count"] == 134_515_008
    assert brief["general.architecture"] == "llama"
    assert brief["llama.context_length"] == 8192
    # Ollama decodes with maxArraySize 0 unless verbose: every non-empty array marshals as null.
    for key in (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
        "general.languages",
    ):
        assert key in brief and brief[key] is None, key

    full = show_model_info(smollm2_info, verbose=True)
    assert set(full) == set(brief)
    assert len(full["tokenizer.ggml.tokens"]) == 49152
    assert full["tokenizer.ggml.tokens"][1] == "<|im_start|>"
    assert full["general.languages"] == ["en"]


def test_show_tensors(smollm2_info: GGUFInfo) -> None:
    tensors = show_tensors(smollm2_info)
    assert len(tensors) == 272
    assert tensors[0] == {"name": "token_embd.weight", "type": "Q8_0", "shape": [576, 49152]}
    assert all(set(t) == {"name", "type", "shape"} for t in tensors)


# -- not GGUF / broken --------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"GGU", b"hello world, not a model", b"\x00" * 64])
def test_not_gguf(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    assert not is_gguf(path)
    with pytest.raises(ValueError) as exc:
        read_gguf_info(path)
    assert str(exc.value) == NOT_GGUF == "supplied file was not in GGUF format"


def test_is_gguf(smollm2_gguf: Path, tmp_path: Path) -> None:
    assert is_gguf(smollm2_gguf)
    assert not is_gguf(tmp_path)  # a directory
    assert not is_gguf(tmp_path / "missing")


def test_truncated_header_is_a_value_error(smollm2_gguf: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    with open(smollm2_gguf, "rb") as f:
        path.write_bytes(f.read(5000))  # inside the token list
    with pytest.raises(ValueError, match="invalid GGUF file"):
        read_gguf_info(path)


def test_does_not_import_torch() -> None:
    code = (
        "import sys, converters.gguf_info, converters.common; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')); "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- synthetic files --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arch", "kv", "expected"),
    [
        ("llama", {}, ["completion"]),
        ("bert", {"bert.pooling_type": 1}, ["embedding"]),
        ("qwen3", {"qwen3.pooling_type": 3, "qwen3.context_length": 4096}, ["embedding"]),
        ("gemma3", {"gemma3.vision.block_count": 27}, ["completion", "vision"]),
        (
            "qwen25omni",
            {"qwen25omni.vision.block_count": 2, "qwen25omni.audio.block_count": 2},
            ["completion", "vision", "audio"],
        ),
        # only keys under the file's own architecture count
        ("llama", {"gemma3.vision.block_count": 27}, ["completion"]),
        ("clip", {"general.type": "projector"}, ["vision"]),
        ("clip", {}, ["vision"]),
        ("clip", {"general.type": "mmproj"}, ["vision"]),
    ],
)
def test_capabilities(tmp_path: Path, arch: str, kv: dict[str, Any], expected: list[str]) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", arch, kv))
    assert info.capabilities == expected


@pytest.mark.parametrize("endian", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_synthetic_round_trip(tmp_path: Path, endian: gguf.GGUFEndian) -> None:
    kv: dict[str, Any] = {
        "bert.context_length": 512,
        "bert.embedding_length": 8,
        "bert.attention.layer_norm_epsilon": 1e-12,
        "general.file_type": 1,
        "general.name": "tiny",
        "tokenizer.ggml.tokens": ["[PAD]", "a", "é", "東京"],
        "tokenizer.ggml.scores": [0.5, -1.25, 3.0],
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.chat_template": "{{ messages }}",
    }
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", "bert", kv, endian))
    assert info.architecture == "bert"
    assert info.metadata == {"general.architecture": "bert", **kv}
    assert info.file_type == "F16"
    assert (info.context_length, info.embedding_length) == (512, 8)
    assert info.chat_template == "{{ messages }}"
    assert info.general_type == "model"
    assert [(t.name, t.type, t.shape) for t in info.tensors] == [
        ("token_embd.weight", "F16", [8, 4]),
        ("output_norm.weight", "F32", [8]),
    ]
    assert info.parameter_count == 40
    assert show_model_info(info, verbose=False) == {
        "bert.attention.layer_norm_epsilon": 1e-12,
        "bert.context_length": 512,
        "bert.embedding_length": 8,
        "general.architecture": "bert",
        "general.file_type": 1,
        "general.parameter_count": 40,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.scores": None,
        "tokenizer.ggml.tokens": None,
    }


def _raw_gguf(kvs: list[bytes]) -> bytes:
    """A GGUF v3 header with no tensors, encoded by hand (the ``gguf`` writer drops empty arrays)."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    arch = s("general.architecture") + struct.pack("<I", 8) + s("llama")
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs) + 1) + arch + b"".join(kvs)


def test_empty_array_stays_an_empty_list(tmp_path: Path) -> None:
    empty = struct.pack("<Q", 5) + b"empty" + struct.pack("<IIQ", 9, 4, 0)  # array of 0 uint32
    path = tmp_path / "e.gguf"
    path.write_bytes(_raw_gguf([empty]))
    info = read_gguf_info(path)
    assert info.metadata == {"general.architecture": "llama", "empty": []}
    assert info.file_type == "unknown" and info.parameter_count == 0 and info.context_length == 0
    assert show_model_info(info, verbose=False)["empty"] == []  # only non-empty arrays become null


def test_unsupported_version(tmp_path: Path) -> None:
    path = tmp_path / "v1.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<III", 1, 0, 0))
    with pytest.raises(ValueError, match="unsupported version 1"):
        read_gguf_info(path)


# -- Ollama's tables (fs/ggml/type_test.go) ---------------------------------------------------------------
FILE_TYPES = [
    (0, "F32"), (1, "F16"), (2, "Q4_0"), (3, "Q4_1"), (7, "Q8_0"), (8, "Q5_0"), (9, "Q5_1"), (10, "Q2_K"),
    (11, "Q3_K_S"), (12, "Q3_K_M"), (13, "Q3_K_L"), (14, "Q4_K_S"), (15, "Q4_K_M"), (16, "Q5_K_S"),
    (17, "Q5_K_M"), (18, "Q6_K"), (19, "IQ2_XXS"), (20, "IQ2_XS"), (21, "Q2_K_S"), (22, "IQ3_XS"),
    (23, "IQ3_XXS"), (24, "IQ1_S"), (25, "IQ4_NL"), (26, "IQ3_S"), (27, "IQ3_M"), (28, "IQ2_S"),
    (29, "IQ2_M"), (30, "IQ4_XS"), (31, "IQ1_M"), (32, "BF16"), (36, "TQ1_0"), (37, "TQ2_0"),
    (38, "MXFP4_MOE"), (39, "NVFP4"), (40, "Q1_0"), (1024, "unknown"),
    # TestRemovedFileTypesAreUnknown
    (4, "unknown"), (5, "unknown"), (6, "unknown"), (33, "unknown"), (34, "unknown"), (35, "unknown"),
]  # fmt: skip
TENSOR_TYPES = [
    (0, "F32"), (1, "F16"), (2, "Q4_0"), (3, "Q4_1"), (6, "Q5_0"), (7, "Q5_1"), (8, "Q8_0"), (9, "Q8_1"),
    (10, "Q2_K"), (11, "Q3_K"), (12, "Q4_K"), (13, "Q5_K"), (14, "Q6_K"), (15, "Q8_K"), (16, "IQ2_XXS"),
    (17, "IQ2_XS"), (18, "IQ3_XXS"), (19, "IQ1_S"), (20, "IQ4_NL"), (21, "IQ3_S"), (22, "IQ2_S"),
    (23, "IQ4_XS"), (24, "I8"), (25, "I16"), (26, "I32"), (27, "I64"), (28, "F64"), (29, "IQ1_M"),
    (30, "BF16"), (34, "TQ1_0"), (35, "TQ2_0"), (39, "MXFP4"), (40, "NVFP4"), (41, "Q1_0"),
    # ids ggml retired or never used: no name in Ollama's String()
    (4, "unknown"), (5, "unknown"), (31, "unknown"), (36, "unknown"), (42, "unknown"),
]  # fmt: skip


@pytest.mark.parametrize(("file_type", "name"), FILE_TYPES)
def test_file_type_names(file_type: int, name: str) -> None:
    assert file_type_name(file_type) == name


def test_file_type_absent_is_unknown() -> None:
    assert file_type_name(None) == "unknown"


@pytest.mark.parametrize(("ggml_type", "name"), TENSOR_TYPES)
def test_tensor_type_names(ggml_type: int, name: str) -> None:
    assert tensor_type_name(ggml_type) == name
