"""GGUF models through the real server: ``"gguf": true`` on ``/api/create``, ``/api/x/export`` and its blob
download, ``ollama-torch export`` and ``create --gguf``, on tiny models of ``configs/``.

A model created with ``gguf`` is stored as Ollama stores one (one ``model`` layer, a Go template, stop words),
our engine serves it with the weights the file holds, and llama.cpp runs the stored file to the same greedy
tokens. The round trip HF -> F32 GGUF -> create from that GGUF gives the Hugging Face model's greedy tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from converters.gguf_export import export_hf
from converters.gguf_info import read_gguf_info
from tests import llama_cpp_support as lc
from tests.e2e.conftest import upload_dir
from tests.server_process import ServerProcess
from tests.tiny_families import build_family

PROMPT = "Why is the sky blue?"
GREEDY = {"temperature": 0, "num_predict": 12, "seed": 0}


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_family("llama3", tmp_path_factory.mktemp("llama3"))


def _create(http: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return http.post("/api/create", json={"stream": False, **body})


def _hf_greedy(model_dir: Path, prompt_ids: list[int], n: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False)
    return [int(t) for t in out[0, len(prompt_ids) :]]


def _engine_greedy(http: httpx.Client, model: str, n: int) -> tuple[list[int], list[int]]:
    """(prompt ids, greedy ids) of our engine for ``PROMPT`` through the model's template: the final line's
    ``context`` holds both, the last ``eval_count`` being the reply."""
    body = {"model": model, "prompt": PROMPT, "stream": False, "options": {**GREEDY, "num_predict": n}}
    out = http.post("/api/generate", json=body).json()
    context, count = [int(t) for t in out["context"]], int(out["eval_count"])
    assert count > 0, out
    return context[: len(context) - count], context[len(context) - count :]


def test_create_gguf_from_safetensors(http: httpx.Client, client: ollama.Client, llama3_dir: Path, tmp_path: Path) -> None:
    resp = _create(http, {"model": "tiny-llama3-gguf", "files": upload_dir(client, llama3_dir), "gguf": True})
    assert resp.status_code == 200, resp.text
    show = http.post("/api/show", json={"model": "tiny-llama3-gguf"}).json()
    assert show["details"]["format"] == "gguf" and show["details"]["quantization_level"] == "F32"
    assert show["details"]["family"] == "llama"
    assert "<|start_header_id|>" in show["template"]  # Llama 3's Go template, as Ollama's would be
    assert show["parameters"].count("stop") == 3
    assert show["model_info"]["tokenizer.ggml.pre"] == "llama-bpe"
    # our engine serves the stored GGUF with the weights it holds: the source's greedy tokens
    prompt_ids, reply = _engine_greedy(http, "tiny-llama3-gguf", 12)
    assert prompt_ids[0] == 0 and "<|start_header_id|>" in _decode(llama3_dir, prompt_ids)  # BOS + the Go template
    assert reply == _hf_greedy(llama3_dir, prompt_ids, 12)[: len(reply)]
    # and llama.cpp runs the stored file to the same tokens
    blob = tmp_path / "stored.gguf"
    blob.write_bytes(http.get(f"/api/x/blobs/{_model_blob(http, 'tiny-llama3-gguf')}").content)
    generated: list[int] = []
    for token in lc.load(blob).generate(prompt_ids, temp=0.0, top_k=1, reset=True):
        generated.append(int(token))
        if len(generated) == len(reply):
            break
    assert generated == reply


def _decode(model_dir: Path, ids: list[int]) -> str:
    from transformers import AutoTokenizer

    return str(AutoTokenizer.from_pretrained(str(model_dir)).decode(ids))


def _model_blob(http: httpx.Client, name: str) -> str:
    """The digest of the model's GGUF layer, through an export with nothing to change."""
    lines = [json.loads(line) for line in http.post("/api/x/export", json={"model": name}).text.splitlines()]
    assert lines[-1]["status"] == "success", lines
    return str(lines[-1]["blob"])


@pytest.mark.parametrize(("level", "reported"), [("q8_0", "Q8_0"), ("Q4_0", "Q4_0"), ("q4_k_m", "Q4_K_M")])
def test_create_gguf_records_the_type(http: httpx.Client, client: ollama.Client, llama3_dir: Path, level: str, reported: str) -> None:
    if level.lower().startswith("q4_k"):
        lc.llama_cpp()
    name = f"tiny-llama3-{level.lower()}"
    resp = _create(http, {"model": name, "files": upload_dir(client, llama3_dir), "gguf": True, "quantize": level})
    assert resp.status_code == 200, resp.text
    show = http.post("/api/show", json={"model": name}).json()
    assert show["details"]["quantization_level"] == reported
    assert show["details"]["format"] == "gguf"
    assert http.post("/api/generate", json={"model": name, "prompt": PROMPT, "stream": False, "options": GREEDY}).json()["done"]
    tags = {m["name"]: m for m in http.get("/api/tags").json()["models"]}
    assert tags[f"{name}:latest"]["details"]["quantization_level"] == reported


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"quantize": "nf4"}, 400, "unsupported GGUF type NF4 - supported types are F32, F16, BF16, Q8_0"),
        ({"quantize": "q8_0", "adapters": {"a/adapter_config.json": "sha256:" + "0" * 64}}, 400, 'file "a/adapter_config.json" has no blob'),
    ],
)
def test_create_gguf_refusals(http: httpx.Client, client: ollama.Client, llama3_dir: Path, body: dict[str, Any], status: int, message: str) -> None:
    files = upload_dir(client, llama3_dir)
    resp = _create(http, {"model": "refused-gguf", "files": files, "gguf": True, **body})
    assert resp.status_code == status and message in resp.json()["error"], resp.text
    assert http.post("/api/show", json={"model": "refused-gguf"}).status_code == 404


