"""``quantize`` at create time on the real SmolLM2, through the server process and the ``ollama`` client.

The unquantized source is SmolLM2 in float32 Safetensors (the demo GGUF's conversion) created as a
Safetensors model; each accepted name is quantized from it, loaded by the engine and generated from. The
demo GGUF itself is Q4_1, a quantized source: 400, as Ollama answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import pytest

from tests.e2e.conftest import upload_dir
from tests.server_process import ServerProcess, running_server

pytestmark = pytest.mark.slow

PROMPT = "Why is the sky blue?"
GREEDY = {"temperature": 0, "num_predict": 24, "seed": 0}


@pytest.fixture(scope="module")
def source(client: ollama.Client, smollm2_hf_dir: Path) -> str:
    client.create(model="smol-f32", files=upload_dir(client, smollm2_hf_dir))
    return "smol-f32"


@pytest.fixture(scope="module")
def baseline(client: ollama.Client, source: str) -> str:
    return client.generate(model=source, prompt=PROMPT, options=GREEDY).response


def quantize(client: ollama.Client, name: str, level: str) -> list[str]:
    return [p.status or "" for p in client.create(model=name, from_="smol-f32", quantize=level, stream=True)]


@pytest.mark.parametrize(
    ("level", "reported", "generate"),
    [
        ("q8_0", "Q8_0", True),
        ("q4_K_M", "Q4_K_M", True),
        ("fp4", "FP4", True),
        ("bf16", "BF16", True),
        ("INT8", "INT8", False),  # the same scheme as Q8_0
        ("q4_K", "Q4_K_M", False),  # Ollama's alias
        ("nf4", "NF4", False),  # the same scheme as Q4_K_M
        ("F16", "F16", False),
    ],
)
def test_quantize_each_name(server: ServerProcess, client: ollama.Client, baseline: str, level: str, reported: str,
                            generate: bool) -> None:
    name = f"smol-{level.lower()}"
    lines = quantize(client, name, level)
    assert f"quantizing F32 model to {reported}" in lines
    assert lines.index("verifying conversion") > lines.index(f"quantizing F32 model to {reported}")
    assert lines[-2:] == ["writing manifest", "success"]
    show = client.show(name)
    assert show.details.quantization_level == reported and show.details.format == "safetensors"
    assert any(m.model == f"{name}:latest" and m.details.quantization_level == reported for m in client.list().models)
    if generate:
        text = client.generate(model=name, prompt=PROMPT, options=GREEDY).response
        assert len(text.split()) >= 8, text
        assert any(word in text.lower() for word in ("sky", "blue", "light", "scatter", "atmosphere")), text
        # a quantized model's 16-bit output head is quantized to 8 bits on the CPU; a bfloat16 model has none
        assert (f"output head of {name}:latest quantized to 8 bits" in server.log()) == (level != "bf16"), level
        if level == "q4_K_M":  # our int4 kernel where it is built and the model computes in float32
            from ollama_torch.engine.quantized import int4_native_available

            assert (f"4-bit layers of {name}:latest run by our int4 kernel" in server.log()) == int4_native_available()


def test_cli_create_quantize(server: ServerProcess, client: ollama.Client, tmp_path: Path, baseline: str) -> None:
    (tmp_path / "Modelfile").write_text("FROM smol-f32\n")
    env = {**os.environ, "OLLAMA_HOST": server.url}
    run = subprocess.run(
        [sys.executable, "-m", "ollama_torch", "create", "smol-cli-q4s", "-q", "q4_K_S", "-f", str(tmp_path / "Modelfile")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert client.show("smol-cli-q4s").details.quantization_level == "Q4_K_S"
    chat = client.chat(model="smol-cli-q4s", messages=[{"role": "user", "content": PROMPT}], options=GREEDY)
    assert len(chat.message.content.split()) >= 8


def test_quantized_model_is_smaller_in_ps(client: ollama.Client, baseline: str) -> None:
    sizes: dict[str, int] = {}
    for name in ("smol-f32", "smol-q4_k_m", "smol-q8_0"):
        client.generate(model=name, prompt="Hi", options={"num_predict": 1})
        sizes |= {m.model: m.size for m in client.ps().models}
    # /api/ps adds the KV cache to the weights, so the ratios are looser than the weights' own.
    assert sizes["smol-q4_k_m:latest"] < 0.5 * sizes["smol-f32:latest"], sizes
    assert sizes["smol-q8_0:latest"] < 0.6 * sizes["smol-f32:latest"], sizes


def test_source_still_generates_identically(client: ollama.Client, source: str, baseline: str) -> None:
    quantize(client, "smol-again", "Q4_K_S")
    assert client.show(source).details.quantization_level == "F32"
    assert client.generate(model=source, prompt=PROMPT, options=GREEDY).response == baseline


def test_bad_names_and_quantized_sources_are_400(http: httpx.Client, client: ollama.Client, source: str, smollm2: str) -> None:
    r = http.post("/api/create", json={"model": "nope", "from": source, "quantize": "q4_0"})
    assert r.status_code == 400
    assert r.json() == {
        "error": "unsupported quantization type Q4_0 - supported types are F32, F16, BF16, Q8_0, Q4_K_S, Q4_K_M (alias Q4_K), INT8, NF4, FP4"
    }
    # The demo GGUF is Q4_1: a quantized source, as in Ollama.
    r = http.post("/api/create", json={"model": "nope", "from": smollm2, "quantize": "q8_0"})
    assert (r.status_code, r.json()) == (400, {"error": "quantization is only supported for F16, BF16 and F32 models"})
    quantize(client, "smol-nf4-src", "nf4")
    r = http.post("/api/create", json={"model": "nope", "from": "smol-nf4-src", "quantize": "q4_K_M"})
    assert (r.status_code, r.json()) == (400, {"error": "quantization is only supported for F16, BF16 and F32 models"})
    names = {m.model for m in client.list().models}
    assert "nope:latest" not in names


def test_interrupted_quantization_leaves_no_manifest(server: ServerProcess, client: ollama.Client, source: str) -> None:
    with httpx.Client(base_url=server.url, timeout=120) as c, c.stream(
        "POST", "/api/create", json={"model": "smol-cut", "from": source, "quantize": "Q8_0"}
    ) as r:
        for line in r.iter_lines():
            if "quantizing" in line:
                break  # the client goes away mid-quantization
    import time

    deadline = time.monotonic() + 60
    tmp = server.models / "ollama-torch" / "tmp"
    while time.monotonic() < deadline and any(p.name.startswith("quantize-") for p in tmp.iterdir()):
        time.sleep(0.2)
    assert not any(p.name.startswith("quantize-") for p in tmp.iterdir())
    assert "smol-cut:latest" not in {m.model for m in client.list().models}
    assert not (server.models / "manifests/registry.ollama.ai/library/smol-cut").exists()


@pytest.mark.parametrize("level", ["q8_0", "q4_K_M"])
def test_dtype_setting_reaches_a_quantized_model(server: ServerProcess, client: ollama.Client, source: str,
                                                 tmp_path: Path, level: str) -> None:
    """``OLLAMA_TORCH_DTYPE=float32`` on a model quantized at create time: its unquantized layers compute in
    float32 as asked (otherwise they load in their stored bfloat16 on a CPU with native bfloat16, in float32
    elsewhere), and the KV cache matches them. Before,
    the 8-bit model failed every request ("Expected query, key, and value to have the same dtype")."""
    name = f"smol-dtype-{level.lower()}"
    quantize(client, name, level)
    with running_server(server.models, tmp_path / "server.log", env={"OLLAMA_TORCH_DTYPE": "float32"}) as other:
        text = ollama.Client(host=other.url, timeout=600).generate(model=name, prompt=PROMPT, options=GREEDY).response
        log = other.log()
    assert len(text.split()) >= 8, text
    assert any(word in text.lower() for word in ("sky", "blue", "light", "scatter", "atmosphere")), text
    [loaded] = [line for line in log.splitlines() if f"msg=loaded {name}" in line]
    assert "on cpu (float32)" in loaded, loaded
    assert f"output head of {name}" not in log  # a float32 head is left as it is
