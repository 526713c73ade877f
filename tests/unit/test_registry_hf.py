"""``hf.co/<org>/<repo>:<tag>``: name mapping and file selection (pure), and the create glue with the hub
faked (the Hugging Face Hub is unreachable from tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ollama_torch.names import ModelName
from ollama_torch.registry import (
    HfRef,
    HfSelection,
    HfSelectionError,
    parse_hf_name,
    pull_hf,
    select_hf_files,
)
from ollama_torch.registry.hf import gguf_quant
from ollama_torch.store import ModelStore


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M", HfRef("bartowski/SmolLM2-135M-Instruct-GGUF", "Q4_K_M")),
        ("hf.co/HuggingFaceTB/SmolLM2-135M-Instruct", HfRef("HuggingFaceTB/SmolLM2-135M-Instruct", "")),
        ("huggingface.co/org/repo:latest", HfRef("org/repo", "")),
        ("HF.CO/org/repo:q8_0", HfRef("org/repo", "q8_0")),
        ("https://hf.co/org/repo:model-f16.gguf", HfRef("org/repo", "model-f16.gguf")),
        ("registry.ollama.ai/library/llama3.2:latest", None),
        ("llama3.2", None),
        ("example.com/hf.co/x:y", None),
    ],
)  # fmt: skip
def test_parse_hf_name(name: str, expected: HfRef | None) -> None:
    assert parse_hf_name(ModelName.parse(name)) == expected


@pytest.mark.parametrize(
    ("path", "quant"),
    [
        ("SmolLM2-135M-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("smollm2-135m-instruct-q8_0.gguf", "Q8_0"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("Llama-3.2-1B-Instruct-IQ3_XS.gguf", "IQ3_XS"),
        ("qwen2.5-0.5b-instruct-fp16.gguf", "F16"),
        ("model-bf16.gguf", "BF16"),
        ("Phi-3-mini-4k-instruct-q4.gguf", "Q4"),
        ("Qwen3-8B-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("Q4_K_M/model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
        ("qwen2-7b.gguf", ""),
        ("mmproj-model-f16.gguf", "F16"),
    ],
)
def test_gguf_quant(path: str, quant: str) -> None:
    assert gguf_quant(path) == quant


GGUF_REPO = [
    ".gitattributes",
    "README.md",
    "SmolLM2-135M-Instruct-Q2_K.gguf",
    "SmolLM2-135M-Instruct-Q4_K_M.gguf",
    "SmolLM2-135M-Instruct-Q8_0.gguf",
    "SmolLM2-135M-Instruct-f16.gguf",
]
NO_Q4KM_REPO = ["README.md", "model-Q8_0.gguf", "model-Q5_K_M.gguf", "model-f32.gguf"]
ODD_REPO = ["weights.gguf", "README.md"]
VISION_REPO = ["model-Q4_K_M.gguf", "model-Q8_0.gguf", "mmproj-model-f16.gguf", "mmproj-model-Q8_0.gguf"]
SAFETENSORS_REPO = [
    ".gitattributes",
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "merges.txt",
    "vocab.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "pytorch_model.bin",
    "onnx/model.onnx",
    "onnx/config.json",
    "1_Pooling/config.json",
    "SmolLM2-135M-Instruct-Q4_K_M.gguf",
]
SPLIT_REPO = ["Q4_K_M/m-Q4_K_M-00001-of-00002.gguf", "Q4_K_M/m-Q4_K_M-00002-of-00002.gguf", "m-Q8_0.gguf"]


@pytest.mark.parametrize(
    ("files", "tag", "expected"),
    [
        (GGUF_REPO, "", HfSelection("gguf", ("SmolLM2-135M-Instruct-Q4_K_M.gguf",), "Q4_K_M")),
        (GGUF_REPO, "Q8_0", HfSelection("gguf", ("SmolLM2-135M-Instruct-Q8_0.gguf",), "Q8_0")),
        (GGUF_REPO, "q2_k", HfSelection("gguf", ("SmolLM2-135M-Instruct-Q2_K.gguf",), "Q2_K")),
        (GGUF_REPO, "F16", HfSelection("gguf", ("SmolLM2-135M-Instruct-f16.gguf",), "F16")),
        (GGUF_REPO, "smollm2-135m-instruct-q8_0.gguf", HfSelection("gguf", ("SmolLM2-135M-Instruct-Q8_0.gguf",), "Q8_0")),
        (NO_Q4KM_REPO, "", HfSelection("gguf", ("model-Q5_K_M.gguf",), "Q5_K_M")),
        (ODD_REPO, "", HfSelection("gguf", ("weights.gguf",), "")),
        (VISION_REPO, "", HfSelection("gguf", ("model-Q4_K_M.gguf", "mmproj-model-f16.gguf"), "Q4_K_M")),
        (VISION_REPO, "Q8_0", HfSelection("gguf", ("model-Q8_0.gguf", "mmproj-model-f16.gguf"), "Q8_0")),
        (SPLIT_REPO, "Q8_0", HfSelection("gguf", ("m-Q8_0.gguf",), "Q8_0")),
        (
            SAFETENSORS_REPO,
            "",
            HfSelection(
                "safetensors",
                (
                    "1_Pooling/config.json",
                    "chat_template.jinja",
                    "config.json",
                    "generation_config.json",
                    "merges.txt",
                    "model.safetensors",
                    "special_tokens_map.json",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "vocab.json",
                ),
            ),
        ),
        (SAFETENSORS_REPO, "Q4_K_M", HfSelection("gguf", ("SmolLM2-135M-Instruct-Q4_K_M.gguf",), "Q4_K_M")),
    ],
)  # fmt: skip
def test_select_hf_files(files: list[str], tag: str, expected: HfSelection) -> None:
    assert select_hf_files(files, tag) == expected


@pytest.mark.parametrize(
    ("files", "tag", "message"),
    [
        (GGUF_REPO, "Q6_K", 'no GGUF file for tag "Q6_K" \\(quantizations in the repository: F16, Q2_K, Q4_K_M, Q8_0\\)'),
        (GGUF_REPO, "other.gguf", 'no file named "other.gguf"'),
        (["README.md", "pytorch_model.bin"], "", "no Safetensors or GGUF model files"),
        (["config.json", "model.safetensors"], "Q4_K_M", 'no GGUF file for tag "Q4_K_M"'),
        (SPLIT_REPO, "Q4_K_M", "split GGUF files are not supported"),
    ],
)  # fmt: skip
def test_select_hf_files_errors(files: list[str], tag: str, message: str) -> None:
    with pytest.raises(HfSelectionError, match=message):
        select_hf_files(files, tag)


# -- the glue, with huggingface_hub and the create service faked ----------------------------------------------
def test_pull_hf_imports_the_selected_file_and_creates_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    weights = tmp_path / "download.gguf"
    weights.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    size = weights.stat().st_size
    siblings = [
        SimpleNamespace(rfilename="README.md", size=10, lfs=None),
        SimpleNamespace(
            rfilename="SmolLM2-135M-Instruct.Q4_1.gguf", size=size, lfs=SimpleNamespace(sha256=sha)
        ),
        SimpleNamespace(
            rfilename="SmolLM2-135M-Instruct.Q8_0.gguf", size=1, lfs=SimpleNamespace(sha256="0" * 64)
        ),
    ]
    downloads: list[str] = []
    created: list[Any] = []

    def model_info(self: Any, repo_id: str, **kwargs: Any) -> Any:
        assert repo_id == "someone/SmolLM2-GGUF" and kwargs["files_metadata"]
        return SimpleNamespace(sha="abc123", siblings=siblings)

    def hf_hub_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        downloads.append(filename)
        assert kwargs["revision"] == "abc123" and Path(kwargs["local_dir"]).is_relative_to(tmp_path)
        return str(weights)

    def create_model(store: ModelStore, request: Any, emit: Any, *, noprune: bool = False) -> None:
        created.append(request)
        emit({"status": "success"})

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    store = ModelStore(tmp_path / "models")
    lines: list[dict[str, Any]] = []
    name = ModelName.parse("https://hf.co/someone/SmolLM2-GGUF:Q4_1")
    pull_hf(store, name, lines.append, create=create_model)
    assert downloads == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert lines[0] == {"status": "pulling manifest"}
    done = {"status": f"pulling {sha[:12]}", "digest": f"sha256:{sha}", "total": size, "completed": size}
    assert lines[-3:] == [done, {"status": "verifying sha256 digest"}, {"status": "success"}]
    assert store.blobs.read_bytes(f"sha256:{sha}") == weights.read_bytes()
    request = created[0]
    assert request.name == ModelName("hf.co", "someone", "SmolLM2-GGUF", "Q4_1")  # no scheme in the store
    assert request.files == {"SmolLM2-135M-Instruct.Q4_1.gguf": f"sha256:{sha}"}

    lines.clear()  # a second pull finds the blob by its LFS sha256 and downloads nothing
    pull_hf(store, name, lines.append, create=create_model)
    assert downloads == ["SmolLM2-135M-Instruct.Q4_1.gguf"] and lines[-1] == {"status": "success"}
    assert len(created) == 2


class _GoneError(Exception):
    """Stands in for the server's CancelledWork: emit raising because the client went away."""


