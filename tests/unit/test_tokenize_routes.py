"""``/tokenize``, ``/detokenize``, ``/tokenizer_info`` over a scripted engine: vLLM's shapes (what
lm-evaluation-harness's remote tokenizer reads), llama.cpp's field names, and which model is meant when the
request names none (the store's only one that generates; otherwise a 400, never a guess)."""

from __future__ import annotations

from pathlib import Path

from ollama_torch.names import ModelName
from ollama_torch.store import ConfigV2, Layer, Manifest, MediaType
from tests.unit.test_openai_engine import Client, ScriptedEngine, _store, run


def test_vllm_shapes(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/tokenize", json={"model": "m", "prompt": "ab", "add_special_tokens": False})
        assert r.status == 200 and await r.json() == {"count": 2, "max_model_len": 64, "tokens": [97, 98], "token_strs": None}
        r = await client.post("/tokenize", json={"prompt": "ab", "return_token_strs": True})  # BOS by default, as vLLM
        assert (await r.json())["tokens"] == [1, 97, 98] and (await r.json())["token_strs"] == ["a", "b"]
        r = await client.post("/detokenize", json={"tokens": [97, 98]})
        assert await r.json() == {"prompt": "ab", "content": "ab"}
        r = await client.get("/tokenizer_info")
        assert await r.json() == {"tokenizer_class": "ScriptedTokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": None,
                                  "unk_token": None, "add_bos_token": True, "model_max_length": 64, "chat_template": "{{ messages }}"}

    run(tmp_path, check)


def test_llama_cpp_names(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/tokenize", json={"content": "ab"})  # llama.cpp adds no special tokens by default
        assert (await r.json())["tokens"] == [97, 98]
        r = await client.post("/tokenize", json={"content": "ab", "add_special": True})
        assert (await r.json())["tokens"] == [1, 97, 98]

    run(tmp_path, check)


def test_bad_requests(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/tokenize", json={"model": "ghost", "prompt": "a"})
        assert r.status == 404 and await r.json() == {"error": "model 'ghost' not found"}
        r = await client.post("/detokenize", json={"tokens": [1, "a"]})
        assert r.status == 400 and "array of integers" in (await r.json())["error"]
        r = await client.post("/tokenize", json={"prompt": 5})
        assert r.status == 400 and "cannot unmarshal number" in (await r.json())["error"]

    run(tmp_path, check)


def test_without_a_model_only_an_unambiguous_store_answers(tmp_path: Path) -> None:
    store = _store(tmp_path)
    weights = store.blobs.write_bytes(b"other weights")
    config = store.blobs.write_bytes(ConfigV2(model_format="gguf", capabilities=["completion"]).to_bytes())
    store.write_manifest(ModelName.parse("second"), Manifest(Layer(MediaType.CONFIG, config, 1), (Layer(MediaType.MODEL, weights, 13),)))

    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.get("/tokenizer_info")
        assert r.status == 400
        assert (await r.json())["error"] == 'model is required: the store holds 2 models that generate; name one with "model"'
        r = await client.get("/tokenizer_info", params={"model": "second"})
        assert r.status == 200

    run(tmp_path, check)
