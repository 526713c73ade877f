"""The CLI against a tiny in-process Ollama stand-in (stdlib ``http.server``) that records every request."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ollama_torch.cli import client as client_module
from ollama_torch.cli.client import Client
from ollama_torch.cli.format import go_duration, human_bytes, human_number, human_time, render_table
from ollama_torch.cli.main import main
from ollama_torch.cli.progress import Bar, Progress

# A route answers (status, body); a list body is streamed as NDJSON lines.
Route = Callable[["Recorded"], tuple[int, Any]]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeOllama:
    requests: list[Recorded] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)

    def calls(self, prefix: str = "/api/") -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests if r.path.startswith(prefix)]

    def body(self, method: str, path: str) -> Any:
        return next(r.json for r in self.requests if (r.method, r.path) == (method, path))

    def handle(self, req: Recorded) -> tuple[int, Any]:
        if req.path.startswith("/api/blobs/"):
            digest = req.path.removeprefix("/api/blobs/")
            if req.method == "HEAD":
                return (200 if digest in self.blobs else 404), None
            actual = "sha256:" + hashlib.sha256(req.body).hexdigest()
            if actual != digest:
                return 400, {"error": f'digest mismatch, expected "{digest}", got "{actual}"'}
            self.blobs[digest] = req.body
            return 201, None
        route = self.routes.get((req.method, req.path))
        if route is None:
            return 404, "404 page not found"
        return route(req)


def _make_handler(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Recorded(self.command, self.path, dict(self.headers.items()), body)
            fake.requests.append(req)
            status, payload = fake.handle(req)
            if isinstance(payload, list):
                data = b"".join(json.dumps(line).encode() + b"\n" for line in payload)
                ctype = "application/x-ndjson"
            elif isinstance(payload, str):
                data, ctype = payload.encode(), "text/plain"
            elif payload is None:
                data, ctype = b"", "application/json"
            else:
                data, ctype = json.dumps(payload).encode(), "application/json; charset=utf-8"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_HEAD = do_DELETE = _serve

    return Handler


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOllama]:
    state = FakeOllama()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _iso(t: datetime) -> str:
    return t.isoformat()


def _now() -> datetime:
    """Taken when the test runs (not at import): relative times like "4 minutes ago" depend on it."""
    return datetime.now(timezone.utc)

# -- create -----------------------------------------------------------------------------------------

CREATE_STREAM = [
    {"status": "parsing GGUF"},
    {"status": "using existing layer sha256:aaaa"},
    {"status": "using existing layer sha256:bbbb"},
    {"status": "writing manifest"},
    {"status": "success"},
]


def test_create_uploads_only_missing_blobs(
    fake: FakeOllama, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, config, pooling = (
        b"\x00safetensors" * 1000,
        b'{"hidden_size": 8}',
        b'{"pooling_mode_mean_tokens": true}',
    )
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(weights)
    (tmp_path / "model" / "config.json").write_bytes(config)
    (tmp_path / "model" / "1_Pooling").mkdir()
    (tmp_path / "model" / "1_Pooling" / "config.json").write_bytes(pooling)
    (tmp_path / "Modelfile").write_text(
        "FROM ./model\nPARAMETER stop <|im_end|>\nPARAMETER stop <|endoftext|>\nSYSTEM hi\n"
    )
    fake.blobs[_digest(config)] = config  # already on the server
    fake.routes["POST", "/api/create"] = lambda req: (200, CREATE_STREAM)
    monkeypatch.chdir(tmp_path)

    rc, _, err = run_cli(capsys, "create", "mini", "-q", "q8_0")

    assert rc == 0, err
    assert fake.calls() == [
        ("HEAD", f"/api/blobs/{_digest(weights)}"),
        ("POST", f"/api/blobs/{_digest(weights)}"),
        ("HEAD", f"/api/blobs/{_digest(config)}"),
        ("HEAD", f"/api/blobs/{_digest(pooling)}"),
        ("POST", f"/api/blobs/{_digest(pooling)}"),
        ("POST", "/api/create"),
    ]
    upload = next(r for r in fake.requests if r.method == "POST" and r.path.endswith(_digest(weights)))
    assert upload.body == weights and upload.headers["Content-Length"] == str(len(weights))
    assert fake.body("POST", "/api/create") == {
        "model": "mini",
        "files": {
            "model.safetensors": _digest(weights),
            "config.json": _digest(config),
            "1_Pooling/config.json": _digest(pooling),
        },
        "system": "hi",
        "parameters": {"stop": ["<|im_end|>", "<|endoftext|>"]},
        "quantize": "q8_0",
    }
    # Not a terminal: one plain line per status change, no carriage returns or escape codes.
    assert "\r" not in err and "\033" not in err
    assert err.splitlines() == [
        "gathering model components",
        f"copying file {_digest(weights)[:19]} 100% {human_bytes(len(weights))}",
        f"copying file {_digest(pooling)[:19]} 100% {len(pooling)} B",
        "parsing GGUF",
        "using existing layer sha256:aaaa",
        "using existing layer sha256:bbbb",
        "writing manifest",
        "success",
    ]


def test_create_from_model_name(fake: FakeOllama, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    modelfile = tmp_path / "Chatty.modelfile"
    modelfile.write_text(
        'FROM llama3.2\nPARAMETER temperature 0.2\nMESSAGE user """Hi\nthere"""\nLICENSE MIT\n'
    )
    stream = [
        {"status": "pulling manifest"},
        {
            "status": "pulling 6a0746a1ec1a",
            "digest": "sha256:6a0746a1ec1a" + "0" * 52,
            "total": 2000,
            "completed": 2000,
        },
        {"status": "success"},
    ]
    fake.routes["POST", "/api/create"] = lambda req: (200, stream)

    rc, _, err = run_cli(capsys, "create", "chatty", "-f", str(modelfile))

    assert rc == 0, err
    assert fake.calls() == [("POST", "/api/create")]
    assert fake.body("POST", "/api/create") == {
        "model": "chatty",
        "from": "llama3.2",
        "parameters": {"temperature": 0.2},
        "messages": [{"role": "user", "content": "Hi\nthere"}],
        "license": ["MIT"],
    }
    assert err.splitlines() == [
        "gathering model components",
        "pulling manifest",
        "pulling 6a0746a1ec1a 100% 2 KB",
        "success",
    ]


@pytest.mark.parametrize(
    ("modelfile", "args", "message"),
    [
        (None, ["create", "x", "-f", "nope"], "specified Modelfile wasn't found"),
        ("FROM foo\nBADCOMMAND x\n", ["create", "x"], "(line 2): command must be one of"),
        ("FROM foo\nPARAMETER temperature hot\n", ["create", "x"], "invalid float value [hot]"),
        ("FROM foo\n", ["create", "bad/na:me:x"], "invalid model name: bad/na:me:x"),
        ("FROM foo\n", ["create", "x"], "unsupported quantization type"),
    ],
)
def test_create_errors(
    modelfile: str | None,
    args: list[str],
    message: str,
    fake: FakeOllama,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    if modelfile is not None:
        (tmp_path / "Modelfile").write_text(modelfile)
    fake.routes["POST", "/api/create"] = lambda req: (
        200,
        [{"status": "x"}, {"error": "unsupported quantization type"}],
    )
    rc, _, err = run_cli(capsys, *args)
    assert rc == 1
    assert err.splitlines()[-1].startswith(f"Error: {message}")


def test_create_blob_streams_in_chunks(
    fake: FakeOllama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytes(range(256)) * 40
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    monkeypatch.setattr(client_module, "CHUNK", 1024)
    read_sizes: list[int] = []
    real_open = open

    class Spy(io.FileIO):
        def read(self, size: int | None = -1) -> bytes:
            read_sizes.append(-1 if size is None else size)
            return super().read(size)

    monkeypatch.setattr(
        "builtins.open",
        lambda p, mode="r", *a, **k: Spy(p, "r") if p == path else real_open(p, mode, *a, **k),
    )
    client = Client(_base_url())
    progress: list[int] = []
    client.create_blob(_digest(data), path, on_progress=progress.append)
    assert fake.blobs[_digest(data)] == data
    assert progress == list(range(1024, len(data) + 1, 1024))
    assert read_sizes and all(size == 1024 for size in read_sizes)  # never read whole


def _base_url() -> str:
    return "http://" + os.environ["OLLAMA_HOST"]


def test_create_blob_digest_mismatch(fake: FakeOllama, tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    client = Client(_base_url())
    with pytest.raises(client_module.ResponseError, match="digest mismatch") as info:
        client.create_blob("sha256:" + "0" * 64, path)
    assert info.value.status == 400


# -- list / ps / show / cp / rm / stop ---------------------------------------------------------------


def test_list(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    now = _now()
    models = [
        {"name": "smollm2:latest", "model": "smollm2:latest", "size": 98_123_456, "digest": "0a8c266910232fd3291e71e5ba1e058c",
         "modified_at": _iso(now - timedelta(days=15))},
        {"name": "all-minilm:latest", "model": "all-minilm:latest", "size": 45_960_996, "digest": "1b226e2802dbfe12",
         "modified_at": _iso(now - timedelta(minutes=4, seconds=5))},
    ]  # fmt: skip
    fake.routes["GET", "/api/tags"] = lambda req: (200, {"models": models})

    rc, out, _ = run_cli(capsys, "list")
    assert rc == 0
    assert out.splitlines() == [
        "NAME                 ID              SIZE     MODIFIED      ",
        "smollm2:latest       0a8c26691023    98 MB    2 weeks ago      ",
        "all-minilm:latest    1b226e2802db    45 MB    4 minutes ago    ",
    ]
    rc, out, _ = run_cli(capsys, "ls", "ALL")
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "all-minilm:latest"]


def test_list_empty(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes["GET", "/api/tags"] = lambda req: (200, {"models": []})
    assert run_cli(capsys, "list") == (0, "NAME    ID    SIZE    MODIFIED \n", "")


def test_ps(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    now = _now()
    models = [
        {"name": "smollm2:latest", "size": 400_000_000, "size_vram": 0, "digest": "abcdef0123456789",
         "expires_at": _iso(now + timedelta(minutes=4, seconds=30)), "context_length": 4096},
        {"name": "big:latest", "size": 1000, "size_vram": 250, "digest": "0123456789abcdef",
         "expires_at": _iso(now - timedelta(seconds=5)), "context_length": 8192},
        {"name": "gpu:latest", "size": 1000, "size_vram": 1000, "digest": "fedcba9876543210",
         "expires_at": _iso(now + timedelta(days=365 * 300)), "context_length": 2048},
    ]  # fmt: skip
    fake.routes["GET", "/api/ps"] = lambda req: (200, {"models": models})
    rc, out, _ = run_cli(capsys, "ps")
    assert rc == 0
    assert out.splitlines() == [
        "NAME              ID              SIZE      PROCESSOR          CONTEXT    UNTIL              ",
        "smollm2:latest    abcdef012345    400 MB    100% CPU           4096       4 minutes from now    ",
        "big:latest        0123456789ab    1 KB      75%/25% CPU/GPU    8192       Stopping...           ",
        "gpu:latest        fedcba987654    1 KB      100% GPU           2048       Forever               ",
    ]


SHOW: dict[str, Any] = {
    "license": "Apache License\nVersion 2.0, January 2004\nhttp://www.apache.org/licenses/",
    "modelfile": "# Modelfile generated by \"ollama show\"\nFROM /blobs/sha256-abc\nPARAMETER temperature 0.2\n",
    "parameters": 'stop                           "<|im_start|>"\nstop                           "<|im_end|>"\n'
    "temperature                    0.2",
    "template": "{{ .Prompt }}",
    "system": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "134.52M", "quantization_level": "Q4_1"},
    "model_info": {"general.architecture": "llama", "general.parameter_count": 134515008,
                   "llama.context_length": 8192, "llama.embedding_length": 576, "llama.rope.freq_base": 100000.0,
                   "tokenizer.ggml.tokens": ["<|endoftext|>", "<|im_start|>", "a", "b"], "tokenizer.ggml.add_bos_token": False},
    "capabilities": ["completion", "tools"],
}  # fmt: skip

SHOW_INFO = [
    "  Model",
    "    architecture        llama      ",
    "    parameters          134.52M    ",
    "    context length      8192       ",
    "    embedding length    576        ",
    "    quantization        Q4_1       ",
    "",
    "  Capabilities",
    "    completion    ",
    "    tools         ",
    "",
    "  Parameters",
    '    stop           "<|im_start|>"    ',
    '    stop           "<|im_end|>"      ',
    "    temperature    0.2               ",
    "",
    "  System",
    "    You are a helpful AI assistant named SmolLM, trained by Hugging Face    ",
    "",
    "  License",
    "    Apache License               ",
    "    Version 2.0, January 2004    ",
    "    ...                          ",
    "",
]


def test_show(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes["POST", "/api/show"] = lambda req: (200, SHOW)
    rc, out, _ = run_cli(capsys, "show", "smollm2")
    assert rc == 0
    assert out.split("\n") == [*SHOW_INFO, ""]
    assert fake.body("POST", "/api/show") == {"model": "smollm2"}

    assert run_cli(capsys, "show", "smollm2", "--modelfile")[1] == SHOW["modelfile"] + "\n"
    assert run_cli(capsys, "show", "smollm2", "--parameters")[1] == SHOW["parameters"] + "\n"
    assert run_cli(capsys, "show", "smollm2", "--license")[1] == SHOW["license"] + "\n"
    assert run_cli(capsys, "show", "smollm2", "--system")[1] == SHOW["system"]
    assert run_cli(capsys, "show", "smollm2", "--template")[1] == SHOW["template"]

    rc, out, _ = run_cli(capsys, "show", "smollm2", "-v")
    assert fake.requests[-1].json == {"model": "smollm2", "verbose": True}
    metadata = out.split("  Metadata\n")[1].split("\n\n")[0].splitlines()
    assert [line.strip().split(None, 1) for line in metadata] == [
        ["general.architecture", "llama"],
        ["general.parameter_count", "1.34515008e+08"],
        ["llama.context_length", "8192"],
        ["llama.embedding_length", "576"],
        ["llama.rope.freq_base", "100000"],
        ["tokenizer.ggml.add_bos_token", "false"],
        ["tokenizer.ggml.tokens", "[<|endoftext|> ...+3 more]"],
    ]


def test_show_errors(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes["POST", "/api/show"] = lambda req: (404, {"error": "model 'nope' not found"})
    assert run_cli(capsys, "show", "nope") == (1, "", "Error: model 'nope' not found\n")
    rc, _, err = run_cli(capsys, "show", "x", "--system", "--template")
    assert rc == 1 and err == (
        "Error: only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be specified\n"
    )


def test_copy(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes["POST", "/api/copy"] = lambda req: (
        (200, None)
        if req.json["source"] == "a"
        else (404, {"error": f'model "{req.json["source"]}" not found'})
    )
    assert run_cli(capsys, "cp", "a", "b") == (0, "copied 'a' to 'b'\n", "")
    assert fake.body("POST", "/api/copy") == {"source": "a", "destination": "b"}
    assert run_cli(capsys, "cp", "x", "b") == (1, "", 'Error: model "x" not found\n')


def test_rm(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    known = {"a", "b"}

    def show(req: Recorded) -> tuple[int, Any]:
        name = req.json["model"]
        return (200, SHOW) if name in known else (404, {"error": f"model '{name}' not found"})

    fake.routes["POST", "/api/show"] = show
    fake.routes["POST", "/api/generate"] = lambda req: (
        200,
        [{"model": req.json["model"], "done": True, "done_reason": "unload"}],
    )
    fake.routes["DELETE", "/api/delete"] = lambda req: (
        (200, None)
        if req.json["model"] in known
        else (404, {"error": f"model '{req.json['model']}' not found"})
    )
    assert run_cli(capsys, "rm", "a", "b") == (0, "deleted 'a'\ndeleted 'b'\n", "")
    assert fake.calls() == [("POST", "/api/show"), ("POST", "/api/generate"), ("DELETE", "/api/delete")] * 2
    generate = [r.json for r in fake.requests if r.path == "/api/generate"]
    assert generate == [{"model": "a", "keep_alive": "0s"}, {"model": "b", "keep_alive": "0s"}]
    assert run_cli(capsys, "rm", "zzz") == (1, "", "Error: model 'zzz' not found\n")


def test_stop(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes["POST", "/api/show"] = lambda req: (
        (200, SHOW)
        if req.json["model"] == "a"
        else (404, {"error": f"model '{req.json['model']}' not found"})
    )
    fake.routes["POST", "/api/generate"] = lambda req: (200, [{"done": True, "done_reason": "unload"}])
    assert run_cli(capsys, "stop", "a") == (0, "", "")
    assert fake.body("POST", "/api/generate") == {"model": "a", "keep_alive": "0s"}
    assert run_cli(capsys, "stop", "b") == (1, "", 'Error: couldn\'t find model "b" to stop\n')


def test_version(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    from ollama_torch import OLLAMA_API_VERSION

    fake.routes["GET", "/api/version"] = lambda req: (200, {"version": OLLAMA_API_VERSION})
    assert run_cli(capsys, "-v") == (0, f"ollama version is {OLLAMA_API_VERSION}\n", "")


def test_server_not_running(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{port}")
    rc, out, err = run_cli(capsys, "list")
    assert (rc, out) == (1, "")
    assert err == "Error: could not connect to ollama-torch server, run 'ollama-torch serve' to start it\n"


# -- pull / push ------------------------------------------------------------------------------------

PULL_STREAM = [
    {"status": "pulling manifest"},
    {"status": "pulling aaaaaaaaaaaa", "digest": "sha256:" + "a" * 64, "total": 2_000_000},
    {
        "status": "pulling aaaaaaaaaaaa",
        "digest": "sha256:" + "a" * 64,
        "total": 2_000_000,
        "completed": 500_000,
    },
    {
        "status": "pulling aaaaaaaaaaaa",
        "digest": "sha256:" + "a" * 64,
        "total": 2_000_000,
        "completed": 1_500_000,
    },
    {
        "status": "pulling aaaaaaaaaaaa",
        "digest": "sha256:" + "a" * 64,
        "total": 2_000_000,
        "completed": 2_000_000,
    },
    {"status": "pulling bbbbbbbbbbbb", "digest": "sha256:" + "b" * 64, "total": 300, "completed": 300},
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
]


def test_pull_progress_plain(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes["POST", "/api/pull"] = lambda req: (200, PULL_STREAM)
    rc, out, err = run_cli(capsys, "pull", "smollm2", "--insecure")
    assert (rc, out) == (0, "")
    assert fake.body("POST", "/api/pull") == {"model": "smollm2", "insecure": True}
    assert err.splitlines() == [
        "pulling manifest",
        "pulling aaaaaaaaaaaa: 100% 2 MB",
        "pulling bbbbbbbbbbbb: 100% 300 B",
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]


def test_pull_error(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes["POST", "/api/pull"] = lambda req: (
        200, [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
    )  # fmt: skip
    rc, _, err = run_cli(capsys, "pull", "nope")
    assert rc == 1 and err.splitlines()[-1] == "Error: pull model manifest: file does not exist"


def test_push(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    stream = [
        {"status": "retrieving manifest"},
        {"status": "pushing aaaaaaaaaaaa", "digest": "sha256:" + "a" * 64, "total": 100, "completed": 100},
        {"status": "pushing manifest"},
        {"status": "success"},
    ]
    fake.routes["POST", "/api/push"] = lambda req: (200, stream)
    rc, out, err = run_cli(capsys, "push", "localhost:5000/me/smol:v1", "--insecure")
    assert rc == 0
    assert out == "\nYou can find your model at:\n\n\tlocalhost:5000/me/smol:v1\n"
    assert err.splitlines() == [
        "retrieving manifest",
        "pushing aaaaaaaaaaaa 100% 100 B",
        "pushing manifest",
        "success",
    ]


# -- run --------------------------------------------------------------------------------------------


def _generate_stream(text: str) -> list[dict[str, Any]]:
    words = [{"response": w, "done": False} for w in text.split(" ") if w]
    final = {"response": "", "done": True, "done_reason": "stop", "total_duration": 1_500_000_000,
             "eval_count": 3, "eval_duration": 250_000_000}  # fmt: skip
    return [*words, final]


def test_run_one_shot(
    fake: FakeOllama, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.routes["POST", "/api/show"] = lambda req: (200, SHOW)
    fake.routes["POST", "/api/generate"] = lambda req: (200, _generate_stream("The sky is blue."))
    monkeypatch.setattr("sys.stdin", io.StringIO("Context from a pipe."))
    rc, out, err = run_cli(capsys, "run", "smollm2", "Why", "is", "the", "sky", "blue?", "--format", "json",
                           "--keepalive", "10m", "--verbose")  # fmt: skip
    assert rc == 0, err
    assert out == "Theskyisblue.\n\n"
    assert fake.body("POST", "/api/generate") == {
        "model": "smollm2",
        "prompt": "Context from a pipe. Why is the sky blue?",
        "format": "json",
        "keep_alive": "10m",
    }
    assert "total duration:       1.5s\n" in err
    assert "eval rate:            12.00 tokens/s\n" in err


def test_run_thinking(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes["POST", "/api/show"] = lambda req: (200, {**SHOW, "capabilities": ["completion", "thinking"]})
    stream = [{"thinking": "Hmm.", "response": ""}, {"response": "Blue."}, {"response": "", "done": True}]
    fake.routes["POST", "/api/generate"] = lambda req: (200, stream)
    rc, out, _ = run_cli(capsys, "run", "qwen3", "hi")
    assert rc == 0
    assert fake.body("POST", "/api/generate")["think"] is True  # inferred from the capability
    assert out == "Thinking...\nHmm.\n...done thinking.\n\nBlue.\n\n"
    rc, out, _ = run_cli(capsys, "run", "qwen3", "--think=false", "--hidethinking", "hi")
    assert fake.requests[-1].json["think"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--think=maybe"],
            'Error: invalid value for --think: "maybe" (must be true, false, high, medium, low, or max)',
        ),
        (["--keepalive", "5"], 'Error: time: missing unit in duration "5"'),
    ],
)
def test_run_bad_flags(
    args: list[str], message: str, fake: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run_cli(capsys, "run", "m", "hi", *args)
    assert (rc, err) == (1, message + "\n")
    assert fake.requests == []


def test_run_pulls_missing_model(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    shown: list[str] = []

    def show(req: Recorded) -> tuple[int, Any]:
        shown.append(req.json["model"])
        return (404, {"error": "model 'm' not found"}) if len(shown) == 1 else (200, SHOW)

    fake.routes["POST", "/api/show"] = show
    fake.routes["POST", "/api/pull"] = lambda req: (200, [{"status": "success"}])
    fake.routes["POST", "/api/generate"] = lambda req: (200, _generate_stream("ok"))
    rc, out, _ = run_cli(capsys, "run", "m", "hi")
    assert (rc, out) == (0, "ok\n\n")
    assert fake.calls() == [
        ("POST", "/api/show"),
        ("POST", "/api/pull"),
        ("POST", "/api/show"),
        ("POST", "/api/generate"),
    ]


def test_run_embedding_model(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes["POST", "/api/show"] = lambda req: (200, {**SHOW, "capabilities": ["embedding"]})
    fake.routes["POST", "/api/embed"] = lambda req: (200, {"embeddings": [[0.25, -0.5, 1.0]]})
    rc, out, _ = run_cli(capsys, "run", "all-minilm", "hello", "--dimensions", "3", "--truncate=false")
    assert (rc, out) == (0, "[0.25,-0.5,1.0]\n")
    assert fake.body("POST", "/api/embed") == {
        "model": "all-minilm",
        "input": "hello",
        "truncate": False,
        "dimensions": 3,
    }
    rc, _, err = run_cli(capsys, "run", "all-minilm")
    assert rc == 1 and "embedding models require input text" in err


def test_run_error_mid_stream(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes["POST", "/api/show"] = lambda req: (200, SHOW)
    fake.routes["POST", "/api/generate"] = lambda req: (
        200,
        [{"response": "Hel"}, {"error": "model runner has unexpectedly stopped"}],
    )
    rc, out, err = run_cli(capsys, "run", "m", "hi")
    assert (rc, out, err) == (1, "Hel", "Error: model runner has unexpectedly stopped\n")


# -- progress and formatting ------------------------------------------------------------------------


def test_progress_plain_no_spam() -> None:
    stream = io.StringIO()
    progress = Progress(stream, tty=False, log_interval=3600)
    spinner = progress.spinner("working")
    bar = progress.bar("pulling abc:", 1000)
    for value in range(0, 1001, 10):
        progress.update(bar, value)
    progress.update(bar, 1000)
    spinner.stop()
    progress.stop()
    assert stream.getvalue() == "working\npulling abc: 100% 1 KB\n"


def test_progress_plain_reports_slow_bars() -> None:
    stream = io.StringIO()
    progress = Progress(stream, tty=False, log_interval=0)  # every move is "slow" enough to report
    bar = progress.bar("copying file sha256:abc", 4_000_000)
    for value in (1_000_000, 3_000_000, 4_000_000, 4_000_000):
        progress.update(bar, value)
    progress.stop()
    assert stream.getvalue().splitlines() == [
        "copying file sha256:abc  25% 1 MB/4 MB",
        "copying file sha256:abc  75% 3 MB/4 MB",
        "copying file sha256:abc 100% 4 MB",
    ]


def test_progress_tty_redraws_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ollama_torch.cli.progress._terminal_size", lambda stream: (60, 24))
    stream = io.StringIO()
    progress = Progress(stream, tty=True, interval=3600)  # the render thread never fires on its own
    progress.spinner("pulling manifest")
    bar = progress.bar("pulling abc:", 2_000_000)
    progress.update(bar, 1_000_000)
    progress.render()
    first = stream.getvalue()
    assert first.startswith("\033[?25l\r") and first.endswith("\033[?25h")
    lines = first.removeprefix("\033[?25l\r").removesuffix("\033[?25h").split("\n")
    assert lines[0].startswith("pulling manifest ") and lines[0].endswith("\033[K")
    assert lines[1].startswith("pulling abc:  50% ▕") and "1 MB/  2 MB" in lines[1]
    assert len(lines[1].removesuffix("\033[K")) == 59  # Go leaves the last column free
    progress.render()
    assert stream.getvalue()[len(first) :].startswith("\033[?25l\033[A\r")  # back up over two lines
    progress.stop()
    assert stream.getvalue().endswith("\033[?25h\n")
    assert "⠋" not in stream.getvalue().split("\r")[-1]  # stopped spinners draw no frame


def test_bar_render_layout() -> None:
    bar = Bar("pulling 1234:", 1000, 1000)
    text = bar.render(80)
    assert text.startswith("pulling 1234: 100% ▕" + "█" * 10)
    assert text.endswith("▏   1 KB" + " " * 25)
    assert len(text) == 79


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1 KB"), (1500, "1.5 KB"), (98_123_456, "98 MB"), (2_019_377_376, "2.0 GB"),
     (1_000_000_000_000, "1 TB")],
)  # fmt: skip
def test_human_bytes(value: int, text: str) -> None:
    assert human_bytes(value) == text


def test_human_number_and_durations() -> None:
    assert [human_number(n) for n in (999, 135_000, 494_032_768, 8_030_261_248, 3_000_000_000)] == [
        "999", "135K", "494.03M", "8.0B", "3B"
    ]  # fmt: skip
    assert [go_duration(n) for n in (0, 999, 1500, 2_500_000, 1_500_000_000, 125_250_000_000, 3_725_000_000_000)] == [
        "0s", "999ns", "1.5µs", "2.5ms", "1.5s", "2m5.25s", "1h2m5s"
    ]  # fmt: skip
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    cases = [(timedelta(seconds=0.5), "Less than a second ago"), (timedelta(seconds=1), "1 second ago"),
             (timedelta(minutes=1, seconds=30), "About a minute ago"), (timedelta(hours=1), "About an hour ago"),
             (timedelta(hours=30), "30 hours ago"), (timedelta(days=3), "3 days ago"), (timedelta(days=40), "5 weeks ago"),
             (timedelta(days=100), "3 months ago"), (timedelta(days=800), "2 years ago"),
             (-timedelta(minutes=5), "5 minutes from now"), (-timedelta(days=365 * 30), "Forever")]  # fmt: skip
    assert [human_time(now - delta, "Never", now) for delta, _ in cases] == [text for _, text in cases]
    assert human_time(None, "Never") == "Never"


def test_render_table_wraps_long_cells() -> None:
    text = render_table([["", "one two three four five six seven eight"]], col_width=10)
    assert text.splitlines() == [
        "    one two       ",
        "    three four    ",
        "    five six      ",
        "    seven         ",
        "    eight         ",
    ]


def test_repl_keeps_history(
    fake: FakeOllama, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ollama_torch.cli.repl import repl
    from ollama_torch.cli.run import RunOptions

    replies = iter(["Hi!", "Fine."])
    fake.routes["POST", "/api/chat"] = lambda req: (
        200,
        [
            {"message": {"role": "assistant", "content": next(replies)}},
            {"message": {"role": "assistant", "content": ""}, "done": True},
        ],
    )
    lines = iter([
        "/set parameter temperature 0.5",
        "/set parameter top_k lots",
        "/set system You are terse.",
        '"""Hello',
        'world"""',
        "/nope",
        "How are you?",
        "/bye",
    ])  # fmt: skip
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    repl(Client(_base_url()), RunOptions(model="smollm2"))
    out = capsys.readouterr().out
    assert "Set parameter 'temperature' to '0.5'\n" in out
    assert 'Couldn\'t set parameter: "invalid int value [lots]"\n' in out
    assert "Set system message.\n" in out and "Unknown command '/nope'. Type /? for help\n" in out
    assert "Hi!\n\n" in out and "Fine.\n\n" in out
    chats = [r.json for r in fake.requests if r.path == "/api/chat"]
    system = {"role": "system", "content": "You are terse."}
    assert chats[0] == {
        "model": "smollm2",
        "messages": [system, {"role": "user", "content": "Hello\nworld"}],
        "options": {"temperature": 0.5},
    }
    assert chats[1]["messages"] == [
        system,
        {"role": "user", "content": "Hello\nworld"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "How are you?"},
    ]