@pytest.mark.parametrize(
    ("siblings", "error", "emit_fails", "expected"),
    [
        ([], "offline", False, "HF_HUB_OFFLINE is set: cannot pull from the Hugging Face Hub"),
        (["README.md"], None, False, "hf.co/org/repo: no Safetensors or GGUF model files"),
        ([], "network", False, "pulling org/repo from "),
        (["m-Q4_K_M.gguf"], None, True, "gone"),
    ],
)  # fmt: skip
def test_pull_hf_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    siblings: list[str],
    error: str | None,
    emit_fails: bool,
    expected: str,
) -> None:
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    from ollama_torch.registry import RegistryError

    def model_info(self: Any, repo_id: str, **kwargs: Any) -> Any:
        if error == "offline":
            raise hf_errors.OfflineModeIsEnabled("offline")
        if error == "network":
            raise RuntimeError("connection refused")
        return SimpleNamespace(
            sha="x", siblings=[SimpleNamespace(rfilename=f, size=1, lfs=None) for f in siblings]
        )

    def emit(line: dict[str, Any]) -> None:
        if emit_fails and line != {"status": "pulling manifest"}:
            raise _GoneError("gone")

    def hf_hub_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        kwargs["tqdm_class"](total=1).update(1)  # reports progress through emit, which fails
        raise AssertionError("unreachable")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    expected_type = _GoneError if emit_fails else RegistryError
    with pytest.raises(expected_type, match=expected):
        pull_hf(ModelStore(tmp_path), ModelName.parse("hf.co/org/repo"), emit, create=_never_created)


def _never_created(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the pull failed before anything was created")
