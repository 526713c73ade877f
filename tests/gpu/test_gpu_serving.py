"""GPU serving through the real server process (marked ``gpu``: skipped without CUDA).

The server picks CUDA itself (bf16); these tests check what CPU tests cannot: greedy output equal to
Transformers ``generate`` on the same weights and dtype, seeded sampling the same alone and in a batch of 8,
sampled requests (Ollama's default temperature) never failing, structured output, embeddings against
sentence-transformers, every quantization scheme loading and answering, and an unload giving the GPU memory
back. ``OLLAMA_TORCH_GPU_TESTS_ON=cpu`` runs them on the CPU instead, to check the tests themselves (the
memory check needs CUDA and skips there); ``make gpu-check`` runs them on a GPU machine.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ollama
import pytest
import torch

from tests.e2e.conftest import upload_dir
from tests.server_process import ServerProcess, start_server

ON = os.environ.get("OLLAMA_TORCH_GPU_TESTS_ON", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(ON == "cuda" and not torch.cuda.is_available(), reason="needs CUDA"),
]
DTYPE = torch.bfloat16 if ON == "cuda" else torch.float32  # what the server picks on that device
PROMPTS = ["Why is the sky blue?", "Write a haiku about the sea.", "What is 2+2?", "Tell me about Paris.",
           "What is Python?", "Explain gravity briefly.", "Who wrote Hamlet?", "Name three fruits."]


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("gpu")
    env = {"OLLAMA_TORCH_DEVICE": "cpu"} if ON == "cpu" else {}
    server = start_server(root / "models", root / "server.log", env=env, timeout=180)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(gpu_server: ServerProcess) -> ollama.Client:
    return ollama.Client(host=gpu_server.url, timeout=600)


@pytest.fixture(scope="module")
def smollm2(client: ollama.Client, smollm2_gguf: Path) -> str:
    client.create(model="smollm2:135m", files={smollm2_gguf.name: client.create_blob(smollm2_gguf)})
    return "smollm2:135m"


def _derived_dir(server: ServerProcess) -> Path:
    manifest = json.loads((server.models / "manifests/registry.ollama.ai/library/smollm2/135m").read_text())
    return server.models / "ollama-torch" / "derived" / manifest["layers"][0]["digest"].replace(":", "-")


def _greedy_references(directory: Path, prompts: list[str], n: int) -> list[list[int]]:
    """Transformers ``generate``'s greedy tokens for each chat prompt, on the device, in the server's dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=DTYPE, attn_implementation="sdpa").to(ON).eval()
    expected = []
    for prompt in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt")
        ids = (ids["input_ids"] if hasattr(ids, "keys") else ids).to(ON)
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=n, do_sample=False)
        expected.append([ids.shape[1], *(t for t in out[0][ids.shape[1]:].tolist() if t != tok.eos_token_id)])
    del model
    if ON == "cuda":
        torch.cuda.empty_cache()
    return expected  # each: the prompt's length, then the tokens


def test_greedy_matches_transformers_on_the_device(client: ollama.Client, smollm2: str, gpu_server: ServerProcess) -> None:
    n = 24
    client.generate(model=smollm2, prompt="")  # load (and convert) first
    for prompt, (n_prompt, *expected) in zip(PROMPTS[:3], _greedy_references(_derived_dir(gpu_server), PROMPTS[:3], n), strict=True):
        got = client.generate(model=smollm2, prompt=prompt, options={"temperature": 0, "num_predict": n})
        assert got.context is not None and got.context[n_prompt:] == expected, prompt


def test_compiled_decode_on_the_device(tmp_path: Path, smollm2_gguf: Path) -> None:
    """``OLLAMA_TORCH_COMPILE=1``: on CUDA every batch size up to 8 is a captured CUDA graph (on the CPU, batches
    of 1, 2 and 4 rows are compiled). One stream's greedy tokens equal ``generate``'s; 8 concurrent streams all finish, none eager."""
    env = {"OLLAMA_TORCH_COMPILE": "1", "OLLAMA_NUM_PARALLEL": "8", **({"OLLAMA_TORCH_DEVICE": "cpu"} if ON == "cpu" else {})}
    server = start_server(tmp_path / "models", tmp_path / "server.log", env=env, timeout=180)
    try:
        client = ollama.Client(host=server.url, timeout=900)
        client.create(model="smollm2:135m", files={smollm2_gguf.name: client.create_blob(smollm2_gguf)})
        client.generate(model="smollm2:135m", prompt="")  # load (convert, compile) first
        n = 24
        for prompt, (n_prompt, *expected) in zip(PROMPTS[:3], _greedy_references(_derived_dir(server), PROMPTS[:3], n), strict=True):
            got = client.generate(model="smollm2:135m", prompt=prompt, options={"temperature": 0, "num_predict": n})
            assert got.context is not None and got.context[n_prompt:] == expected, prompt
        with ThreadPoolExecutor(8) as pool:
            done = list(pool.map(lambda p: client.generate(model="smollm2:135m", prompt=p, options={"temperature": 0, "num_predict": 48}).done, PROMPTS))
        assert all(done)
        assert not server.compiled_decode_fallback(), server.log()
    finally:
        server.stop()


