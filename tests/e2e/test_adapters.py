"""LoRA adapters end to end, against PEFT itself: real PEFT adapters trained here on tiny models of three
architectures (Llama, Qwen2, GPT-2 with its Conv1D layers) and on the real SmolLM2, created with
``adapters`` (several stack), served on the one resident base, greedy output equal to PEFT's
``PeftModel.generate`` token for token alone and mixed in one batch with other adapters and the base; checks
at create time refuse what cannot be applied exactly, and nothing is half created."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from tests.e2e.conftest import upload_dir
from tests.lora_support import peft_greedy, train_lora
from tests.registry_fixtures import Registry, registry
from tests.server_process import ServerProcess
from tests.tiny_models import build_tiny_llama

pytestmark = pytest.mark.slow
__all__ = ["registry"]  # the session fixture, imported for pytest

PROMPT = "Hello! How are you today?"
N = 12
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def adapter_files(client: ollama.Client, *dirs: Path) -> dict[str, str]:
    """``adapters`` for /api/create: each directory's adapter files under its own name (they stack)."""
    return {f"{d.name}/{p.name}": client.create_blob(p) for d in dirs for p in sorted(d.iterdir()) if p.name.startswith("adapter_")}


def create(http: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return http.post("/api/create", json={**body, "stream": False}, timeout=600)


def prompt_ids(base: Path) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    return list(tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)["input_ids"])


def generated(client: ollama.Client, model: str, n_prompt: int) -> list[int]:
    r = client.generate(model=model, prompt=PROMPT, options={"temperature": 0, "num_predict": N})
    assert r.context is not None
    return list(r.context[n_prompt:])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, client: ollama.Client, http: httpx.Client) -> dict[str, Any]:
    """A tiny Llama base and three adapters: two on it (q/v, and all linear layers), one on another base."""
    root = tmp_path_factory.mktemp("lora")
    base = build_tiny_llama(root / "base")
    a1 = train_lora(base, root / "qv", seed=1)
    a2 = train_lora(base, root / "all", targets=ALL_LINEAR, seed=2, rank=8, alpha=16, use_rslora=True)
    client.create(model="lora-base", files=upload_dir(client, base))
    for name, dirs in (("lora-qv", [a1]), ("lora-all", [a2]), ("lora-both", [a1, a2])):
        r = create(http, {"model": name, "from": "lora-base", "adapters": adapter_files(client, *dirs)})
        assert r.status_code == 200, r.text
    return {"root": root, "base": base, "qv": a1, "all": a2, "ids": prompt_ids(base)}


def test_greedy_equals_peft_alone_and_mixed_in_one_batch(client: ollama.Client, tiny: dict[str, Any], server: ServerProcess) -> None:
    base, ids = tiny["base"], tiny["ids"]
    expected = {
        "lora-base": peft_greedy(base, [], ids, N),
        "lora-qv": peft_greedy(base, [tiny["qv"]], ids, N),
        "lora-all": peft_greedy(base, [tiny["all"]], ids, N),
        "lora-both": peft_greedy(base, [tiny["qv"], tiny["all"]], ids, N),
    }
    assert len({tuple(v) for v in expected.values()}) == 4  # the adapters really change the output
    for model, tokens in expected.items():
        assert generated(client, model, len(ids)) == tokens, model

    names = ["lora-base", "lora-qv", "lora-all", "lora-both"] * 2

    def run(name: str) -> list[int]:
        return generated(ollama.Client(host=server.url, timeout=600), name, len(ids))

    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(run, names))
    assert [r == expected[n] for r, n in zip(results, names, strict=True)] == [True] * len(names)
    loaded = [m.model for m in client.ps().models if m.model.startswith("lora-")]
    assert len(loaded) == 1  # one resident base for all four models


