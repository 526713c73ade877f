"""A small HTTP client for the Ollama API on the standard library (``http.client``), so the CLI starts fast.

It talks to ollama-torch or to a real Ollama alike: JSON requests, NDJSON streams whose lines may carry
``{"error": ...}``, and blob uploads streamed from disk in chunks. Server errors become ``ResponseError``
with the server's message; a server that is not there becomes ``ConnectError``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import __version__

CHUNK = 1 << 20  # blob upload chunk
CONNECT_MESSAGE = "could not connect to ollama-torch server, run 'ollama-torch serve' to start it"


class ClientError(Exception):
    """Anything the CLI reports as ``Error: <message>``."""


class ConnectError(ClientError):
    def __init__(self, detail: str = "") -> None:
        super().__init__(CONNECT_MESSAGE)
        self.detail = detail


class ResponseError(ClientError):
    """An HTTP error status, or an ``{"error": ...}`` line inside a stream (``status`` is then 200)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_message(status: int, body: bytes) -> str:
    """The server's ``{"error": "..."}``, else the raw body (as Ollama's client does), else the status."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return text or f"{status} {http.client.responses.get(status, '')}".strip()


class Client:
    def __init__(self, base_url: str, timeout: float | None = None, api_key: str = "") -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.scheme = parts.scheme or "http"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.api_key = api_key  # sent as a bearer token (a server with OLLAMA_TORCH_API_KEY asks for it)

    # -- plumbing ----------------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout, blocksize=CHUNK)

    def _headers(self, accept: str = "application/json") -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": accept,
            "User-Agent": f"ollama-torch/{__version__} (python)",
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _send(
        self, method: str, path: str, body: Any = None, accept: str = "application/json"
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        data = None if body is None else json.dumps(body).encode()
        conn = self._connection()
        try:
            conn.request(method, self.prefix + path, body=data, headers=self._headers(accept))
            return conn, conn.getresponse()
        except http.client.HTTPException as exc:
            conn.close()
            raise ClientError(f"{method} {path}: {exc}") from None
        except OSError as exc:  # refused, unknown host, unreachable, timed out
            conn.close()
            raise ConnectError(str(exc)) from None

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON exchange (Ollama's ``Client.do``): the decoded body, or ``None`` when empty."""
        conn, resp = self._send(method, path, body)
        try:
            raw = resp.read()
        finally:
            conn.close()
        if resp.status >= 400:
            raise ResponseError(resp.status, _error_message(resp.status, raw))
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ClientError(f"{method} {path}: unexpected response: {raw[:200]!r}") from None

    def stream(self, method: str, path: str, body: Any = None) -> Iterator[dict[str, Any]]:
        """NDJSON objects as they arrive (Ollama's ``Client.stream``); an error line raises."""
        conn, resp = self._send(method, path, body, accept="application/x-ndjson")
        try:
            if resp.status >= 400:
                raise ResponseError(resp.status, _error_message(resp.status, resp.read()))
            while line := resp.readline():
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise ClientError(line.decode("utf-8", errors="replace").strip()) from None
                if isinstance(obj, dict) and obj.get("error"):
                    raise ResponseError(resp.status, str(obj["error"]))
                if isinstance(obj, dict):
                    yield obj
        finally:
            conn.close()

    # -- blobs -------------------------------------------------------------------------------------
    def blob_exists(self, digest: str) -> bool:
        """``HEAD /api/blobs/<digest>``: 200 = present, 404 = missing, anything else is an error."""
        conn, resp = self._send("HEAD", f"/api/blobs/{digest}")
        try:
            resp.read()
        finally:
            conn.close()
        if resp.status == 404:
            return False
        if resp.status >= 400:
            raise ResponseError(resp.status, _error_message(resp.status, b""))
        return True

    def create_blob(self, digest: str, path: Path, on_progress: Callable[[int], None] | None = None) -> None:
        """``POST /api/blobs/<digest>`` with the file's bytes streamed in chunks, never read whole."""
        size = path.stat().st_size
        conn = self._connection()
        sent = 0
        try:
            try:
                conn.putrequest("POST", f"{self.prefix}/api/blobs/{digest}")
                for key, value in self._headers().items():
                    conn.putheader(key, "application/octet-stream" if key == "Content-Type" else value)
                conn.putheader("Content-Length", str(size))
                conn.endheaders()
            except OSError as exc:
                raise ConnectError(str(exc)) from None
            try:
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        conn.send(chunk)
                        sent += len(chunk)
                        if on_progress is not None:
                            on_progress(sent)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early (an error); read its answer below
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(f"upload {path}: {exc}") from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise ResponseError(resp.status, _error_message(resp.status, raw))

    def download_blob(self, digest: str, dest: Path, on_progress: Callable[[int, int], None] | None = None) -> None:
        """``GET /api/x/blobs/<digest>`` (ollama-torch) into ``dest``, streamed and hashed as it is written;
        the file only appears under ``dest`` when its sha256 is ``digest``."""
        conn, resp = self._send("GET", f"/api/x/blobs/{digest}", accept="application/octet-stream")
        tmp = dest.with_name(f".{dest.name}.partial")
        try:
            if resp.status >= 400:
                raise ResponseError(resp.status, _error_message(resp.status, resp.read()))
            total = int(resp.getheader("Content-Length") or 0)
            sha, done = hashlib.sha256(), 0
            with open(tmp, "wb") as f:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    sha.update(chunk)
                    done += len(chunk)
                    if on_progress is not None:
                        on_progress(done, total)
            if f"sha256:{sha.hexdigest()}" != digest:
                raise ClientError(f"download of {digest} does not match its digest")
            tmp.replace(dest)
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(f"download {digest}: {exc}") from None
        finally:
            conn.close()
            tmp.unlink(missing_ok=True)

    # -- the API -----------------------------------------------------------------------------------
    def heartbeat(self) -> None:
        conn, resp = self._send("HEAD", "/")
        resp.read()
        conn.close()

    def version(self) -> str:
        return str((self.request("GET", "/api/version") or {}).get("version", ""))

    def list_models(self) -> list[dict[str, Any]]:
        return list((self.request("GET", "/api/tags") or {}).get("models") or [])

    def list_running(self) -> list[dict[str, Any]]:
        return list((self.request("GET", "/api/ps") or {}).get("models") or [])

    def show(self, model: str, verbose: bool = False, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, **extra}
        if verbose:
            body["verbose"] = True
        return dict(self.request("POST", "/api/show", body) or {})

    def copy(self, source: str, destination: str) -> None:
        self.request("POST", "/api/copy", {"source": source, "destination": destination})

    def delete(self, model: str) -> None:
        self.request("DELETE", "/api/delete", {"model": model})

    def create(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("POST", "/api/create", request)

    def export(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """``POST /api/x/export`` (ollama-torch): the export's statuses, the last naming the GGUF's blob."""
        return self.stream("POST", "/api/x/export", request)

    def pull(self, model: str, insecure: bool = False) -> Iterator[dict[str, Any]]:
        body: dict[str, Any] = {"model": model}
        if insecure:
            body["insecure"] = True
        return self.stream("POST", "/api/pull", body)

    def push(self, model: str, insecure: bool = False) -> Iterator[dict[str, Any]]:
        body: dict[str, Any] = {"model": model}
        if insecure:
            body["insecure"] = True
        return self.stream("POST", "/api/push", body)

    def generate(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("POST", "/api/generate", request)

    def chat(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("POST", "/api/chat", request)

    def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/api/embed", request) or {})
