"""``api/openapi.yaml`` is valid OpenAPI 3.1 and describes exactly the routes ``make_app`` registers; its
``Options`` schema is the option set of ``ollama_torch/options_schema.py``; the golden exchanges in
``api/golden/`` only use documented operations, and their successful requests are valid requests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from api import contract
from ollama_torch.options_schema import OPTIONS
from ollama_torch.server.app import make_app
from ollama_torch.settings import Settings
from ollama_torch.store import ModelStore

# Documented in the README (and answered by Ollama) but not registered: see the xfail reasons.
HEAD_MISSING = "server bug: README documents `GET, HEAD /` and `GET, HEAD /api/tags` (Ollama's clients use HEAD / as a heartbeat), but make_app registers only GET, so HEAD is a 405"
NOT_REGISTERED: dict[tuple[str, str], str] = {}


def registered_routes(tmp_path: Path) -> set[tuple[str, str]]:
    models = tmp_path / "models"
    app = make_app(Settings(models=models), store=ModelStore(models))
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert isinstance(path, str), info
        routes.add((route.method.upper(), path))
    return routes


def test_spec_is_valid_openapi_3_1() -> None:
    spec = contract.spec()
    assert spec["openapi"].startswith("3.1.")
    validate(spec)  # raises OpenAPIValidationError with the path of the problem


def test_every_registered_route_is_documented(tmp_path: Path) -> None:
    undocumented = registered_routes(tmp_path) - set(contract.operations())
    assert not undocumented, f"routes registered in make_app but missing from api/openapi.yaml: {sorted(undocumented)}"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param(m, p, marks=pytest.mark.xfail(strict=True, reason=NOT_REGISTERED[(m, p)]))
        if (m, p) in NOT_REGISTERED else (m, p)
        for m, p in contract.operations()
    ],
)
def test_every_documented_operation_is_registered(tmp_path: Path, method: str, path: str) -> None:
    assert (method, path) in registered_routes(tmp_path), f"{method} {path} is in api/openapi.yaml but make_app does not register it"


@pytest.mark.parametrize(("method", "path"), contract.operations())
def test_operation_is_complete(method: str, path: str) -> None:
    op = contract.operation(method, path)
    assert op.get("operationId") and op.get("summary")
    statuses = contract.documented_statuses(method, path)
    assert any(200 <= s < 300 for s in statuses), "no success response"
    for status, messages in op.get("x-error-messages", {}).items():
        assert int(status) in statuses, f"x-error-messages for undocumented status {status}"
        assert messages and all(isinstance(m, str) and m for m in messages)
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    if method in ("POST", "DELETE") and body is not None:
        assert 400 in statuses, "a JSON body can be malformed: document the 400"


def test_operation_ids_are_unique() -> None:
    ids = [contract.operation(m, p)["operationId"] for m, p in contract.operations()]
    assert len(ids) == len(set(ids))


def test_options_schema_is_the_option_set() -> None:
    properties: dict[str, Any] = contract.spec()["components"]["schemas"]["Options"]["properties"]
    assert set(properties) == set(OPTIONS)
    for name, option in OPTIONS.items():
        if "default" in properties[name] or option.default is not None:
            assert properties[name].get("default") == option.default, name


@pytest.mark.parametrize(
    ("template", "message", "matches"),
    [
        ("model '<model>' not found", "model 'llama3.2' not found", True),
        ("model '<model>' not found", "model 'x' not found, try pulling it first", False),
        ("invalid model name", "invalid model name!", False),
        ("json: cannot unmarshal <...>", "json: cannot unmarshal number into Go struct field X.y of type string", True),
    ],
)
def test_error_templates(template: str, message: str, matches: bool) -> None:
    assert bool(contract._message_regex(template).fullmatch(message)) is matches


def test_error_templates_apply_per_operation() -> None:
    assert contract.message_documented("POST", "/api/generate", 404, "model 'x' not found")
    assert contract.message_documented("POST", "/api/generate", 400, "missing request body")  # common
    assert not contract.message_documented("POST", "/api/generate", 400, "TextEncodeInput must be Union[...]")
    assert contract.message_documented("POST", "/v1/chat/completions", 400, "[] is too short - 'messages'")


def test_path_templates() -> None:
    assert contract.path_template("/api/blobs/sha256:abc") == "/api/blobs/{digest}"
    assert contract.path_template("/v1/models/hf.co/org/repo:Q4_K_M") == "/v1/models/{model}"
    assert contract.path_template("/api/generate") == "/api/generate"
    assert contract.path_template("/api/nope") is None


GOLDENS = contract.golden_paths()


def test_there_are_goldens() -> None:
    assert len(GOLDENS) >= 10, "api/golden/ is empty: run `python api/regenerate.py`"


@pytest.mark.parametrize("path", GOLDENS, ids=[p.stem for p in GOLDENS])
def test_golden_is_well_formed(path: Path) -> None:
    golden = contract.load_golden(path)
    assert golden["description"] and golden["steps"]
    for step in golden["steps"]:
        request, response = step["request"], step["response"]
        assert request["method"] in {"GET", "HEAD", "POST", "DELETE"}
        if 200 <= response["status"] < 300 and "json" in request:
            errors = contract.request_schema_errors(request["method"], request["path"], request["json"])
            assert not errors, f"{request['method']} {request['path']}: a successful request the schema refuses: {errors}"
        template = contract.path_template(request["path"])
        if template is not None and request["method"].lower() in contract.spec()["paths"][template]:
            assert response["status"] in contract.documented_statuses(request["method"], template)
        else:
            assert response.get("text") == contract.ROUTER_ANSWERS.get(response["status"])
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", str(response)), "an unnormalized timestamp"


# -- the golden machinery itself ----------------------------------------------------------------------------
def _stream(text: list[str], reason: str = "length") -> dict[str, Any]:
    lines: list[dict[str, Any]] = [
        {"model": "m", "created_at": "2026-01-01T00:00:00.5Z", "response": t, "done": False} for t in text
    ]
    lines.append({"model": "m", "created_at": "2026-01-01T00:00:01Z", "response": "", "done": True, "done_reason": reason,
                  "context": [1, 2], "total_duration": 5, "load_duration": 3, "prompt_eval_count": 9, "eval_count": len(text)})
    return {"status": 200, "content_type": "application/x-ndjson", "lines": lines}


def test_normalize_replaces_volatile_values() -> None:
    body = {"created_at": "2026-01-01T00:00:00Z", "total_duration": 12, "load_duration": 3, "prompt_eval_count": 4,
            "digest": "a" * 64, "status": "using existing layer sha256:" + "b" * 64, "id": "chatcmpl-42", "created": 17,
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, "modelfile": "FROM /tmp/m/blobs/x"}
    assert contract.normalize(body, models_dir="/tmp/m") == {
        "created_at": "<timestamp>", "total_duration": "<duration>", "digest": "<digest>",
        "status": "using existing layer sha256:<digest>", "id": "chatcmpl-<n>", "created": "<unix>",
        "usage": {"prompt_tokens": "<count>", "completion_tokens": 2, "total_tokens": "<count>"}, "modelfile": "FROM <models>/blobs/x",
    }


def test_generation_streams_compare_by_text_not_token_boundaries() -> None:
    golden = contract.normalize_response(_stream(["Hel", "lo"]))
    assert contract.compare_responses(golden, contract.normalize_response(_stream(["He", "llo"]))) == []
    assert contract.compare_responses(golden, contract.normalize_response(_stream(["Hel", "p!"])))
    # where the text is not comparable (another device), structure still is
    other = contract.normalize_response(_stream(["Hi"], reason="stop"))
    assert contract.compare_responses(golden, other, generated=False) == []
    other["lines"][-1]["extra"] = 1
    assert contract.compare_responses(golden, other, generated=False)


def test_numbers_compare_within_tolerance_base64_included() -> None:
    import base64
    import struct

    def b64(values: list[float]) -> str:
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()

    golden = {"status": 200, "content_type": "application/json", "json": {"data": [{"embedding": b64([0.5, -0.25])}], "v": [0.1]}}
    close = {"status": 200, "content_type": "application/json", "json": {"data": [{"embedding": b64([0.50001, -0.25])}], "v": [0.10001]}}
    far = {"status": 200, "content_type": "application/json", "json": {"data": [{"embedding": b64([0.6, -0.25])}], "v": [0.1]}}
    assert contract.compare_responses(golden, close, tol=1e-4) == []
    assert contract.compare_responses(golden, far, tol=1e-4)


def test_no_mapping_repeats_a_key() -> None:
    """YAML loaders keep the last of two equal keys silently: a path's responses written twice (a merge that
    interleaved two paths did this once) would hide the first from every check above."""
    import yaml

    repeated: list[str] = []

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in seen:
                        repeated.append(f"{key.value!r} at line {key.start_mark.line + 1}")
                    seen.add(key.value)
                walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    walk(yaml.compose((Path(__file__).resolve().parents[2] / "api" / "openapi.yaml").read_text()))
    assert not repeated
