"""LoRA adapters on GGUF models through the real server, against PEFT itself and llama.cpp itself.

``"gguf": true`` on a model with adapters stores the weights as one GGUF ``model`` layer and each adapter as
an unnamed ``adapter`` layer holding a GGUF LoRA, the layout a stock Ollama makes for ``ADAPTER x.gguf`` and
passes to llama.cpp as ``--lora``: llama.cpp given those two blobs, and our engine serving the model, both
generate PEFT's greedy tokens. ``/api/x/export`` of a model with adapters writes them merged into the
weights, one file llama.cpp runs to PEFT's tokens. What has no GGUF LoRA form is a 400 that stores nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from converters.gguf_info import read_gguf_info
from tests import llama_cpp_support as lc
from tests.e2e.conftest import upload_dir
from tests.e2e.test_adapters import ALL_LINEAR, adapter_files
from tests.lora_support import peft_greedy, train_lora
from tests.registry_fixtures import Registry, registry
from tests.server_process import ServerProcess
from tests.tiny_models import build_tiny_llama

pytestmark = pytest.mark.slow
__all__ = ["registry"]  # the session fixture, imported for pytest

PROMPT = "Hello! How are you today?"
N = 12
ADAPTER = "application/vnd.ollama.image.adapter"
MODEL = "application/vnd.ollama.image.model"


def create(http: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return http.post("/api/create", json={**body, "stream": False}, timeout=600)


def manifest(server: ServerProcess, name: str) -> dict[str, Any]:
    path = server.models / "manifests" / "registry.ollama.ai" / "library" / name / "latest"
    return dict(json.loads(path.read_text()))


def blob(server: ServerProcess, digest: str) -> Path:
    return server.models / "blobs" / digest.replace(":", "-")


def engine_greedy(client: ollama.Client, model: str) -> tuple[list[int], list[int]]:
    """(prompt ids, greedy reply ids) of our engine for ``PROMPT`` through the model's template."""
    r = client.generate(model=model, prompt=PROMPT, options={"temperature": 0, "num_predict": N, "seed": 0})
    assert r.context is not None and r.eval_count
    context = list(r.context)
    return context[: len(context) - r.eval_count], context[len(context) - r.eval_count :]


def llama_cpp_greedy(model: Path, prompt_ids: list[int], n: int, lora: Path | None = None) -> list[int]:
    """llama.cpp's greedy tokens for ``prompt_ids`` on ``model``, with the GGUF LoRA ``lora`` applied (as
    Ollama's runner applies an adapter layer), stopping at end of generation."""
    llm = lc.load(model, **({"lora_path": str(lora)} if lora is not None else {}))
    out: list[int] = []
    for token in llm.generate(prompt_ids, temp=0.0, top_k=1, reset=True):
        if llm.token_eos() == token or len(out) == n:
            break
        out.append(int(token))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, client: ollama.Client, http: httpx.Client) -> dict[str, Any]:
    """A tiny Llama base (stored as Safetensors) and two PEFT adapters trained on it."""
    root = tmp_path_factory.mktemp("gguf-lora")
    base = build_tiny_llama(root / "base")
    qv = train_lora(base, root / "qv", seed=11)
    every = train_lora(base, root / "all", targets=ALL_LINEAR, seed=12, rank=8, alpha=16, use_rslora=True)
    client.create(model="ga-base", files=upload_dir(client, base))
    r = create(http, {"model": "ga-peft", "from": "ga-base", "adapters": adapter_files(client, qv)})
    assert r.status_code == 200, r.text
    return {"root": root, "base": base, "qv": qv, "all": every}


