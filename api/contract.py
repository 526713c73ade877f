"""Reading the wire contract: the OpenAPI document, schema validation of real responses, and the golden
exchanges (how a response is recorded, which values are volatile, how a replay is compared).

Used by ``api/regenerate.py`` (records goldens from a real server), ``tests/e2e/test_contract.py`` (replays
them and validates every response, NDJSON line and SSE frame against ``openapi.yaml``),
``tests/e2e/test_fuzz.py`` and ``tests/unit/test_openapi.py``. Imports neither torch nor the server.

A recorded response is a small dict: ``status``, ``content_type`` and one of ``json`` (one JSON document),
``lines`` (NDJSON, one object per line), ``events`` (SSE ``data:`` payloads: objects, or the string
``[DONE]``), ``text`` (text/plain) or ``empty`` (no body).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).with_name("openapi.yaml")
GOLDEN_DIR = Path(__file__).with_name("golden")
SPEC_URI = "urn:ollama-torch:openapi"

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
JSON = "application/json"
DONE = "[DONE]"

# Values that change from run to run: replaced by placeholders, or dropped where Ollama omits them when zero
# (load_duration once the model is loaded; prompt_eval_* when the prompt came from the prefix cache).
TIMESTAMP_KEYS = frozenset({"created_at", "modified_at", "expires_at"})
DURATION_KEYS = frozenset({"total_duration", "eval_duration"})
DROPPED_KEYS = frozenset({"load_duration", "prompt_eval_count", "prompt_eval_duration"})
# /v1, Anthropic and Responses usage: depends on the prefix cache
COUNT_KEYS = frozenset({"prompt_tokens", "total_tokens", "cached_tokens", "input_tokens", "cache_read_input_tokens"})
UNIX_KEYS = frozenset({"created", "created_at", "completed_at"})  # integer seconds (as strings: TIMESTAMP_KEYS)
# Values that depend on the numerics of the device (generated text); compared only where the goldens were
# recorded (CPU, float32).
GENERATED_KEYS = frozenset({
    "response", "content", "text", "thinking", "context", "done_reason", "finish_reason", "eval_count",
    "completion_tokens", "tool_calls", "stop_reason", "stop_sequence", "output_tokens", "delta", "partial_json",
    "arguments", "input",
})

ROUTER_ANSWERS = {404: "404 page not found", 405: "405 method not allowed"}  # text/plain, on every path

_SHA256 = re.compile(r"sha256[:-][0-9a-f]{64}")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COMPLETION_ID = re.compile(r"^(chatcmpl|cmpl)-[0-9]+$")
_RANDOM_ID = re.compile(r"^(msg|req|resp|rs|fc|toolu)_[0-9a-f]{24}$|^(call)_[a-z0-9]{8}$")  # Anthropic, Responses, tool calls
_ID_KEYS = frozenset({"id", "item_id", "request_id", "call_id"})


# -- the OpenAPI document ----------------------------------------------------------------------------------
@functools.cache
def spec() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return data


@functools.cache
def _registry() -> Registry:
    resource: Resource[Any] = Resource.from_contents(spec(), default_specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _template_regex(template: str) -> re.Pattern[str]:
    # ``{model}`` may contain slashes (names with a namespace or host); other parameters are one segment.
    parts = re.split(r"(\{[^}]+\})", template)
    pattern = "".join(
        (".+" if p == "{model}" else "[^/]+") if p.startswith("{") else re.escape(p) for p in parts
    )
    return re.compile(f"^{pattern}$")


def path_template(path: str) -> str | None:
    """The ``paths`` key a concrete request path matches (``/api/blobs/sha256:..`` -> ``/api/blobs/{digest}``)."""
    path = path.split("?", 1)[0]
    paths = spec()["paths"]
    if path in paths:
        return path
    for template in paths:
        if "{" in template and _template_regex(template).match(path):
            return str(template)
    return None


def operations() -> list[tuple[str, str]]:
    """Every (METHOD, path template) the document describes."""
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return [(m.upper(), p) for p, item in spec()["paths"].items() for m in item if m in methods]


def operation(method: str, template: str) -> dict[str, Any]:
    op: dict[str, Any] = spec()["paths"][template][method.lower()]
    return op


def _response_pointer(method: str, template: str, status: int) -> str | None:
    responses = operation(method, template).get("responses", {})
    key = str(status) if str(status) in responses else ("default" if "default" in responses else None)
    if key is None:
        return None
    response = responses[key]
    if "$ref" in response:
        return str(response["$ref"])
    return f"#/paths/{_escape(template)}/{method.lower()}/responses/{key}"


def resolve(pointer: str) -> Any:
    """The node of ``openapi.yaml`` at a JSON pointer (``#/components/schemas/Error``)."""
    node: Any = spec()
    for token in pointer.lstrip("#/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def documented_statuses(method: str, template: str) -> set[int]:
    return {int(k) for k in operation(method, template).get("responses", {}) if k.isdigit()}


def schema_pointer(method: str, template: str, status: int, media_type: str) -> str | None:
    """JSON pointer (into ``openapi.yaml``) of the schema of one body / NDJSON line / SSE frame, or None
    when the document gives that response no such content."""
    pointer = _response_pointer(method, template, status)
    if pointer is None:
        return None
    content = resolve(pointer).get("content", {})
    if media_type not in content or "schema" not in content[media_type]:
        return None
    return f"{pointer}/content/{_escape(media_type)}/schema"


def schema_errors_for(instance: Any, pointer: str) -> list[str]:
    """Validation errors of ``instance`` against the schema at ``pointer`` (formats checked)."""
    validator = Draft202012Validator(
        {"$ref": f"{SPEC_URI}{pointer}"}, registry=_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    ][:10]


def request_schema_errors(method: str, path: str, body: Any) -> list[str]:
    template = path_template(path)
    if template is None:
        return [f"{method} {path} is not in openapi.yaml"]
    content = operation(method, template).get("requestBody", {}).get("content", {})
    if JSON not in content:
        return []
    return schema_errors_for(body, f"#/paths/{_escape(template)}/{method.lower()}/requestBody/content/{_escape(JSON)}/schema")


def response_schema_errors(method: str, path: str, response: Mapping[str, Any]) -> list[str]:
    """Check a recorded response against the document: documented status, documented media type, and
    the body (every NDJSON line, every SSE frame) valid against its schema."""
    template = path_template(path)
    status = int(response["status"])
    router_answer = response.get("text") == ROUTER_ANSWERS.get(status) or (method == "HEAD" and status in ROUTER_ANSWERS)
    if status == 404 and router_answer:
        return []  # the router found no route (also for a path like a template's whose segment it refuses, e.g. with "}")
    if template is None or method.lower() not in spec()["paths"][template]:
        if status == 405 and router_answer:  # a method the path does not have
            return []
        return [f"{method} {path} is not in openapi.yaml (answered {status})"]
    if status not in documented_statuses(method, template):
        return [f"status {status} is not documented for {method} {template}"]
    media = media_type(response.get("content_type", ""))
    if response.get("empty") or method == "HEAD":
        return []
    pointer = schema_pointer(method, template, status, media)
    if pointer is None:
        return [f"{method} {template} documents no {media!r} body for status {status}"]
    errors: list[str] = []
    if "json" in response:
        errors += schema_errors_for(response["json"], pointer)
    for i, line in enumerate(response.get("lines", [])):
        errors += [f"line {i}: {e}" for e in schema_errors_for(line, pointer)]
    events = response.get("events", [])
    for i, event in enumerate(events):
        if event == DONE:
            if i != len(events) - 1:
                errors.append(f"event {i}: [DONE] before the end of the stream")
            continue
        errors += [f"event {i}: {e}" for e in schema_errors_for(event, pointer)]
    if "text" in response:
        errors += schema_errors_for(response["text"], pointer)
    return errors


# -- error messages ----------------------------------------------------------------------------------------
def _message_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(<[^<>]*>)", template)
    return re.compile("".join(".*" if p.startswith("<") and p.endswith(">") else re.escape(p) for p in parts), re.DOTALL)


def error_templates(method: str, template: str, status: int) -> list[str]:
    """The error texts documented for one status of one operation (plus the common decoding errors)."""
    own = operation(method, template).get("x-error-messages", {}).get(str(status), [])
    common = spec().get("x-common-error-messages", {}).get(str(status), [])
    return [*own, *common]


def message_documented(method: str, path: str, status: int, message: str) -> bool:
    template = path_template(path)
    if template is None:
        return False
    return any(_message_regex(t).fullmatch(message) for t in error_templates(method, template, status))


def error_message(response: Mapping[str, Any]) -> str | None:
    """The message of a native or OpenAI error body (None when the body is not one)."""
    body = response.get("json")
    if not isinstance(body, dict) or "error" not in body:
        return None
    error = body["error"]
    if isinstance(error, dict):
        message = error.get("message")
        return message if isinstance(message, str) else None
    return error if isinstance(error, str) else None


# -- recording ---------------------------------------------------------------------------------------------
def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_body(status: int, content_type: str, raw: bytes) -> dict[str, Any]:
    """A response as the goldens record it (see the module docstring). Raises ValueError for a body that
    is not what its Content-Type says."""
    out: dict[str, Any] = {"status": status, "content_type": content_type}
    media = media_type(content_type)
    if not raw:
        out["empty"] = True
    elif media == NDJSON:
        out["lines"] = [json.loads(line) for line in raw.split(b"\n") if line.strip()]
    elif media == SSE:
        events: list[Any] = []
        for block in raw.decode().split("\n\n"):
            if not block.strip():
                continue
            lines = block.split("\n")
            data = "\n".join(line[len("data:"):].lstrip() for line in lines if line.startswith("data:"))
            event = DONE if data == DONE else json.loads(data)
            names = [line[len("event:"):].strip() for line in lines if line.startswith("event:")]
            if names and not (isinstance(event, dict) and event.get("type") == names[0]):
                raise ValueError(f"SSE event {names[0]!r} carries data of another type: {data[:200]}")
            events.append(event)
        out["events"] = events
    elif media == JSON:
        out["json"] = json.loads(raw)
    else:
        out["text"] = raw.decode()
    return out


def send(http: httpx.Client, request: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Send one recorded request (``method``, ``path``, and ``json`` or ``content``) and record the answer."""
    kwargs: dict[str, Any] = {"headers": dict(request.get("headers", {}))}
    if "json" in request:
        kwargs["content"] = json.dumps(request["json"]).encode()
        kwargs["headers"].setdefault("Content-Type", "application/json")
    elif "content" in request:
        kwargs["content"] = str(request["content"]).encode()
    if timeout is not None:
        kwargs["timeout"] = timeout
    response = http.request(request["method"], request["path"], **kwargs)
    return parse_body(response.status_code, response.headers.get("content-type", ""), response.content)


# -- normalization -----------------------------------------------------------------------------------------
def normalize(value: Any, *, models_dir: str | None = None, keep_models: Iterable[str] | None = None) -> Any:
    """Replace volatile values with placeholders (see the constants above). ``keep_models`` filters model
    lists (``/api/tags`` ``models``, ``/v1/models`` ``data``) to the named models, since the server a
    replay runs against may hold others."""
    keep = set(keep_models) if keep_models is not None else None

    def walk(v: Any, key: str | None) -> Any:
        if isinstance(v, dict):
            out: dict[str, Any] = {}
            for k, item in v.items():
                if k in DROPPED_KEYS:
                    continue
                out[k] = walk(item, k)
            return out
        if isinstance(v, list):
            items = v
            if keep is not None and key in ("models", "data"):
                items = [m for m in v if not isinstance(m, dict) or (m.get("name") or m.get("id")) in keep]
            return [walk(item, None) for item in items]
        if key in TIMESTAMP_KEYS and isinstance(v, str):
            return "<timestamp>"
        if key in DURATION_KEYS and isinstance(v, int):
            return "<duration>"
        if key in COUNT_KEYS and isinstance(v, int):
            return "<count>"
        if key in UNIX_KEYS and isinstance(v, int) and not isinstance(v, bool):
            return "<unix>"
        if key == "sequence_number" and isinstance(v, int):
            return "<n>"  # numbered across the stream: how many deltas came before depends on token boundaries
        if key in _ID_KEYS and isinstance(v, str) and _RANDOM_ID.match(v):
            return v.split("_", 1)[0] + "_<id>"
        if key == "digest" and isinstance(v, str) and _HEX64.match(v):
            return "<digest>"
        if key == "id" and isinstance(v, str) and _COMPLETION_ID.match(v):
            return v.split("-", 1)[0] + "-<n>"
        if isinstance(v, str):
            text = _SHA256.sub("sha256:<digest>", v)
            if models_dir:
                text = text.replace(models_dir, "<models>")
            return text
        return v

    return walk(value, None)


def normalize_response(response: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    out = dict(response)
    for field in ("json", "lines", "events", "text"):
        if field in out:
            out[field] = normalize(out[field], **kwargs)
    return out


# -- comparison --------------------------------------------------------------------------------------------
def _numbers_close(a: Any, b: Any, tol: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)


def compare_values(golden: Any, actual: Any, *, generated: bool, tol: float, where: str = "") -> list[str]:
    """Differences between two normalized JSON values. With ``generated=False`` the values under
    ``GENERATED_KEYS`` are not compared (only their presence); numbers compare within ``tol``."""
    if isinstance(golden, dict) and isinstance(actual, dict):
        diffs = []
        missing, extra = golden.keys() - actual.keys(), actual.keys() - golden.keys()
        if missing:
            diffs.append(f"{where or '<root>'}: missing keys {sorted(missing)}")
        if extra:
            diffs.append(f"{where or '<root>'}: unexpected keys {sorted(extra)}")
        for k in golden.keys() & actual.keys():
            if not generated and k in GENERATED_KEYS and not (k == "delta" and isinstance(golden[k], dict)):
                continue  # (a /v1 chunk's ``delta`` object holds more than text: only text deltas are generated)
            diffs += compare_values(golden[k], actual[k], generated=generated, tol=tol, where=f"{where}/{k}")
        return diffs
    if isinstance(golden, list) and isinstance(actual, list):
        if len(golden) != len(actual):
            return [f"{where}: {len(actual)} items, golden has {len(golden)}"]
        diffs = []
        for i, (g, a) in enumerate(zip(golden, actual, strict=True)):
            diffs += compare_values(g, a, generated=generated, tol=tol, where=f"{where}/{i}")
        return diffs
    if isinstance(golden, str) and isinstance(actual, str) and where.endswith("/embedding") and golden != actual:
        g_floats, a_floats = _base64_floats(golden), _base64_floats(actual)  # encoding_format: base64
        if g_floats is not None and a_floats is not None:
            return compare_values(g_floats, a_floats, generated=generated, tol=tol, where=where)
    numeric = (int, float)
    if (
        isinstance(golden, numeric) and isinstance(actual, numeric)
        and not isinstance(golden, bool) and not isinstance(actual, bool)
        and (isinstance(golden, float) or isinstance(actual, float))
    ):
        return [] if _numbers_close(golden, actual, tol) else [f"{where}: {actual!r} != golden {golden!r}"]
    if golden != actual or type(golden) is not type(actual):
        return [f"{where}: {actual!r} != golden {golden!r}"]
    return []


def _base64_floats(text: str) -> list[float] | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    if len(raw) % 4:
        return None
    return [float(v) for v in struct.unpack(f"<{len(raw) // 4}f", raw)]


def _shape(value: Any) -> Any:
    """The key structure of a value, without its values (lists by the shape of their items)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _shape(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(sorted({repr(_shape(v)) for v in value})))
    return type(value).__name__


def _stream_text(lines: list[Any]) -> tuple[str, str]:
    """(thinking, text) of a generation stream, whatever its token boundaries."""
    thinking, text = [], []
    for line in lines:
        source = line.get("message") if isinstance(line.get("message"), dict) else line
        thinking.append(str(source.get("thinking", "")))
        text.append(str(source.get("content", source.get("response", ""))))
    return "".join(thinking), "".join(text)


# Typed SSE events (Anthropic's Messages, OpenAI's Responses) whose number depends on token boundaries:
# the deltas. Every other typed event (starts, stops, dones, the lifecycle) is compared whole.
_DELTA_EVENTS = frozenset({
    "content_block_delta", "response.output_text.delta", "response.reasoning_summary_text.delta",
    "response.function_call_arguments.delta",
})


def _events_text(events: list[Any]) -> tuple[str, str]:
    """(reasoning, text) of an SSE stream, whatever its chunk boundaries."""
    reasoning, text = [], []
    for event in events:
        if not isinstance(event, dict):
            continue
        kind = event.get("type")
        if kind == "content_block_delta":  # Anthropic
            delta = event.get("delta", {})
            reasoning.append(str(delta.get("thinking", "")))
            text.append(str(delta.get("text", "")))
        elif kind == "response.reasoning_summary_text.delta":
            reasoning.append(str(event.get("delta", "")))
        elif kind == "response.output_text.delta":
            text.append(str(event.get("delta", "")))
        elif event.get("choices"):
            choice = event["choices"][0]
            delta = choice.get("delta", {})
            reasoning.append(str(delta.get("reasoning", "")))
            text.append(str(choice.get("text", "")) + str(delta.get("content", "")))
    return "".join(reasoning), "".join(text)


def _is_tail_event(event: Any) -> bool:
    """SSE frames compared whole: for /v1 chat and completions the frames after the generated text (the
    finish chunk, the usage chunk, ``[DONE]``, an error); for typed events every one but the deltas."""
    if isinstance(event, dict) and isinstance(event.get("type"), str) and "choices" not in event:
        return event["type"] not in _DELTA_EVENTS
    if not isinstance(event, dict) or "error" in event or not event.get("choices"):
        return True
    return event["choices"][0].get("finish_reason") is not None


def compare_responses(golden: Mapping[str, Any], actual: Mapping[str, Any], *, generated: bool = True, tol: float = 1e-4) -> list[str]:
    """Differences between a golden response and a replayed one (both normalized).

    JSON bodies and non-generation NDJSON (create's statuses) compare exactly. Generation streams compare by
    structure and stable values: the set of line shapes, the concatenated text, and the final line (NDJSON)
    or the tail frames (SSE: finish, usage, ``[DONE]``) exactly, since token boundaries are not contract.
    """
    diffs: list[str] = []
    if golden["status"] != actual["status"]:
        return [f"status {actual['status']} != golden {golden['status']}"]
    if media_type(golden.get("content_type", "")) != media_type(actual.get("content_type", "")):
        diffs.append(f"content type {actual.get('content_type')!r} != golden {golden.get('content_type')!r}")
    kinds = [k for k in ("json", "lines", "events", "text", "empty") if k in golden]
    for kind in kinds:
        if kind not in actual:
            return [*diffs, f"golden has {kind}, the replay has {[k for k in actual if k not in ('status', 'content_type')]}"]
    if "json" in golden:
        diffs += compare_values(golden["json"], actual["json"], generated=generated, tol=tol)
    if "text" in golden:
        diffs += compare_values(golden["text"], actual["text"], generated=generated, tol=tol)
    if "lines" in golden:
        g, a = golden["lines"], actual["lines"]
        if not g or not a or not (isinstance(g[-1], dict) and "done" in g[-1]):
            diffs += compare_values(g, a, generated=generated, tol=tol, where="lines")
        else:
            diffs += compare_values(g[-1], a[-1], generated=generated, tol=tol, where="lines/last")
            if {repr(_shape(x)) for x in g[:-1]} != {repr(_shape(x)) for x in a[:-1]}:
                diffs.append(f"line shapes differ: {sorted({repr(_shape(x)) for x in a[:-1]})}")
            if generated and _stream_text(g) != _stream_text(a):
                diffs.append(f"(thinking, text) {_stream_text(a)!r} != golden {_stream_text(g)!r}")
    if "events" in golden:
        g, a = golden["events"], actual["events"]
        g_tail = [e for e in g if _is_tail_event(e)]
        a_tail = [e for e in a if _is_tail_event(e)]
        diffs += compare_values(g_tail, a_tail, generated=generated, tol=tol, where="events/tail")
        g_body = [e for e in g if not _is_tail_event(e)]
        a_body = [e for e in a if not _is_tail_event(e)]
        if g_body and a_body and repr(_shape(g_body[0])) != repr(_shape(a_body[0])):
            diffs.append(f"first frame shape differs: {a_body[0]!r}")
        if {repr(_shape(x)) for x in g_body} != {repr(_shape(x)) for x in a_body}:
            diffs.append("frame shapes differ")
        if generated and _events_text(g) != _events_text(a):
            diffs.append(f"(reasoning, text) {_events_text(a)!r} != golden {_events_text(g)!r}")
    return diffs


# -- golden files ------------------------------------------------------------------------------------------
def golden_paths() -> list[Path]:
    return sorted(GOLDEN_DIR.glob("*.json"))


def load_golden(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