def test_create_gguf_unsupported_architecture_is_a_400_naming_it(http: httpx.Client, client: ollama.Client, tiny_vision_dir: Path) -> None:
    resp = _create(http, {"model": "vision-gguf", "files": upload_dir(client, tiny_vision_dir), "gguf": True})
    assert resp.status_code == 400
    assert 'unsupported architecture "LlavaForConditionalGeneration" for GGUF export' in resp.json()["error"]


def test_export_api(http: httpx.Client, client: ollama.Client, tiny_llama_dir: Path) -> None:
    client.create(model="tiny-st", files=upload_dir(client, tiny_llama_dir))
    lines = [json.loads(line) for line in http.post("/api/x/export", json={"model": "tiny-st", "quantize": "q8_0"}).text.splitlines()]
    assert lines[0]["status"] == "exporting tiny-st:latest"
    assert any(line.get("total") and line["status"] == "converting model to GGUF Q8_0" for line in lines)
    done = lines[-1]
    assert done["status"] == "success" and done["quantization_level"] == "Q8_0"
    data = http.get(f"/api/x/blobs/{done['blob']}").content
    assert len(data) == done["size"] and "sha256:" + hashlib.sha256(data).hexdigest() == done["blob"]
    folded = http.post("/api/x/export", json={"model": "tiny-st", "quantize": "q8_0", "stream": False}).json()
    assert folded["blob"] == done["blob"]  # the export is deterministic
    assert http.post("/api/x/export", json={"model": "nope"}).json() == {"error": "model 'nope:latest' not found"}
    assert http.post("/api/x/export", json={"model": "tiny-st", "quantize": "q9"}).status_code == 400
    assert http.post("/api/x/export", json={}).json() == {"error": "model is required"}
    missing = http.get(f"/api/x/blobs/sha256:{'0' * 64}")
    assert missing.status_code == 404 and missing.json()["error"].startswith('blob "sha256:')
    assert http.get("/api/x/blobs/sha256:xyz").status_code == 400


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{server.port}"}
    return subprocess.run([sys.executable, "-m", "ollama_torch", *args], env=env, capture_output=True, text=True, timeout=300)


def test_cli_export_and_create_gguf(server: ServerProcess, http: httpx.Client, llama3_dir: Path, tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {llama3_dir}\n")
    created = _cli(server, "create", "cli-gguf", "-f", str(modelfile), "--gguf", "-q", "q8_0")
    assert created.returncode == 0, created.stderr
    assert "using autodetected template llama3-instruct" in created.stderr + created.stdout
    assert http.post("/api/show", json={"model": "cli-gguf"}).json()["details"]["quantization_level"] == "Q8_0"
    out = tmp_path / "exported.gguf"
    exported = _cli(server, "export", "cli-gguf", "-o", str(out), "-q", "f16")
    assert exported.returncode == 0, exported.stderr
    assert "quantizing Q8_0 model to F16" in exported.stderr + exported.stdout and f"wrote {out} (F16" in exported.stdout
    assert read_gguf_info(out).file_type == "F16"
    missing = _cli(server, "export", "nope", "-o", str(tmp_path / "x.gguf"))
    assert missing.returncode == 1 and "Error: model 'nope:latest' not found" in missing.stderr
    assert not (tmp_path / "x.gguf").exists()


def test_round_trip_hf_to_gguf_to_created_model(http: httpx.Client, client: ollama.Client, tiny_llama_dir: Path, tmp_path: Path) -> None:
    """HF -> F32 GGUF -> create from that GGUF here (Transformers reads it back) -> the HF model's greedy tokens."""
    gguf = tmp_path / "llama-f32.gguf"
    export_hf(tiny_llama_dir, gguf)
    resp = _create(http, {"model": "from-exported", "files": {gguf.name: client.create_blob(gguf)}})
    assert resp.status_code == 200, resp.text
    prompt_ids, reply = _engine_greedy(http, "from-exported", 12)
    assert reply == _hf_greedy(tiny_llama_dir, prompt_ids, 12)[: len(reply)]


@pytest.mark.slow
def test_demo_gguf_gets_ollamas_template_and_system(http: httpx.Client, client: ollama.Client, smollm2_gguf: Path) -> None:
    resp = _create(http, {"model": "smol-gguf", "files": {smollm2_gguf.name: client.create_blob(smollm2_gguf)}, "gguf": True})
    assert resp.status_code == 200, resp.text
    show = http.post("/api/show", json={"model": "smol-gguf"}).json()
    assert show["template"].startswith("{{- range .Messages }}<|im_start|>")
    assert show["system"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert '"<|im_end|>"' in show["parameters"]
    assert show["details"]["quantization_level"] == "Q4_1"  # kept as it is
    reply = http.post("/api/chat", json={"model": "smol-gguf", "messages": [{"role": "user", "content": PROMPT}], "stream": False, "options": GREEDY}).json()
    assert reply["message"]["content"].strip()
    refused = _create(http, {"model": "smol-q8", "files": {smollm2_gguf.name: client.create_blob(smollm2_gguf)}, "gguf": True, "quantize": "q8_0"})
    assert refused.status_code == 400 and refused.json()["error"] == "quantization is only supported for F16, BF16 and F32 models"