def test_create_gguf_stores_ollamas_adapter_layer(client: ollama.Client, http: httpx.Client, server: ServerProcess,
                                                   tiny: dict[str, Any]) -> None:
    """Safetensors + a PEFT adapter, ``gguf: true``: a GGUF model layer and a GGUF LoRA adapter layer, which
    llama.cpp runs (model + --lora) to PEFT's greedy tokens, as our engine does serving the model."""
    body = {"model": "ga-gguf", "files": upload_dir(client, tiny["base"]), "adapters": adapter_files(client, tiny["qv"]), "gguf": True}
    r = create(http, body)
    assert r.status_code == 200, r.text
    layers = manifest(server, "ga-gguf")["layers"]
    models = [layer for layer in layers if layer["mediaType"] == MODEL]
    adapters = [layer for layer in layers if layer["mediaType"] == ADAPTER]
    assert len(models) == 1 and len(adapters) == 1 and "name" not in adapters[0]  # Ollama's layout
    assert not [layer for layer in layers if layer["mediaType"].startswith("application/vnd.ollama.image.tensor")]
    info = read_gguf_info(blob(server, adapters[0]["digest"]))
    assert info.general_type == "adapter" and info.metadata["adapter.type"] == "lora"

    prompt_ids, reply = engine_greedy(client, "ga-gguf")
    expected = peft_greedy(tiny["base"], [tiny["qv"]], prompt_ids, N)
    assert expected != peft_greedy(tiny["base"], [], prompt_ids, N)  # the adapter changes the output
    assert reply == expected
    assert llama_cpp_greedy(blob(server, models[0]["digest"]), prompt_ids, N, blob(server, adapters[0]["digest"])) == expected

    shown = http.post("/api/show", json={"model": "ga-gguf"}).json()
    assert shown["details"]["adapters"] == [adapters[0]["digest"].removeprefix("sha256:")[:12]]
    assert shown["details"]["format"] == "gguf"
    assert f"ADAPTER {blob(server, adapters[0]['digest'])}" in shown["modelfile"]


def test_create_gguf_from_a_model_with_adapters_and_more(client: ollama.Client, http: httpx.Client, server: ServerProcess,
                                                         tiny: dict[str, Any]) -> None:
    """FROM a Safetensors model with a PEFT adapter, adding another, quantized: both become GGUF LoRA layers
    (the inherited PEFT layers are gone) and our engine serves the stack as PEFT computes it."""
    body = {"model": "ga-stacked", "from": "ga-peft", "adapters": adapter_files(client, tiny["all"]), "gguf": True, "quantize": "f16"}
    r = create(http, body)
    assert r.status_code == 200, r.text
    layers = manifest(server, "ga-stacked")["layers"]
    adapters = [layer for layer in layers if layer["mediaType"] == ADAPTER]
    assert len(adapters) == 2 and all("name" not in layer for layer in adapters)
    assert all(read_gguf_info(blob(server, layer["digest"])).general_type == "adapter" for layer in adapters)
    assert http.post("/api/show", json={"model": "ga-stacked"}).json()["details"]["quantization_level"] == "F16"
    # F16 rounds the base, which PEFT's reference does not: the tokens are compared on the F32 build
    r = create(http, {"model": "ga-stacked32", "from": "ga-peft", "adapters": adapter_files(client, tiny["all"]), "gguf": True})
    assert r.status_code == 200, r.text
    prompt_ids, reply = engine_greedy(client, "ga-stacked32")
    assert reply == peft_greedy(tiny["base"], [tiny["qv"], tiny["all"]], prompt_ids, N)


def test_a_stored_gguf_lora_layer_is_kept_as_it_is(client: ollama.Client, http: httpx.Client, server: ServerProcess,
                                                   tiny: dict[str, Any]) -> None:
    """A GGUF LoRA given in ``adapters`` is stored byte for byte, as Ollama stores ``ADAPTER x.gguf``."""
    from converters.gguf_export.lora import write_gguf_lora

    lora = write_gguf_lora(tiny["qv"], tiny["base"], tiny["root"] / "qv.gguf")
    digest = client.create_blob(lora)
    r = create(http, {"model": "ga-given", "from": "ga-base", "adapters": {"qv.gguf": digest}, "gguf": True})
    assert r.status_code == 200, r.text
    assert [layer["digest"] for layer in manifest(server, "ga-given")["layers"] if layer["mediaType"] == ADAPTER] == [digest]
    prompt_ids, reply = engine_greedy(client, "ga-given")
    assert reply == peft_greedy(tiny["base"], [tiny["qv"]], prompt_ids, N)


