"""Embeddings through the real server process, checked against sentence-transformers on the same model.

all-MiniLM-L6-v2's sentence-transformers pipeline ends in a ``Normalize`` module, so
``SentenceTransformer.encode`` already returns unit vectors. ``/api/embed`` L2-normalizes what the model
gives (a no-op here), and the legacy ``/api/embeddings`` returns the pipeline's output as is: both must
therefore equal ST's output, and ``/api/embed`` must equal ``normalize(/api/embeddings)`` for any model.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ollama
import pytest
import torch

from tests.e2e.conftest import upload_dir
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue grew by twelve percent.",
    "hi",
    "Embeddings map text to vectors so that similar meanings land close together, which makes "
    "semantic search, clustering and retrieval-augmented generation possible.",
    "Der schnelle braune Fuchs springt über den faulen Hund. 🦊",
]
LONG = "Retrieval needs long documents to be cut somewhere sensible. " * 80  # ~800 tokens


@pytest.fixture(scope="module")
def st_model(minilm_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


@pytest.fixture(scope="module")
def tokenizer(minilm_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir))


def cosines(a: Sequence[Sequence[float]], b: np.ndarray) -> list[float]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    assert x.shape == y.shape, (x.shape, y.shape)
    return list((x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)))


def post(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(path, content=json.dumps(body))


# -- agreement with sentence-transformers --------------------------------------------------------------
def test_single_inputs_match_sentence_transformers(client: ollama.Client, minilm: str, st_model: Any) -> None:
    for text in SENTENCES:
        resp = client.embed(model=minilm, input=text)
        assert len(resp.embeddings) == 1 and len(resp.embeddings[0]) == 384
        ref = st_model.encode([text])
        assert cosines(resp.embeddings, ref)[0] >= 0.9999, text
        assert np.allclose(resp.embeddings[0], ref[0], atol=1e-5)


def test_batch_of_mixed_lengths_matches_sentence_transformers(client: ollama.Client, minilm: str, st_model: Any) -> None:
    batch = [*SENTENCES, LONG, "x", *SENTENCES[:2]]
    resp = client.embed(model=minilm, input=batch)
    assert resp.model == minilm
    ref = st_model.encode(batch)
    assert min(cosines(resp.embeddings, ref)) >= 0.9999
    norms = np.linalg.norm(np.asarray(resp.embeddings), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-6)
    # Batched rows equal the same texts embedded alone (padding does not leak into the pooling).
    alone = client.embed(model=minilm, input=SENTENCES[0]).embeddings[0]
    assert np.allclose(resp.embeddings[0], alone, atol=1e-5)
    assert np.allclose(resp.embeddings[0], resp.embeddings[-2], atol=1e-6)


def test_legacy_embeddings_are_the_pipeline_output(client: ollama.Client, http: httpx.Client, minilm: str, st_model: Any) -> None:
    for text in SENTENCES[:3]:
        legacy = client.embeddings(model=minilm, prompt=text).embedding
        # ST's encode includes the model's Normalize module; normalize_embeddings=False adds nothing more.
        ref = st_model.encode([text], normalize_embeddings=False)
        assert cosines([legacy], ref)[0] >= 0.9999
        assert np.allclose(legacy, ref[0], atol=1e-5)
        embedded = client.embed(model=minilm, input=text).embeddings[0]
        unit = np.asarray(legacy) / np.linalg.norm(legacy)
        assert np.allclose(embedded, unit, atol=1e-6)
    body = post(http, "/api/embeddings", {"model": minilm, "prompt": "hello"}).json()
    assert set(body) == {"embedding"}


def test_similar_sentences_are_closer_than_unrelated(client: ollama.Client, minilm: str) -> None:
    cat, kitten, revenue = client.embed(model=minilm, input=SENTENCES[:3]).embeddings
    dot = lambda a, b: float(np.dot(a, b))  # noqa: E731 - unit vectors: dot product = cosine
    assert dot(cat, kitten) > 0.5
    assert dot(cat, kitten) > dot(cat, revenue) + 0.3
    assert dot(kitten, revenue) < 0.3


# -- request fields ----------------------------------------------------------------------------------
def test_dimensions_truncate_then_renormalize(client: ollama.Client, http: httpx.Client, minilm: str) -> None:
    full = client.embed(model=minilm, input=SENTENCES[0]).embeddings[0]
    short = client.embed(model=minilm, input=SENTENCES[0], dimensions=16).embeddings[0]
    assert len(short) == 16
    assert math.isclose(float(np.linalg.norm(short)), 1.0, abs_tol=1e-6)
    assert np.allclose(short, np.asarray(full[:16]) / np.linalg.norm(full[:16]), atol=1e-6)
    # Ollama ignores dimensions <= 0 or >= the model's size.
    for dims in (0, -3, 384, 1000):
        r = post(http, "/api/embed", {"model": minilm, "input": "a", "dimensions": dims})
        assert r.status_code == 200 and len(r.json()["embeddings"][0]) == 384, dims
    for bad, kind in (("16", "string"), (1.5, "number 1.5"), (True, "bool")):
        r = post(http, "/api/embed", {"model": minilm, "input": "a", "dimensions": bad})
        assert r.status_code == 400
        assert r.json()["error"].startswith(f"json: cannot unmarshal {kind}"), r.json()
        assert "EmbedRequest.dimensions of type int" in r.json()["error"]


def test_truncation(client: ollama.Client, http: httpx.Client, minilm: str, st_model: Any, tokenizer: Any) -> None:
    assert len(tokenizer(LONG)["input_ids"]) > 512
    # truncate defaults to true: cut to the model's 256 tokens (sentence_bert_config.json), as ST does.
    resp = client.embed(model=minilm, input=LONG)
    assert resp.prompt_eval_count == 256
    assert cosines(resp.embeddings, st_model.encode([LONG]))[0] >= 0.9999
    assert client.embed(model=minilm, input=LONG, truncate=True).embeddings == resp.embeddings
    # num_ctx lowers the limit further; the count includes [CLS] and [SEP].
    short = client.embed(model=minilm, input=LONG, options={"num_ctx": 16})
    assert short.prompt_eval_count == 16
    ids = tokenizer(LONG, truncation=True, max_length=16)["input_ids"]
    assert cosines(short.embeddings, st_model.encode([tokenizer.decode(ids[1:-1])]))[0] >= 0.999

    r = post(http, "/api/embed", {"model": minilm, "input": ["fine", LONG], "truncate": False})
    assert r.status_code == 400 and r.json() == {"error": "the input length exceeds the context length"}
    r = post(http, "/api/embed", {"model": minilm, "input": "one two three four five six", "truncate": False, "options": {"num_ctx": 6}})
    assert r.status_code == 400 and r.json() == {"error": "the input length exceeds the context length"}
    ok = post(http, "/api/embed", {"model": minilm, "input": "short", "truncate": False})
    assert ok.status_code == 200
    # The legacy endpoint truncates silently.
    assert len(client.embeddings(model=minilm, prompt=LONG).embedding) == 384


def test_prompt_eval_count_counts_special_tokens(http: httpx.Client, minilm: str, tokenizer: Any) -> None:
    texts = SENTENCES[:4]
    body = post(http, "/api/embed", {"model": minilm, "input": texts}).json()
    assert body["prompt_eval_count"] == sum(len(tokenizer(t)["input_ids"]) for t in texts)
    assert set(body) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}
    assert body["total_duration"] >= body["load_duration"] > 0


def test_empty_input_loads_the_model(http: httpx.Client, minilm: str) -> None:
    for empty in ("", [], None):
        r = post(http, "/api/embed", {"model": minilm, "input": empty})
        assert r.status_code == 200 and r.json() == {"model": minilm, "embeddings": []}, empty
        assert r.headers["content-type"] == "application/json; charset=utf-8"
    r = post(http, "/api/embed", {"model": minilm})
    assert r.json() == {"model": minilm, "embeddings": []}
    r = post(http, "/api/embeddings", {"model": minilm, "prompt": ""})
    assert r.status_code == 200 and r.json() == {"embedding": []}
    ps = http.get("/api/ps").json()
    assert any(m["model"] == minilm for m in ps["models"])


def test_invalid_input_types(http: httpx.Client, minilm: str) -> None:
    for bad in (5, True, {"text": "a"}, [1, 2], ["a", 3], ["a", None], [["a"]]):
        r = post(http, "/api/embed", {"model": minilm, "input": bad})
        assert r.status_code == 400 and r.json() == {"error": "invalid input type"}, bad
    r = post(http, "/api/embeddings", {"model": minilm, "prompt": ["a"]})
    assert r.status_code == 400
    assert r.json() == {"error": "json: cannot unmarshal array into Go struct field EmbeddingRequest.prompt of type string"}


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/embed", {"input": "a"}, 404, "model '' not found"),
        ("/api/embed", {"model": "nope", "input": "a"}, 404, 'model "nope" not found, try pulling it first'),
        ("/api/embed", {"model": "bad name!", "input": "a"}, 400, "invalid model name"),
        ("/api/embed", {"model": "nope", "input": 7}, 400, "invalid input type"),
        ("/api/embed", {"model": "nope", "input": "a", "truncate": "yes"}, 400,
         "json: cannot unmarshal string into Go struct field EmbedRequest.truncate of type bool"),
        ("/api/embed", {"model": "nope", "input": "a", "keep_alive": "soon"}, 400, 'time: invalid duration "soon"'),
        ("/api/embeddings", {"prompt": "a"}, 400, "model is required"),
        ("/api/embeddings", {"model": "nope", "prompt": "a"}, 404, 'model "nope" not found, try pulling it first'),
        ("/api/embeddings", {"model": "bad name!", "prompt": "a"}, 400, "invalid model name"),
    ],
)
def test_request_errors(http: httpx.Client, path: str, body: dict[str, Any], status: int, error: str) -> None:
    r = post(http, path, body)
    assert (r.status_code, r.json()) == (status, {"error": error})


def test_missing_body(http: httpx.Client) -> None:
    for path in ("/api/embed", "/api/embeddings"):
        r = http.post(path, content=b"")
        assert (r.status_code, r.json()) == (400, {"error": "missing request body"})


# -- Ollama's integration/embed_test.go -----------------------------------------------------------------
SKY = "why is the sky blue?"


def test_ollama_embed_and_batch_counts(http: httpx.Client, minilm: str) -> None:
    """runAllMiniLMEmbed, runAllMiniLMBatchEmbed, runAllMiniLMEmbeddings."""
    one = post(http, "/api/embed", {"model": minilm, "input": SKY}).json()
    assert len(one["embeddings"]) == 1 and len(one["embeddings"][0]) == 384 and one["prompt_eval_count"] == 8
    two = post(http, "/api/embed", {"model": minilm, "input": [SKY, "why is the grass green?"]}).json()
    assert len(two["embeddings"]) == 2 and two["prompt_eval_count"] == 16
    assert len(post(http, "/api/embeddings", {"model": minilm, "prompt": SKY}).json()["embedding"]) == 384


EMBED_TRUNCATE_CASES = [  # runAllMiniLMEmbedTruncate: (name, extra request fields, status, error or None)
    ("target truncation", {"input": "why"}, 200, None),
    ("default truncate", {"input": SKY, "options": {"num_ctx": 3}}, 200, None),
    ("explicit truncate", {"input": SKY, "truncate": True, "options": {"num_ctx": 3}}, 200, None),
    ("truncate error", {"input": SKY, "truncate": False, "options": {"num_ctx": 3}}, 400, "the input length exceeds the context length"),
    ("num_ctx 1", {"input": SKY, "truncate": True, "options": {"num_ctx": 1}}, 400, "input after truncation exceeds maximum context length"),
    ("num_ctx 0", {"input": SKY, "truncate": True, "options": {"num_ctx": 0}}, 400, "input exceeds maximum context length and cannot be truncated further"),
    ("boundary truncation", {"input": "why is the sky blue? Why is the sky blue? hi there my", "options": {"num_ctx": 16}}, 200, None),
]


@pytest.mark.parametrize(("name", "fields", "status", "error"), EMBED_TRUNCATE_CASES, ids=[c[0] for c in EMBED_TRUNCATE_CASES])
def test_ollama_embed_truncate(http: httpx.Client, minilm: str, name: str, fields: dict[str, Any], status: int, error: str | None) -> None:
    want = post(http, "/api/embed", {"model": minilm, "input": "why"}).json()
    assert want["prompt_eval_count"] == 3  # [CLS] why [SEP]
    r = post(http, "/api/embed", {"model": minilm, **fields})
    if error is not None:
        assert (r.status_code, r.json()) == (status, {"error": error})
        return
    assert r.status_code == 200, r.text
    got = r.json()
    num_ctx = fields.get("options", {}).get("num_ctx")
    if num_ctx == 3:  # num_ctx counts [CLS] and [SEP]: "why" is all that is left
        assert got["prompt_eval_count"] == 3
        assert cosines(got["embeddings"], np.asarray(want["embeddings"]))[0] >= 0.999
    elif num_ctx is not None:
        assert got["prompt_eval_count"] == num_ctx
    else:
        assert cosines(got["embeddings"], np.asarray(want["embeddings"]))[0] >= 0.999


def test_ollama_embed_truncation_batch_and_status_codes(http: httpx.Client, minilm: str) -> None:
    """runEmbedTruncation, runEmbedStatusCode and runEmbedLargeInput."""
    r = post(http, "/api/embed", {"model": minilm, "input": ["short", "long " * 100, "medium text"], "truncate": True, "options": {"num_ctx": 30}})
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 3 and r.json()["prompt_eval_count"] <= 90
    base = post(http, "/api/embed", {"model": minilm, "input": "test"}).json()["prompt_eval_count"]
    assert post(http, "/api/embed", {"model": minilm, "input": ["test"] * 3}).json()["prompt_eval_count"] == 3 * base
    long_input = "very long input " * 100
    for body_input in (long_input, ["short input", long_input, "another short input"]):
        r = post(http, "/api/embed", {"model": minilm, "input": body_input, "truncate": False, "options": {"num_ctx": 10}})
        assert r.status_code == 400 and "context length" in r.json()["error"]
    for words in (256, 512, 800):
        r = post(http, "/api/embed", {"model": minilm, "input": " ".join(["word"] * words)})
        assert r.status_code == 200 and len(r.json()["embeddings"][0]) == 384


# -- completion models ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_completion(client: ollama.Client, tiny_llama_bos_dir: Path) -> str:
    client.create(model="tiny-embed-causal", files=upload_dir(client, tiny_llama_bos_dir))
    return "tiny-embed-causal:latest"


def test_completion_model_embeds_as_ollama(client: ollama.Client, http: httpx.Client, tiny_completion: str, tiny_llama_bos_dir: Path) -> None:
    """Ollama asks no capability for /api/embed or /api/embeddings: a completion model answers with its
    last token's final hidden state (llama.cpp's embedding for a model without a pooling type), from the
    weights its generation runner already holds (we answered 400 "does not support embedding")."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_bos_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_bos_dir))
    texts = SENTENCES[:4]
    ref = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            ref.append(model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1].numpy())
    assert "embedding" not in (client.show(tiny_completion).capabilities or [])
    client.generate(model=tiny_completion, prompt="hello", options={"num_predict": 2})  # its generation runner
    body = post(http, "/api/embed", {"model": tiny_completion, "input": texts}).json()
    assert len(body["embeddings"]) == 4 and len(body["embeddings"][0]) == model.config.hidden_size
    assert min(cosines(body["embeddings"], np.asarray(ref))) >= 0.9999
    assert np.allclose(np.linalg.norm(np.asarray(body["embeddings"]), axis=1), 1.0, atol=1e-6)
    assert body["prompt_eval_count"] == sum(len(tokenizer(t)["input_ids"]) for t in texts)  # BOS included
    legacy = post(http, "/api/embeddings", {"model": tiny_completion, "prompt": texts[0]}).json()["embedding"]
    assert np.allclose(legacy, ref[0], atol=1e-4)  # not normalized
    ps = [m["model"] for m in http.get("/api/ps").json()["models"]]
    assert ps.count(tiny_completion) == 1
    assert client.chat(model=tiny_completion, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 3}).done