def test_show_copy_and_delete_carry_the_adapters(client: ollama.Client, http: httpx.Client, tiny: dict[str, Any]) -> None:
    shown = http.post("/api/show", json={"model": "lora-both"}).json()
    assert len(shown["details"]["adapters"]) == 2
    assert sum(line.startswith("ADAPTER ") for line in shown["modelfile"].splitlines()) == 2
    assert "adapters" not in http.post("/api/show", json={"model": "lora-base"}).json()["details"]
    client.copy("lora-both", "lora-both-copy")
    assert http.post("/api/show", json={"model": "lora-both-copy"}).json()["details"]["adapters"] == shown["details"]["adapters"]
    assert generated(client, "lora-both-copy", len(tiny["ids"])) == generated(client, "lora-both", len(tiny["ids"]))
    client.delete("lora-both-copy")
    assert generated(client, "lora-both", len(tiny["ids"])) == peft_greedy(tiny["base"], [tiny["qv"], tiny["all"]], tiny["ids"], N)


@pytest.mark.parametrize("config", ["tiny-qwen2", "tiny-gpt2"])
def test_other_architectures(config: str, client: ollama.Client, http: httpx.Client, tmp_path: Path) -> None:
    base = build_tiny_llama(tmp_path / "base", config=config)
    targets = ("c_attn", "c_proj", "c_fc") if config == "tiny-gpt2" else ALL_LINEAR
    extra = {"fan_in_fan_out": True} if config == "tiny-gpt2" else {}
    adapter = train_lora(base, tmp_path / "adapter", targets=targets, seed=3, **extra)
    client.create(model=f"{config}-base", files=upload_dir(client, base))
    r = create(http, {"model": f"{config}-lora", "from": f"{config}-base", "adapters": adapter_files(client, adapter)})
    assert r.status_code == 200, r.text
    ids = prompt_ids(base)
    expected = peft_greedy(base, [adapter], ids, N)
    assert expected != peft_greedy(base, [], ids, N)
    assert generated(client, f"{config}-lora", len(ids)) == expected


def test_smollm2_adapter(client: ollama.Client, http: httpx.Client, smollm2: str, server: ServerProcess, tmp_path: Path) -> None:
    """A LoRA trained here on the real SmolLM2 (its store conversion), served on the shared base."""
    digest = json.loads((server.models / "manifests/registry.ollama.ai/library/smollm2/135m").read_text())["layers"][0]["digest"]
    client.generate(model=smollm2, prompt="")  # the conversion exists once the model has loaded
    base = server.models / "ollama-torch" / "derived" / digest.replace(":", "-")
    adapter = train_lora(base, tmp_path / "smol-lora", seed=4, steps=2)
    r = create(http, {"model": "smol-lora", "from": smollm2, "adapters": adapter_files(client, adapter)})
    assert r.status_code == 200, r.text
    ids = prompt_ids(base)
    assert generated(client, "smol-lora", len(ids)) == peft_greedy(base, [adapter], ids, N)


def _config_of(adapter: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((adapter / "adapter_config.json").read_text())
    return data


def _variant(src: Path, dst: Path, **changes: Any) -> Path:
    dst.mkdir()
    (dst / "adapter_model.safetensors").write_bytes((src / "adapter_model.safetensors").read_bytes())
    (dst / "adapter_config.json").write_text(json.dumps({**_config_of(src), **changes}))
    return dst


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"peft_type": "IA3"}, 'unsupported adapter type "IA3"'),
        ({"use_dora": True}, "DoRA adapters"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"auto_mapping": {"base_model_class": "GPT2LMHeadModel"}}, "trained on a GPT2LMHeadModel"),
    ],
)
def test_create_refuses_what_cannot_be_applied(change: dict[str, Any], message: str, client: ollama.Client, http: httpx.Client,
                                              tiny: dict[str, Any], tmp_path: Path) -> None:
    bad = _variant(tiny["qv"], tmp_path / "bad", **change)
    r = create(http, {"model": "lora-bad", "from": "lora-base", "adapters": adapter_files(client, bad)})
    assert r.status_code == 400 and message in r.json()["error"]
    assert "lora-bad:latest" not in [m.model for m in client.list().models]  # nothing half created