@pytest.mark.parametrize("model", ["ga-peft", "ga-gguf"])
def test_export_merges_the_adapters(client: ollama.Client, http: httpx.Client, tiny: dict[str, Any], tmp_path: Path, model: str) -> None:
    """The export of a model with adapters (PEFT layers on Safetensors, or GGUF layers on a GGUF) is one
    F32 file with the adapters merged: llama.cpp alone runs it to PEFT's greedy tokens."""
    if model == "ga-gguf" and http.post("/api/show", json={"model": model}).status_code == 404:
        pytest.skip("needs test_create_gguf_stores_ollamas_adapter_layer's model")
    lines = [json.loads(line) for line in http.post("/api/x/export", json={"model": model, "quantize": "f32"}, timeout=600).text.splitlines()]
    assert any(line["status"] == "merging 1 LoRA adapter into the weights" for line in lines), lines
    done = lines[-1]
    assert done["status"] == "success" and done["adapters_merged"] == 1 and done["quantization_level"] == "F32", done
    out = tmp_path / "merged.gguf"
    out.write_bytes(http.get(f"/api/x/blobs/{done['blob']}").content)
    prompt_ids, _ = engine_greedy(client, "ga-peft")
    expected = peft_greedy(tiny["base"], [tiny["qv"]], prompt_ids, N)
    assert llama_cpp_greedy(out, prompt_ids, N) == expected


