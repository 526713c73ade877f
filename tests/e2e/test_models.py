"""Model management through the real server process and the official ``ollama`` client."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import ollama
import pytest

from tests.e2e.conftest import upload_dir
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow


def statuses(stream: object) -> list[str]:
    return [p.status or "" for p in stream]  # type: ignore[attr-defined]


def test_version_and_root(http: httpx.Client) -> None:
    r = http.get("/api/version")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json; charset=utf-8"
    assert set(r.json()) == {"version"}
    assert http.get("/").text == "Ollama is running"
    assert http.get("/api/show").status_code == 405


def test_cors(http: httpx.Client) -> None:
    """Ollama's default origins through the real server; a foreign origin's 403 carries no CORS header."""
    r = http.get("/api/tags", headers={"Origin": "http://localhost:3000"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    r = http.options("/api/chat", headers=preflight)
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    for origin in ("https://evil.com", "http://localhost:3000.evil.com"):
        for r in (http.get("/api/tags", headers={"Origin": origin}), http.options("/api/chat", headers={**preflight, "Origin": origin})):
            assert r.status_code == 403, origin
            assert not [k for k in r.headers if k.lower().startswith("access-control-")], (origin, r.headers)
    assert http.get("/api/nope").status_code == 404


def test_create_from_gguf(client: ollama.Client, smollm2_gguf: Path, server: ServerProcess) -> None:
    digest = client.create_blob(smollm2_gguf)
    lines = statuses(client.create(model="gguf-test", files={smollm2_gguf.name: digest}, stream=True))
    assert lines[0] == "parsing GGUF"
    assert f"using existing layer {digest}" in lines
    assert lines[-2:] == ["writing manifest", "success"]
    show = client.show("gguf-test")
    assert show.details.format == "gguf" and show.details.family == "llama"
    assert show.details.quantization_level == "Q4_1"
    assert show.modelinfo["llama.context_length"] == 8192
    assert show.modelinfo["general.architecture"] == "llama"
    assert "tokenizer.chat_template" not in show.modelinfo and "general.name" not in show.modelinfo
    assert "<|im_start|>" in (show.template or "")
    assert "completion" in show.capabilities
    # The Safetensors conversion is kept with the store: creating again does not convert again.
    again = statuses(client.create(model="gguf-test-2", files={smollm2_gguf.name: digest}, stream=True))
    assert "converting model" not in again and again[-1] == "success"
    derived = server.models / "ollama-torch" / "derived" / digest.replace(":", "-")
    assert (derived / "config.json").is_file()


def test_create_from_safetensors_directory(client: ollama.Client, minilm_dir: Path, server: ServerProcess) -> None:
    files = upload_dir(client, minilm_dir)
    assert "1_Pooling/config.json" in files and "model.safetensors" in files
    lines = statuses(client.create(model="minilm-test", files=files, stream=True))
    assert lines[0] == "converting model" and lines[-1] == "success"
    assert all(f"using existing layer {d}" in lines for d in files.values())
    show = client.show("minilm-test")
    assert show.details.format == "safetensors" and show.details.family == "bert"
    assert show.capabilities == ["embedding"]
    assert show.modelinfo["bert.context_length"] == 512 and show.modelinfo["bert.embedding_length"] == 384
    assert show.details.quantization_level == "F32"
    manifest = json.loads((server.models / "manifests/registry.ollama.ai/library/minilm-test/latest").read_text())
    by_name = {layer["name"]: layer for layer in manifest["layers"]}
    assert by_name["model.safetensors"]["mediaType"] == "application/vnd.ollama.image.tensor"
    assert by_name["config.json"]["mediaType"] == "application/vnd.ollama.image.json"
    assert by_name["vocab.txt"]["mediaType"] == "application/vnd.ollama.image.file"
    assert by_name["model.safetensors"]["digest"] == files["model.safetensors"]


def test_create_from_model_with_system_and_parameters(client: ollama.Client, http: httpx.Client, smollm2: str) -> None:
    lines = statuses(
        client.create(
            model="pirate",
            from_=smollm2,
            system="You are a pirate.",
            parameters={"temperature": 0.3, "stop": ["<|im_end|>", "Arr"]},
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Ahoy!"}],
            stream=True,
        )
    )
    assert any(line.startswith("using existing layer") for line in lines)
    assert sum(line.startswith("creating new layer") for line in lines) >= 2
    show = client.show("pirate")
    raw = http.post("/api/show", json={"model": "pirate"}).json()
    assert raw["system"] == "You are a pirate."
    assert show.details.parent_model == smollm2
    assert 'temperature                    0.3' in (show.parameters or "")
    assert 'stop                           "Arr"' in (show.parameters or "")
    assert "SYSTEM" in (show.modelfile or "") and "You are a pirate." in (show.modelfile or "")
    assert raw["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Ahoy!"}]
    base = http.post("/api/show", json={"model": smollm2}).json()
    assert "system" not in base and base["details"]["format"] == show.details.format


def test_list_copy_delete_keeps_shared_blobs(client: ollama.Client, smollm2: str, server: ServerProcess) -> None:
    client.create(model="shared-a", from_=smollm2, system="A")
    client.copy("shared-a", "ns/shared-copy:v1")
    names = {m.model for m in client.list().models}
    assert {"shared-a:latest", "ns/shared-copy:v1", smollm2} <= names
    listed = next(m for m in client.list().models if m.model == "shared-a:latest")
    manifest_path = server.models / "manifests/registry.ollama.ai/library/shared-a/latest"
    assert listed.digest == hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    layers = json.loads(manifest_path.read_text())["layers"]
    client.delete("shared-a")
    assert "shared-a:latest" not in {m.model for m in client.list().models}
    for layer in layers:  # every blob is still used by the copy (and the base model)
        assert (server.models / "blobs" / layer["digest"].replace(":", "-")).is_file()
    client.delete("ns/shared-copy:v1")
    system_layer = next(layer for layer in layers if layer["mediaType"].endswith("system"))
    assert not (server.models / "blobs" / system_layer["digest"].replace(":", "-")).exists()
    assert client.show(smollm2).details.format == "gguf"  # the base survives


def test_case_insensitive_names(client: ollama.Client, smollm2: str) -> None:
    assert client.show("SmolLM2:135M").details.family == "llama"


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (lambda c: c.show("nope"), 404, "model 'nope:latest' not found"),
        (lambda c: c.delete("nope"), 404, "model 'nope' not found"),
        (lambda c: c.copy("nope", "x"), 404, 'model "nope" not found'),
        (lambda c: c.create(model="x"), 400, "neither 'from' or 'files' was specified"),
        (lambda c: c.create(model="bad name!", from_="smollm2:135m"), 400, "invalid model name"),
        (lambda c: c.create(model="x", from_="smollm2:135m", quantize="q4_K_M"), 400, "quantization is only supported for F16, BF16 and F32 models"),
        (lambda c: c.create(model="x", from_="smollm2:135m", template="{{ .Prompt "), 400, "template error"),
        (lambda c: c.delete("a/b/c/d/e"), 400, 'name "a/b/c/d/e" is invalid'),
        (lambda c: c.copy("smollm2:135m", "-bad"), 400, 'destination "-bad" is invalid'),
    ],
)
def test_errors(client: ollama.Client, smollm2: str, call: object, status: int, message: str) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        call(client)  # type: ignore[operator]
    assert info.value.status_code == status
    assert message in info.value.error


@pytest.mark.parametrize(
    "key",
    ["../evil.safetensors", "/etc/passwd", "a/../../b.safetensors", "./config.json", "a//b.json", "a\\..\\b.json", "dir/"],
)
def test_path_traversal_in_files(http: httpx.Client, key: str) -> None:
    r = http.post("/api/create", json={"model": "evil", "files": {key: "sha256:" + "0" * 64}})
    assert r.status_code == 400 and r.json() == {"error": "file path must be relative"}


def test_bad_digests(http: httpx.Client, server: ServerProcess) -> None:
    assert http.head("/api/blobs/sha256:xyz").status_code == 400
    assert http.head("/api/blobs/sha256:" + "1" * 64).status_code == 404
    r = http.post("/api/blobs/sha256:..%2F..%2Fetc", content=b"x")
    assert r.status_code in (400, 404)
    good = "sha256:" + hashlib.sha256(b"payload").hexdigest()
    r = http.post(f"/api/blobs/{good}", content=b"not the payload")
    assert r.status_code == 400 and r.json()["error"].startswith(f'digest mismatch, expected "{good}"')
    assert http.head(f"/api/blobs/{good}").status_code == 404
    assert http.post(f"/api/blobs/{good}", content=b"payload").status_code == 201
    assert http.post(f"/api/blobs/{good}", content=b"payload").status_code == 200
    r = http.post("/api/create", json={"model": "x", "files": {"a.gguf": ""}})
    assert r.status_code == 400 and r.json() == {"error": "invalid digest format"}
    missing = "sha256:" + "2" * 64
    r = http.post("/api/create", json={"model": "x", "files": {"a.gguf": missing}})
    assert r.status_code == 400 and missing in r.json()["error"]
    assert not list((server.models / "blobs").glob(".partial-*"))


def test_interrupted_upload_stores_nothing(server: ServerProcess) -> None:
    data = b"z" * 1_000_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(
            f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data[: len(data) // 2]
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while list((server.models / "blobs").glob(".partial-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (server.models / "blobs" / digest.replace(":", "-")).exists()
    assert not list((server.models / "blobs").glob(".partial-*"))


def test_unknown_architecture(client: ollama.Client, http: httpx.Client, tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["FooBarForCausalLM"], "model_type": "foobar"}))
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    files = upload_dir(client, tmp_path)
    r = http.post("/api/create", json={"model": "foo", "files": files})
    assert r.status_code == 400 and 'unsupported architecture "FooBarForCausalLM"' in r.json()["error"]
    assert http.post("/api/show", json={"model": "foo"}).status_code == 404


def test_not_gguf(client: ollama.Client, http: httpx.Client, tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"NOPE" + b"\0" * 100)
    r = http.post("/api/create", json={"model": "fake", "files": {"model.gguf": client.create_blob(fake)}})
    assert r.status_code == 400 and r.json() == {"error": "supplied file was not in GGUF format"}


def test_create_stream_false_returns_last_status(http: httpx.Client, smollm2: str) -> None:
    r = http.post("/api/create", json={"model": "quiet", "from": smollm2, "stream": False})
    assert r.status_code == 200 and r.json() == {"status": "success"}


def test_bad_json(http: httpx.Client) -> None:
    assert http.post("/api/create", content=b"").json() == {"error": "missing request body"}
    r = http.post("/api/create", content=b"{bad")
    assert r.status_code == 400
    r = http.post("/api/create", json={"model": 5})
    assert r.status_code == 400 and "cannot unmarshal number" in r.json()["error"]


def test_create_and_delete_churn_never_loses_a_layer(client: ollama.Client, server: ServerProcess, tiny_llama_dir: Path) -> None:
    """8 clients create models FROM one base, each with one of three system prompts, and delete them
    again: a delete used to collect the system-prompt blob a concurrent create had just found stored,
    and that create failed with 404 ``blob ... not found`` (809 failures in 40 s)."""
    client.create(model="churn-base", files=upload_dir(client, tiny_llama_dir))
    systems = ["You are a pirate.", "You are a poet.", "You answer in French."]
    deadline = time.monotonic() + 6
    failures: list[str] = []
    done: list[int] = []

    def churn(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            name, i = f"churn-{worker}", 0
            while True:
                body = {"model": name, "from": "churn-base", "system": systems[(worker + i) % 3], "stream": False}
                r = http.post("/api/create", json=body)
                i += 1
                if r.status_code != 200 or r.json() != {"status": "success"}:
                    failures.append(f"create {name}: {r.status_code} {r.text}")
                if time.monotonic() >= deadline:  # each worker's last model stays
                    break
                d = http.request("DELETE", "/api/delete", json={"model": name})
                if d.status_code != 200:
                    failures.append(f"delete {name}: {d.status_code} {d.text}")
            done.append(i)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(churn, range(8)))
    print(f"{sum(done)} creates by 8 clients, {len(failures)} failures")
    assert not failures, f"{len(failures)} of {sum(done)} creates failed, first: {failures[:3]}"
    assert sum(done) >= 16
    for path in (server.models / "manifests").rglob("*"):  # every model left has every blob it references
        if path.is_file():
            manifest = json.loads(path.read_bytes())
            for layer in [manifest["config"], *manifest["layers"]]:
                assert (server.models / "blobs" / layer["digest"].replace(":", "-")).is_file(), (path, layer)
    survivors = sorted(m.model or "" for m in client.list().models if (m.model or "").startswith("churn-") and m.model != "churn-base:latest")
    assert len(survivors) == 8
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.post("/api/show", json={"model": survivors[0]}).json()["system"] in systems
    assert client.chat(model=survivors[0], messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2}).done
    for name in [*survivors, "churn-base"]:
        client.delete(name)