# -- export ---------------------------------------------------------------------------------------------
GGUF_BYTES = "GGUF pretend model bytes\n"


def _export_routes(fake: FakeOllama, served: str = GGUF_BYTES) -> str:
    digest = _digest(GGUF_BYTES.encode())
    fake.routes["POST", "/api/x/export"] = lambda req: (200, [
        {"status": "exporting mini:latest"},
        {"status": "converting model to GGUF Q8_0", "digest": "0000000000000000000", "total": 10, "completed": 0},
        {"status": "converting model to GGUF Q8_0", "digest": "0000000000000000000", "total": 10, "completed": 10},
        {"status": "success", "blob": digest, "size": len(GGUF_BYTES), "quantization_level": "Q8_0"},
    ])
    fake.routes["GET", f"/api/x/blobs/{digest}"] = lambda req: (200, served)
    return digest


def test_export_writes_the_downloaded_gguf(fake: FakeOllama, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    digest = _export_routes(fake)
    out = tmp_path / "mini.gguf"
    rc, stdout, err = run_cli(capsys, "export", "mini", "-o", str(out), "-q", "q8_0")
    assert rc == 0, err
    assert out.read_text() == GGUF_BYTES
    assert fake.body("POST", "/api/x/export") == {"model": "mini", "quantize": "q8_0"}
    assert fake.calls() == [("POST", "/api/x/export"), ("GET", f"/api/x/blobs/{digest}")]
    assert f"wrote {out} (Q8_0, 0.0 MB)" in stdout
    assert not list(tmp_path.glob(".*partial"))


def test_export_refuses_a_download_that_is_not_the_named_blob(fake: FakeOllama, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    digest = _export_routes(fake, served="something else\n")
    out = tmp_path / "mini.gguf"
    rc, _, err = run_cli(capsys, "export", "mini", "-o", str(out))
    assert rc == 1 and f"Error: download of {digest} does not match its digest" in err
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_export_errors(fake: FakeOllama, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fake.routes["POST", "/api/x/export"] = lambda req: (404, {"error": "model 'nope:latest' not found"})
    rc, _, err = run_cli(capsys, "export", "nope", "-o", str(tmp_path / "x.gguf"))
    assert rc == 1 and "Error: model 'nope:latest' not found" in err
    rc, _, err = run_cli(capsys, "export", "mini", "-o", str(tmp_path))
    assert rc == 1 and "is a directory" in err
    with pytest.raises(SystemExit):
        main(["export", "mini"])  # -o is required
    assert "the following arguments are required: -o/--output" in capsys.readouterr().err


def test_create_gguf_flag(fake: FakeOllama, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM base\n")
    fake.routes["POST", "/api/create"] = lambda req: (200, [{"status": "success"}])
    rc, _, err = run_cli(capsys, "create", "g", "-f", str(modelfile), "--gguf", "-q", "q4_K_M")
    assert rc == 0, err
    assert fake.body("POST", "/api/create") == {"model": "g", "from": "base", "quantize": "q4_K_M", "gguf": True}
