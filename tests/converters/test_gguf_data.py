"""``converters.gguf_data``: a GGUF file's tensors without ``gguf.GGUFReader``, checked against that reader on
the real SmolLM2 file and on files the ``gguf`` package writes (every plain type, quantized types, another
alignment, big-endian)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from converters.gguf_data import gguf_tensors


def assert_same_as_reader(path: Path) -> None:
    theirs = gguf.GGUFReader(path).tensors
    ours = gguf_tensors(path)
    assert [t.name for t in ours] == [t.name for t in theirs]
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine.tensor_type == ref.tensor_type, mine.name
        assert mine.data.dtype == ref.data.dtype, mine.name
        assert mine.data.shape == ref.data.shape, mine.name
        assert np.array_equal(mine.data, ref.data), mine.name
        if mine.tensor_type.name not in ("I8", "I16", "I32", "I64", "F64"):  # gguf dequantizes the float types
            np.testing.assert_array_equal(gguf.dequantize(mine.data, mine.tensor_type), gguf.dequantize(ref.data, ref.tensor_type))


def test_smollm2_tensors_are_the_readers(smollm2_gguf: Path) -> None:
    assert_same_as_reader(smollm2_gguf)


def write(path: Path, endian: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE, alignment: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama", endianess=endian)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(50)])
    for dtype in (np.float32, np.float16, np.int8, np.int16, np.int32, np.int64, np.float64):
        w.add_tensor(f"plain.{np.dtype(dtype).name}", (rng.standard_normal((3, 5)) * 10).astype(dtype))
    w.add_tensor("vector", rng.standard_normal(7).astype(np.float32))
    if endian == gguf.GGUFEndian.LITTLE:  # the writer byte-swaps plain arrays only
        rows = rng.standard_normal((4, 64)).astype(np.float32)
        for qtype in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.BF16):
            w.add_tensor(f"quant.{qtype.name}", gguf.quantize(rows, qtype), raw_shape=gguf.quant_shape_to_byte_shape(rows.shape, qtype),
                         raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("alignment", [None, 64])
def test_written_files_match_the_reader(tmp_path: Path, alignment: int | None) -> None:
    assert_same_as_reader(write(tmp_path / "t.gguf", alignment=alignment))


def test_big_endian_values_read_right(tmp_path: Path) -> None:
    path = write(tmp_path / "be.gguf", gguf.GGUFEndian.BIG)
    assert_same_as_reader(path)
    little = {t.name: t.data for t in gguf_tensors(write(tmp_path / "le.gguf"))}
    for t in gguf_tensors(path):
        np.testing.assert_array_equal(t.data.astype(t.data.dtype.newbyteorder("=")), little[t.name])


def test_a_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path / "t.gguf")
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    with pytest.raises(ValueError, match="runs past the end of the file"):
        gguf_tensors(path)
