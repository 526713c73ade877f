"""A real OCI registry for pull/push tests, plus a fault-injecting proxy in front of it.

``registry`` (session fixture) runs Debian's ``docker-registry`` (CNCF distribution 2.8) on a free
loopback port with filesystem storage in a temp dir, and waits until ``/v2/`` answers. The binary is
``$OLLAMA_TORCH_TEST_REGISTRY`` when set, else ``docker-registry`` or ``registry`` on ``PATH``; without
one the tests that need it are skipped (CI installs the ``docker-registry`` apt package).

``RegistryProxy`` forwards to a registry from its own thread and event loop, so it serves in-process
aiohttp apps and server subprocesses alike. It counts blob bytes and requests, and can drop a blob
download after N bytes, answer with injected statuses, throttle, or demand a bearer token.

``serving(store)`` runs the app in-process on a loopback ``TestServer`` with small transfer parts, and
``make_synthetic_model`` stores a model of random blobs. Import the fixtures (``registry``, ``source``,
``local``) into a test module by name and list them in its ``__all__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ollama_torch.names import ModelName
from ollama_torch.registry import TransferOptions, Transfers
from ollama_torch.server import make_app
from ollama_torch.server.routes_registry import TRANSFERS
from ollama_torch.settings import Settings
from ollama_torch.store import ConfigV2, Layer, Manifest, MediaType, ModelStore

REGISTRY_ENV = "OLLAMA_TORCH_TEST_REGISTRY"
CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: ollama-torch-tests
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def registry_binary() -> str | None:
    explicit = os.environ.get(REGISTRY_ENV, "")
    if explicit:
        return explicit
    return shutil.which("docker-registry") or shutil.which("registry")


@dataclass
class Registry:
    proc: subprocess.Popen[bytes]
    root: Path
    port: int
    log_path: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def blob_data_path(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes."""
        hex_ = digest.split(":", 1)[1]
        return self.root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_registry(workdir: Path, binary: str, timeout: float = 30.0) -> Registry:
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "storage"
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(CONFIG.format(root=root, port=port))
    log_path = workdir / "registry.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log_file, stderr=subprocess.STDOUT)
    reg = Registry(proc, root, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"registry exited with {proc.returncode}: {log_path.read_text(errors='replace')}"
            )
        with contextlib.suppress(OSError), urllib.request.urlopen(reg.url + "/v2/", timeout=2) as resp:
            if resp.status == 200:
                return reg
        time.sleep(0.1)
    reg.stop()
    raise RuntimeError(f"registry did not answer on {reg.url}/v2/ within {timeout}s")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    binary = registry_binary()
    if binary is None:
        message = f"no registry binary: apt-get install docker-registry (or set {REGISTRY_ENV})"
        if os.environ.get("OLLAMA_TORCH_REQUIRE_REGISTRY"):  # CI installs it: a missing binary is a failure
            pytest.fail(message)
        pytest.skip(message)
    reg = start_registry(tmp_path_factory.mktemp("registry"), binary)
    yield reg
    reg.stop()


# -- a fault-injecting proxy ----------------------------------------------------------------------------------
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


@dataclass
class RegistryProxy:
    upstream: str
    drop_after: int | None = None  # abort the blob download that crosses this many blob bytes
    fail_blobs_after_drop: bool = False  # then answer every blob GET with 503
    fail_next: list[int] = field(default_factory=list)  # statuses for the next /v2/ requests
    token: str | None = None  # demand "Authorization: Bearer <token>" (handed out at /token)
    deny_token: bool = False
    throttle: float = 0.0  # seconds of sleep per forwarded blob chunk
    chunk: int = 16 * 1024
    blob_bytes: int = 0
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path?query, Range)
    _dropped: bool = False
    _throttle_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._port}"

    def reset(self) -> None:
        self.blob_bytes, self.requests, self._dropped = 0, [], False
        self.drop_after, self.fail_blobs_after_drop, self.fail_next, self.throttle = None, False, [], 0.0

    def blob_gets(self, digest: str) -> list[str]:
        return [
            rng
            for method, path, rng in self.requests
            if method == "GET" and path.endswith(f"/blobs/{digest}")
        ]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = str(request.rel_url)
        self.requests.append((request.method, path, request.headers.get("Range", "")))
        if request.path == "/token":
            if self.deny_token:
                return web.Response(status=401, text="denied")
            return web.json_response({"token": self.token})
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            realm = f"http://{request.host}/token"
            challenge = f'Bearer realm="{realm}",service="test-registry",scope="repository:x:pull,push"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        if self.fail_next:
            return web.Response(status=self.fail_next.pop(0), text="injected failure")
        is_blob_get = request.method == "GET" and "/blobs/sha256:" in request.path
        if is_blob_get and self._dropped and self.fail_blobs_after_drop:
            return web.Response(status=503, text="injected failure after drop")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                self.upstream + path,
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as up,
        ):
            out_headers = {
                k: v for k, v in up.headers.items() if k.lower() not in _HOP_BY_HOP - {"content-length"}
            }
            resp = web.StreamResponse(status=up.status, headers=out_headers)
            await resp.prepare(request)
            async for chunk in up.content.iter_chunked(self.chunk):
                if (
                    is_blob_get
                    and self.drop_after is not None
                    and self.blob_bytes + len(chunk) > self.drop_after
                ):
                    keep = max(self.drop_after - self.blob_bytes, 0)
                    await resp.write(chunk[:keep])
                    self.blob_bytes += keep
                    self.drop_after, self._dropped = None, True
                    assert request.transport is not None
                    request.transport.close()  # flushes what was written, then a short body
                    return resp
                await resp.write(chunk)
                if is_blob_get:
                    self.blob_bytes += len(chunk)
                    if self.throttle:  # one rate for all connections together
                        async with self._throttle_lock:
                            await asyncio.sleep(self.throttle)
            await resp.write_eof()
            return resp