def test_demo_completion_model_embeds(http: httpx.Client, smollm2: str) -> None:
    for path, body, key in (("/api/embed", {"model": smollm2, "input": "hello"}, "embeddings"), ("/api/embeddings", {"model": smollm2, "prompt": "hello"}, "embedding")):
        r = post(http, path, body)
        assert r.status_code == 200, r.text
        vector = r.json()[key][0] if key == "embeddings" else r.json()[key]
        assert len(vector) == 576 and all(math.isfinite(v) for v in vector)


def test_embedding_model_does_not_generate(http: httpx.Client, minilm: str) -> None:
    r = post(http, "/api/generate", {"model": minilm, "prompt": "hello", "stream": False})
    assert (r.status_code, r.json()) == (400, {"error": f'"{minilm}" does not support generate'})


# -- concurrency and disconnects ---------------------------------------------------------------------
def test_concurrent_requests_are_batched_consistently(client: ollama.Client, minilm: str) -> None:
    texts = [f"{s} (variant {i})" for i, s in enumerate(SENTENCES * 3)]
    alone = [client.embed(model=minilm, input=t).embeddings[0] for t in texts[:4]]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda t: client.embed(model=minilm, input=t).embeddings[0], texts))
    assert np.allclose(together[:4], alone, atol=1e-5)
    assert all(len(v) == 384 for v in together)


def test_client_disconnect_releases_the_model(http: httpx.Client, server: ServerProcess, minilm: str) -> None:
    big = json.dumps({"model": minilm, "input": [f"{LONG} {i}" for i in range(120)]}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(big)}\r\n\r\n".encode() + big
        )
        time.sleep(0.5)  # let it reach the model, then hang up
    # If the abandoned request still held the runner, keep_alive 0 could not unload it.
    r = post(http, "/api/embed", {"model": minilm, "input": "after", "keep_alive": 0})
    assert r.status_code == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not any(m["model"] == minilm for m in http.get("/api/ps").json()["models"]):
            break
        time.sleep(0.2)
    else:
        pytest.fail("all-minilm stayed loaded after keep_alive 0: the disconnected request kept the runner")
    assert client_embeds_again(http, minilm)


def client_embeds_again(http: httpx.Client, minilm: str) -> bool:
    r = post(http, "/api/embed", {"model": minilm, "input": "reloaded"})
    return r.status_code == 200 and len(r.json()["embeddings"][0]) == 384