def test_sampled_requests_never_fail_and_seeds_hold_in_a_batch(client: ollama.Client, smollm2: str) -> None:
    seeded = {"temperature": 0.8, "seed": 1234, "num_predict": 24}
    alone = client.generate(model=smollm2, prompt=PROMPTS[0], options=seeded).response

    def run(i: int) -> str:
        c = ollama.Client(host=str(client._client.base_url), timeout=600)
        options = seeded if i == 0 else {"num_predict": 24}  # Ollama's defaults: temperature 0.8, random seed
        return c.generate(model=smollm2, prompt=PROMPTS[i % len(PROMPTS)], options=options).response

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(8)))
    assert results[0] == alone
    with ThreadPoolExecutor(16) as pool:  # penalties, typical_p and min_p on the device too
        extra = {"repeat_penalty": 1.2, "presence_penalty": 0.5, "typical_p": 0.9, "min_p": 0.05, "num_predict": 16}
        done = list(pool.map(lambda i: client.generate(model=smollm2, prompt=PROMPTS[i % 8], options=extra).done, range(16)))
    assert all(done)


def test_structured_output_on_the_device(client: ollama.Client, smollm2: str) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    r = client.generate(model=smollm2, prompt="Make up a person.", format=schema, options={"temperature": 0.8, "num_predict": 80})
    value = json.loads(r.response)
    assert set(value) == {"name", "age"} and isinstance(value["age"], int)


def test_embeddings_match_sentence_transformers(client: ollama.Client, minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    client.create(model="all-minilm", files=upload_dir(client, minilm_dir))
    texts = ["The cat sat on the mat.", "GPUs multiply matrices quickly."]
    got = client.embed(model="all-minilm", input=texts).embeddings
    expected = SentenceTransformer(str(minilm_dir), device=ON).encode(texts, normalize_embeddings=True)
    for g, e in zip(got, expected, strict=True):
        assert max(abs(a - float(b)) for a, b in zip(g, e, strict=True)) < 2e-2  # the server runs in bf16


@pytest.mark.parametrize("quantize", ["q8_0", "q4_K_M", "nf4", "fp4"])
def test_every_quantization_scheme_loads_and_answers(client: ollama.Client, tiny_llama_dir: Path, quantize: str) -> None:
    if quantize in ("q8_0", "nf4", "fp4"):
        pytest.importorskip("bitsandbytes")
    if "tiny-f32" not in [m.model for m in client.list().models]:
        client.create(model="tiny-f32", files=upload_dir(client, tiny_llama_dir))
    name = f"tiny-{quantize.lower()}"
    client.create(model=name, from_="tiny-f32", quantize=quantize)
    r = client.generate(model=name, prompt="hello", options={"temperature": 0, "num_predict": 8})
    assert r.done and r.eval_count and r.eval_count > 0
    client.generate(model=name, prompt="", keep_alive=0)


def test_unload_gives_the_memory_back(client: ollama.Client, smollm2: str) -> None:
    if ON != "cuda":
        pytest.skip("GPU memory is a CUDA figure")
    for m in client.ps().models:
        client.generate(model=m.model, prompt="", keep_alive=0)
    _wait_unloaded(client)
    baseline = torch.cuda.mem_get_info()[0]
    client.generate(model=smollm2, prompt="Count to five.", options={"num_predict": 16})
    loaded = torch.cuda.mem_get_info()[0]
    assert baseline - loaded > 100 * 2**20  # the weights (270 MB in bf16) and the KV cache are on the GPU
    client.generate(model=smollm2, prompt="", keep_alive=0)
    _wait_unloaded(client)
    assert baseline - torch.cuda.mem_get_info()[0] < 64 * 2**20  # back to within the CUDA context's slack


def test_two_models_resident_at_once(client: ollama.Client, smollm2: str, tiny_llama_dir: Path) -> None:
    if "tiny-f32" not in [m.model for m in client.list().models]:
        client.create(model="tiny-f32", files=upload_dir(client, tiny_llama_dir))
    client.generate(model=smollm2, prompt="hi", options={"num_predict": 4}, keep_alive="5m")
    client.generate(model="tiny-f32", prompt="hi", options={"num_predict": 4}, keep_alive="5m")
    loaded = {m.model: m for m in client.ps().models}
    assert {"smollm2:135m", "tiny-f32:latest"} <= set(loaded)
    if ON == "cuda":
        assert all((m.size_vram or 0) > 0 for m in loaded.values())


def _wait_unloaded(client: ollama.Client, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.ps().models and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not client.ps().models