@contextlib.contextmanager
def running_proxy(upstream: str, **kwargs: object) -> Iterator[RegistryProxy]:
    proxy = RegistryProxy(upstream, **kwargs)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="registry-proxy", daemon=True)
    thread.start()
    app = web.Application(client_max_size=1 << 34)
    app.router.add_route("*", "/{tail:.*}", proxy._handle)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    proxy._port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# -- a small synthetic model ----------------------------------------------------------------------------------
def make_synthetic_model(store: ModelStore, name: str, sizes: tuple[int, ...], seed: int = 0) -> bytes:
    """Store a model whose layers are ``sizes`` random bytes each; returns the manifest bytes."""
    rnd = random.Random(seed)
    layers = []
    for i, size in enumerate(sizes):
        digest = store.blobs.write_bytes(rnd.randbytes(size))
        media = MediaType.MODEL if i == 0 else MediaType.PARAMS
        layers.append(Layer(media, digest, size))
    config = ConfigV2(model_format="gguf", model_family="llama", extra={"seed": seed}).to_bytes()
    config_digest = store.blobs.write_bytes(config)
    manifest = Manifest(Layer(MediaType.CONFIG, config_digest, len(config)), tuple(layers))
    store.write_manifest(ModelName.parse(name), manifest)
    return manifest.to_bytes()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the app in-process (aiohttp TestServer on loopback) with small transfer parts --------------------------
PART = 64 * 1024
SIZES = (600_000, 1000, 0)  # a blob of ~10 parts, a small one, an empty one
OPTIONS = TransferOptions(
    min_part_size=PART,
    max_part_size=PART,
    max_retries=2,
    backoff=0.01,
    max_backoff=0.05,
    progress_interval=0.01,
    checkpoint_interval=0.05,
    chunk_size=16 * 1024,
)


@dataclass
class Api:
    base: str
    session: aiohttp.ClientSession
    transfers: Transfers

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        async with self.session.post(self.base + path, json=body) as resp:
            text = await resp.text()
        return resp.status, [json.loads(line) for line in text.splitlines() if line.strip()]

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until no download is in flight (a cancelled one has saved its parts)."""
        for _ in range(int(timeout / 0.02)):
            if not self.transfers.active():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"downloads still active: {self.transfers.active()}")


@contextlib.asynccontextmanager
async def serving(store: ModelStore, options: TransferOptions = OPTIONS) -> AsyncIterator[Api]:
    app = make_app(Settings(models=store.root), store=store)
    transfers = app[TRANSFERS] = Transfers(options)
    server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(str(server.make_url("")), session, transfers)
    finally:
        await server.close()


def run(coro: Callable[[], Any]) -> Any:
    return asyncio.run(coro())


def statuses(lines: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for line in lines:
        text = line.get("status") or f"error: {line.get('error')}"
        if not out or out[-1] != text:
            out.append(text)
    return out


def blobs_of(raw: bytes) -> list[str]:
    manifest = Manifest.from_bytes(raw)
    return [layer.digest for layer in (*manifest.layers, manifest.config)]


def assert_same_model(src: ModelStore, dst: ModelStore, src_name: str, dst_name: str | None = None) -> None:
    """Same manifest bytes (so the same digest) and every blob byte for byte."""
    _, _, raw_src = src.read_manifest(ModelName.parse(src_name))
    _, _, raw_dst = dst.read_manifest(ModelName.parse(dst_name or src_name))
    assert sha256(raw_dst) == sha256(raw_src) and raw_dst == raw_src
    for digest in blobs_of(raw_src):
        assert dst.blobs.read_bytes(digest) == src.blobs.read_bytes(digest), digest


def partial_state(store: ModelStore, digest: str) -> tuple[bool, int]:
    """(partial data file exists, bytes its part records claim)."""
    final = store.blobs.path(digest)
    records = sorted(final.parent.glob(final.name + "-partial-*"))
    claimed = sum(json.loads(p.read_text())["Completed"] for p in records)
    return (final.parent / (final.name + "-partial")).exists(), claimed


@pytest.fixture()
def source(tmp_path: Path) -> ModelStore:
    """The store models are pushed from."""
    return ModelStore(tmp_path / "source")


@pytest.fixture()
def local(tmp_path: Path) -> ModelStore:
    """The store models are pulled into."""
    return ModelStore(tmp_path / "local")