def test_cli_create_gguf_and_export_with_adapters(server: ServerProcess, client: ollama.Client, tiny: dict[str, Any],
                                                   tmp_path: Path) -> None:
    """``create --gguf`` with ``ADAPTER ./dir`` stores a GGUF LoRA layer; ``export`` says it merged it."""
    from tests.e2e.test_gguf import _cli

    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM ga-base\nADAPTER {tiny['qv']}\n")
    created = _cli(server, "create", "ga-cli", "-f", str(modelfile), "--gguf")
    assert created.returncode == 0, created.stderr
    assert [layer["mediaType"] for layer in manifest(server, "ga-cli")["layers"]].count(ADAPTER) == 1
    prompt_ids, reply = engine_greedy(client, "ga-cli")
    assert reply == peft_greedy(tiny["base"], [tiny["qv"]], prompt_ids, N)
    out = tmp_path / "merged.gguf"
    exported = _cli(server, "export", "ga-peft", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert f"wrote {out} (F32" in exported.stdout and "1 LoRA adapter merged into the weights" in exported.stdout


def test_refusals_store_nothing(client: ollama.Client, http: httpx.Client, server: ServerProcess, tiny: dict[str, Any]) -> None:
    """What write_gguf_lora cannot represent (one alpha for every module; a LoRA bias) is a 400 naming why,
    given in ``adapters`` or inherited from the source model, and no blob or manifest is written."""
    root = tiny["root"]
    alphas = train_lora(tiny["base"], root / "alphas", seed=13, steps=1, alpha_pattern={"v_proj": 32})
    biased = train_lora(tiny["base"], root / "biased", seed=14, steps=1, lora_bias=True)
    r = create(http, {"model": "ga-alphas", "from": "ga-base", "adapters": adapter_files(client, alphas)})
    assert r.status_code == 200, r.text  # our engine serves it: only its GGUF form is refused
    cases = [
        ({"from": "ga-base", "adapters": adapter_files(client, alphas)}, "alphas: llama.cpp applies one LoRA alpha to every module"),
        ({"from": "ga-base", "adapters": adapter_files(client, biased)}, "biased: LoRA biases and fan-in-fan-out (Conv1D) adapters have no GGUF LoRA form"),
        ({"from": "ga-alphas"}, "of the source model: llama.cpp applies one LoRA alpha to every module"),
        ({"files": upload_dir(client, tiny["base"]), "adapters": adapter_files(client, alphas)}, "llama.cpp applies one LoRA alpha"),
    ]
    blobs = set((server.models / "blobs").iterdir())
    for body, message in cases:
        r = create(http, {"model": "ga-refused", "gguf": True, **body})
        assert r.status_code == 400 and message in r.json()["error"], r.text
        streamed = http.post("/api/create", json={"model": "ga-refused", "gguf": True, **body}, timeout=600)
        assert streamed.status_code == 400 and message in streamed.json()["error"], streamed.text  # before streaming
    assert set((server.models / "blobs").iterdir()) == blobs
    assert http.post("/api/show", json={"model": "ga-refused"}).status_code == 404


@pytest.fixture(scope="module")
def base_gguf(tiny: dict[str, Any]) -> Path:
    """The tiny base as an F32 GGUF file (a GGUF source for create), its greedy tokens the base's."""
    from converters.gguf_export import export_hf

    path = tiny["root"] / "base-f32.gguf"
    export_hf(tiny["base"], path)
    return path


@pytest.mark.parametrize("gguf", [True, False])
def test_a_gguf_file_sources_adapter_refusals_come_before_streaming(client: ollama.Client, http: httpx.Client, server: ServerProcess,
                                                                  tiny: dict[str, Any], base_gguf: Path, gguf: bool) -> None:
    """A GGUF file as the source (its base known only from the file) with an adapter that is refused: a 400
    before the first status line (the GGUF was parsed and converted first, so it was an error line inside a
    200), and nothing stored: no blob, no model, no conversion of the source."""
    root = tiny["root"]
    corrupt = root / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    cases = [
        ({"a/adapter_config.json": "sha256:" + "0" * 64}, 'file "a/adapter_config.json" has no blob'),
        ({"corrupt.gguf": client.create_blob(corrupt)}, "corrupt.gguf: the adapter is not a readable GGUF file"),
    ]
    if gguf:  # what has no GGUF LoRA form
        alphas = train_lora(tiny["base"], root / "file-alphas", seed=13, steps=1, alpha_pattern={"v_proj": 32})
        cases.append((adapter_files(client, alphas), "file-alphas: llama.cpp applies one LoRA alpha to every module"))
    source = client.create_blob(base_gguf)
    derived = server.models / "ollama-torch" / "derived" / source.replace(":", "-")
    blobs, converted = set((server.models / "blobs").iterdir()), derived.exists()  # by an earlier test, or not
    for adapters, message in cases:
        r = http.post("/api/create", json={"model": "ga-file-refused", "files": {"base.gguf": source}, "adapters": adapters, "gguf": gguf}, timeout=600)
        assert r.status_code == 400 and message in r.json()["error"], r.text
    assert set((server.models / "blobs").iterdir()) == blobs
    assert http.post("/api/show", json={"model": "ga-file-refused"}).status_code == 404
    assert derived.exists() == converted  # refused before the source was converted


def test_create_gguf_from_a_gguf_file_with_an_adapter(client: ollama.Client, http: httpx.Client, server: ServerProcess,
                                                      tiny: dict[str, Any], base_gguf: Path) -> None:
    """A GGUF file, a PEFT adapter, ``gguf: true``: the file is the model layer as it is, the adapter a GGUF
    LoRA layer; llama.cpp (model + --lora) and our engine serving it both give PEFT's greedy tokens."""
    source = client.create_blob(base_gguf)
    body = {"model": "ga-file", "files": {"base.gguf": source}, "adapters": adapter_files(client, tiny["qv"]), "gguf": True}
    lines = [json.loads(line) for line in http.post("/api/create", json=body, timeout=600).text.splitlines()]
    assert lines[0] == {"status": "parsing GGUF"} and lines[-1] == {"status": "success"}, lines
    layers = manifest(server, "ga-file")["layers"]
    models = [layer["digest"] for layer in layers if layer["mediaType"] == MODEL]
    adapters = [layer["digest"] for layer in layers if layer["mediaType"] == ADAPTER]
    assert models == [source] and len(adapters) == 1
    prompt_ids, reply = engine_greedy(client, "ga-file")
    expected = peft_greedy(tiny["base"], [tiny["qv"]], prompt_ids, N)
    assert reply == expected
    assert llama_cpp_greedy(blob(server, source), prompt_ids, N, blob(server, adapters[0])) == expected


def test_push_and_pull_carry_the_gguf_adapter(registry: Registry, client: ollama.Client, http: httpx.Client, server: ServerProcess,
                                              tiny: dict[str, Any]) -> None:
    """A GGUF adapter model through a real registry: the adapter layer goes up and comes back unchanged,
    and the pulled model (no derived conversion of its own yet) serves PEFT's tokens."""
    if http.post("/api/show", json={"model": "ga-gguf"}).status_code == 404:
        pytest.skip("needs test_create_gguf_stores_ollamas_adapter_layer's model")
    name = f"{registry.host}/library/ga-pushed:latest"
    client.copy("ga-gguf", name)
    assert client.push(name, insecure=True).status == "success"
    shown = http.post("/api/show", json={"model": name}).json()["details"]["adapters"]
    client.delete(name)
    assert client.pull(name, insecure=True).status == "success"
    assert http.post("/api/show", json={"model": name}).json()["details"]["adapters"] == shown
    prompt_ids, reply = engine_greedy(client, name)
    assert reply == peft_greedy(tiny["base"], [tiny["qv"]], prompt_ids, N)
