"""The wire contract against the real server process: the golden exchanges of ``api/golden/`` replayed and
compared (structure and stable values; ``api/contract.py`` says which values are volatile), and every
response, NDJSON line and SSE frame validated against ``api/openapi.yaml``.

Regenerate the goldens with ``python api/regenerate.py`` after a deliberate change of the wire format.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from api import contract
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

GOLDENS = contract.golden_paths()


@pytest.fixture(scope="module")
def exact_text(http: httpx.Client, smollm2: str, minilm: str, minilm_rerank: str) -> bool:
    """Generated text (and embeddings, tightly) compare only where the goldens were recorded: on CPU in
    float32. Elsewhere (CUDA, another dtype) structure and stable values still do."""
    assert http.post("/api/generate", json={"model": smollm2, "prompt": ""}).status_code == 200  # load it
    on_gpu = any(m["size_vram"] > 0 for m in http.get("/api/ps").json()["models"])
    return not on_gpu and os.environ.get("OLLAMA_TORCH_DTYPE", "float32") in ("", "float32")


def check(method: str, path: str, response: Mapping[str, Any]) -> None:
    """The response is what openapi.yaml says, and an error text is one it lists."""
    errors = contract.response_schema_errors(method, path, response)
    assert not errors, f"{method} {path} -> {response['status']}: " + "; ".join(errors)
    message = contract.error_message(response)
    if message is not None:
        assert contract.message_documented(method, path, response["status"], message), (
            f"{method} {path} -> {response['status']}: error text {message!r} is not in x-error-messages"
        )


@pytest.mark.parametrize("golden_path", GOLDENS, ids=[p.stem for p in GOLDENS])
def test_golden_exchange(golden_path: Path, server: ServerProcess, http: httpx.Client, exact_text: bool) -> None:
    golden = contract.load_golden(golden_path)
    for i, step in enumerate(golden["steps"]):
        request = step["request"]
        actual = contract.send(http, request)
        check(request["method"], request["path"], actual)
        keep = step.get("compare", {}).get("keep_models")
        normalized = contract.normalize_response(actual, models_dir=str(server.models), keep_models=keep)
        diffs = contract.compare_responses(step["response"], normalized, generated=exact_text, tol=1e-4 if exact_text else 5e-2)
        assert not diffs, (
            f"{golden_path.name} step {i} ({request['method']} {request['path']}) differs from the golden "
            f"(if the change is deliberate: python api/regenerate.py --only {golden_path.stem}):\n  " + "\n  ".join(diffs)
        )


# -- responses whose values depend on the session (other tests' models, what is loaded): schema only --------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/tags", None),
        ("GET", "/api/ps", None),
        ("GET", "/api/x/engine", None),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/all-minilm", None),
        ("POST", "/api/show", {"model": "smollm2:135m"}),
        ("POST", "/api/show", {"model": "all-minilm", "verbose": True}),
        ("POST", "/api/generate", {"model": "smollm2:135m", "prompt": "hi", "_debug_render_only": True, "stream": False}),
        ("POST", "/api/chat", {"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi"}], "_debug_render_only": True}),
        ("POST", "/api/generate", {"model": "smollm2:135m", "prompt": "Say hi.", "stream": False, "options": {"num_predict": 3, "stop": ["hi"]}}),
        ("POST", "/api/chat", {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Hi"}], "options": {"num_predict": 3}}),
        ("POST", "/api/embed", {"model": "all-minilm", "input": ""}),
        ("POST", "/api/embeddings", {"model": "all-minilm", "prompt": ""}),
        ("POST", "/v1/completions", {"model": "smollm2:135m", "prompt": "Hi", "max_tokens": 2, "stream": True, "stream_options": {"include_usage": True}}),
        ("POST", "/api/create", {"model": "contract-tmp", "from": "smollm2:135m", "stream": False}),
        ("DELETE", "/api/delete", {"model": "contract-tmp"}),
        ("POST", "/api/pull", {"model": "../nope"}),
        ("POST", "/api/push", {"model": "contract-missing"}),
        ("GET", "/metrics", None),
        ("POST", "/v1/messages", {"model": "smollm2:135m", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}],
                                  "stop_sequences": ["."], "stream": True}),
        ("POST", "/v1/responses", {"model": "smollm2:135m", "input": [{"role": "user", "content": "Hi"}], "max_output_tokens": 2,
                                   "text": {"format": {"type": "json_object"}}, "stream": True}),
    ],
)
def test_response_matches_schema(http: httpx.Client, smollm2: str, minilm: str, method: str, path: str, body: Any) -> None:
    request: dict[str, Any] = {"method": method, "path": path}
    if body is not None:
        request["json"] = body
        assert not contract.request_schema_errors(method, path, body)
    check(method, path, contract.send(http, request))


# -- bugs this contract found, fixed: each test keeps them fixed -------------------------------------------
def test_head_root(http: httpx.Client) -> None:
    assert http.head("/").status_code == 200


def test_head_tags(http: httpx.Client) -> None:
    assert http.head("/api/tags").status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", {"model": "smollm2:135m", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}),
        ("/api/chat", {"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi"}], "stream": False, "options": {"num_predict": 1}}),
    ],
)
def test_folded_answer_content_type(http: httpx.Client, smollm2: str, path: str, body: dict[str, Any]) -> None:
    assert http.post(path, json=body).headers["content-type"] == "application/json; charset=utf-8"


def test_show_missing_model_message(http: httpx.Client) -> None:
    # Ollama's ShowHandler reports the display name (it sets req.Model = name.DisplayShortest() before the
    # lookup), unlike generate/chat/delete, which echo the name as given.
    assert http.post("/api/show", json={"model": "contract-missing"}).json() == {"error": "model 'contract-missing:latest' not found"}