def test_create_refuses_an_adapter_of_another_shape_or_module(client: ollama.Client, http: httpx.Client, tiny: dict[str, Any],
                                                             tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    wide = train_lora(tiny["base"], tmp_path / "wide", targets=("gate_proj",), seed=5)
    tensors = load_file(str(wide / "adapter_model.safetensors"))
    renamed = {k.replace("layers.1.", "layers.7."): v for k, v in tensors.items()}
    save_file(renamed, str(wide / "adapter_model.safetensors"))
    r = create(http, {"model": "lora-missing", "from": "lora-base", "adapters": adapter_files(client, wide)})
    assert r.status_code == 400 and 'target module "model.layers.7.mlp.gate_proj" is not in the base model' in r.json()["error"]
    widened = {k: torch.zeros(v.shape[0], v.shape[1] * 2) if "lora_A" in k else v for k, v in tensors.items()}
    save_file(widened, str(wide / "adapter_model.safetensors"))
    r = create(http, {"model": "lora-shape", "from": "lora-base", "adapters": adapter_files(client, wide)})
    assert r.status_code == 400 and "takes 64 -> 128 features in the base model" in r.json()["error"]
    assert not {"lora-missing:latest", "lora-shape:latest"} & {m.model for m in client.list().models}


def test_adapter_refusals_come_before_streaming(client: ollama.Client, http: httpx.Client, tiny: dict[str, Any], tmp_path: Path) -> None:
    """Where the source streams before the adapters are added (Safetensors files: ``converting model``; a
    quantize), a refused adapter is still a 400 before the first status line, not an error line in a 200."""
    bad = adapter_files(client, _variant(tiny["qv"], tmp_path / "dora", use_dora=True))
    for source in ({"files": upload_dir(client, tiny["base"])}, {"from": "lora-base", "quantize": "q8_0"}):
        r = http.post("/api/create", json={"model": "lora-late", "adapters": bad, **source}, timeout=600)
        assert r.status_code == 400 and "DoRA adapters" in r.json()["error"], r.text
    assert "lora-late:latest" not in [m.model for m in client.list().models]


def test_embeddings_of_an_adapter_model_use_the_adapter(client: ollama.Client, tiny: dict[str, Any]) -> None:
    base = client.embed(model="lora-base", input="The sky is blue.").embeddings[0]
    tuned = client.embed(model="lora-all", input="The sky is blue.").embeddings[0]
    assert max(abs(a - b) for a, b in zip(base, tuned, strict=True)) > 1e-3


def test_cli_modelfile_with_stacked_adapters(server: ServerProcess, client: ollama.Client, tiny: dict[str, Any], tmp_path: Path) -> None:
    """``ollama-torch create`` uploads each ADAPTER directory as blobs; several ADAPTER lines stack."""
    from tests.e2e.test_cli import cli

    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM lora-base\nADAPTER {tiny['qv']}\nADAPTER {tiny['all']}\n")
    out = cli(server, "create", "lora-cli", "-f", str(modelfile))
    assert out.returncode == 0, out.stderr
    ids = tiny["ids"]
    assert generated(client, "lora-cli", len(ids)) == peft_greedy(tiny["base"], [tiny["qv"], tiny["all"]], ids, N)
    shown = cli(server, "show", "lora-cli", "--modelfile")
    assert shown.stdout.count("\nADAPTER ") == 2


def test_push_and_pull_carry_the_adapters(registry: Registry, client: ollama.Client, http: httpx.Client, tiny: dict[str, Any]) -> None:
    """An adapter model through a real registry: its adapter layers go up and come back, and it still
    equals PEFT after the local copies are gone."""
    name = f"{registry.host}/library/lora-pushed:latest"
    client.copy("lora-all", name)
    assert client.push(name, insecure=True).status == "success"
    manifest = http.post("/api/show", json={"model": name}).json()["details"]["adapters"]
    client.delete(name)
    assert client.pull(name, insecure=True).status == "success"
    assert http.post("/api/show", json={"model": name}).json()["details"]["adapters"] == manifest
    ids = tiny["ids"]
    assert generated(client, name, len(ids)) == peft_greedy(tiny["base"], [tiny["all"]], ids, N)


# -- GGUF LoRA adapters (Ollama's form), converted once at create ---------------------------------------
@pytest.fixture(scope="module")
def gguf_loras(tiny: dict[str, Any]) -> dict[str, Path]:
    """The tiny adapters as GGUF LoRA files (``convert_lora_to_gguf.py``'s format; llama.cpp runs them to
    PEFT's tokens in tests/converters/test_gguf_lora.py)."""
    from converters.gguf_export.lora import write_gguf_lora

    root = tiny["root"]
    return {name: write_gguf_lora(tiny[name], tiny["base"], root / f"{name}.gguf") for name in ("qv", "all")}


def test_gguf_lora_adapter_equals_peft_alone_and_stacked(client: ollama.Client, http: httpx.Client, tiny: dict[str, Any],
                                                          gguf_loras: dict[str, Path]) -> None:
    ids = tiny["ids"]
    r = create(http, {"model": "lora-gguf", "from": "lora-base", "adapters": {"all.gguf": client.create_blob(gguf_loras["all"])}})
    assert r.status_code == 200, r.text
    assert generated(client, "lora-gguf", len(ids)) == peft_greedy(tiny["base"], [tiny["all"]], ids, N)
    # stored in the PEFT form, exactly: the converted weights are the directory's, so the adapter id is the same
    assert http.post("/api/show", json={"model": "lora-gguf"}).json()["details"]["adapters"] == \
        http.post("/api/show", json={"model": "lora-all"}).json()["details"]["adapters"]
    stacked = {**adapter_files(client, tiny["qv"]), "all.gguf": client.create_blob(gguf_loras["all"])}
    r = create(http, {"model": "lora-gguf-stacked", "from": "lora-base", "adapters": stacked})
    assert r.status_code == 200, r.text
    assert generated(client, "lora-gguf-stacked", len(ids)) == peft_greedy(tiny["base"], [tiny["qv"], tiny["all"]], ids, N)


def test_gguf_lora_on_a_gguf_base(client: ollama.Client, http: httpx.Client, tiny: dict[str, Any], gguf_loras: dict[str, Path]) -> None:
    """Ollama's case: a GGUF base (the tiny Llama exported to F32) with a GGUF LoRA, to PEFT's tokens."""
    from converters.gguf_export import export_hf

    base_gguf = tiny["root"] / "base-f32.gguf"
    if not base_gguf.exists():
        export_hf(tiny["base"], base_gguf)
    r = create(http, {"model": "lora-gguf-base", "files": {"base.gguf": client.create_blob(base_gguf)}})
    assert r.status_code == 200, r.text
    r = create(http, {"model": "lora-gguf-on-gguf", "from": "lora-gguf-base", "adapters": {"qv.gguf": client.create_blob(gguf_loras["qv"])}})
    assert r.status_code == 200, r.text
    ids = tiny["ids"]
    assert generated(client, "lora-gguf-on-gguf", len(ids)) == peft_greedy(tiny["base"], [tiny["qv"]], ids, N)


def test_gguf_lora_refusals_leave_nothing_behind(client: ollama.Client, http: httpx.Client, server: ServerProcess, tiny: dict[str, Any],
                                                 tmp_path: Path) -> None:
    import hashlib

    from converters.gguf_export.lora import write_gguf_lora
    from converters.gguf_lora import gguf_lora_to_peft

    qwen = build_tiny_llama(tmp_path / "qwen", config="tiny-qwen2")
    other = write_gguf_lora(train_lora(qwen, tmp_path / "qwen-lora", seed=6, steps=1), qwen, tmp_path / "qwen.gguf")
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    fresh = train_lora(tiny["base"], tmp_path / "fresh", seed=7, steps=1)
    good = write_gguf_lora(fresh, tiny["base"], tmp_path / "fresh.gguf")
    converted = gguf_lora_to_peft(good, tiny["base"], tmp_path / "fresh-back") / "adapter_model.safetensors"
    converted_blob = server.models / "blobs" / ("sha256-" + hashlib.sha256(converted.read_bytes()).hexdigest())
    cases = [
        ({"qwen.gguf": client.create_blob(other)}, 'qwen.gguf: the GGUF adapter is for a "qwen2" model, but the base model is "llama"'),
        ({"corrupt.gguf": client.create_blob(corrupt)}, "corrupt.gguf: the adapter is not a readable GGUF file"),
        # a good adapter first: its converted files are stored only once every adapter passed
        ({"a-fresh.gguf": client.create_blob(good), "b-corrupt.gguf": client.create_blob(corrupt)}, "b-corrupt.gguf: "),
    ]
    for adapters, message in cases:
        r = create(http, {"model": "lora-gguf-bad", "from": "lora-base", "adapters": adapters})
        assert r.status_code == 400 and message in r.json()["error"], r.text
    assert not converted_blob.exists()
    r = create(http, {"model": "lora-gguf-bad", "files": {"fresh.gguf": client.create_blob(good)}})
    assert r.status_code == 400 and "the GGUF file is a LoRA adapter, not a model" in r.json()["error"]
    assert "lora-gguf-bad:latest" not in [m.model for m in client.list().models]


def test_cli_modelfile_with_a_gguf_adapter(server: ServerProcess, client: ollama.Client, tiny: dict[str, Any], gguf_loras: dict[str, Path],
                                           tmp_path: Path) -> None:
    """``ADAPTER ./qv.gguf`` as Ollama's Modelfiles write it: the CLI uploads the file, create converts it."""
    from tests.e2e.test_cli import cli

    (tmp_path / "qv.gguf").write_bytes(gguf_loras["qv"].read_bytes())
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM lora-base\nADAPTER ./qv.gguf\n")
    out = cli(server, "create", "lora-gguf-cli", "-f", str(modelfile))
    assert out.returncode == 0, out.stderr
    ids = tiny["ids"]
    assert generated(client, "lora-gguf-cli", len(ids)) == peft_greedy(tiny["base"], [tiny["qv"]], ids, N)


def test_smollm2_gguf_adapter(client: ollama.Client, http: httpx.Client, smollm2: str, server: ServerProcess, tmp_path: Path) -> None:
    """A LoRA trained here on the real SmolLM2 (its store conversion), given as a GGUF LoRA: PEFT's tokens."""
    from converters.gguf_export.lora import write_gguf_lora

    digest = json.loads((server.models / "manifests/registry.ollama.ai/library/smollm2/135m").read_text())["layers"][0]["digest"]
    client.generate(model=smollm2, prompt="")  # the conversion exists once the model has loaded
    base = server.models / "ollama-torch" / "derived" / digest.replace(":", "-")
    adapter = train_lora(base, tmp_path / "smol-lora", targets=ALL_LINEAR, seed=8, steps=2)
    lora = write_gguf_lora(adapter, base, tmp_path / "smol-lora.gguf")
    r = create(http, {"model": "smol-gguf-lora", "from": smollm2, "adapters": {"smol-lora.gguf": client.create_blob(lora)}})
    assert r.status_code == 200, r.text
    ids = prompt_ids(base)
    expected = peft_greedy(base, [adapter], ids, N)
    assert expected != peft_greedy(base, [], ids, N)
    assert generated(client, "smol-gguf-lora", len(ids)) == expected
