"""HTTP to an OCI distribution (v2) registry, as Ollama's ``makeRequestWithRetry`` speaks it.

One ``RegistryClient`` per pull or push: it owns the base URL (``https://<host>``, or ``http://`` for
``http://`` names and for ``insecure`` requests, as Ollama rewrites the scheme), the bearer token, and
the retry policy. Requests that fail transiently (dropped connections, timeouts, 5xx, 429) are retried
with exponential backoff; a host that does not resolve or refuses the connection fails at once with Go's
text, as Ollama's does (retrying cannot make it appear); a 401 runs the ``WWW-Authenticate: Bearer
realm=...`` token flow once.

Not supported (documented in the README): Ollama's ed25519-signed token requests (``~/.ollama/id_ed25519``,
needed for private models and pushes on ollama.com) and HTTP Basic credentials. Token requests are
anonymous, so a realm on another host than the registry (Docker Hub style) is allowed: nothing secret
is sent to it.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import aiohttp

from .. import __version__
from ..errors import OllamaError
from ..names import ModelName

log = logging.getLogger(__name__)

USER_AGENT = f"ollama-torch/{__version__}"
MB = 1000 * 1000  # Ollama's format.MegaByte


class RegistryError(OllamaError):
    """A registry answered with an error, or could not be reached. 500, as Ollama streams them.

    ``http_status`` is the registry's answer (0 when there was none: a connection failure).
    """

    status = 500
    http_status = 0


class RegistryNotFound(RegistryError):
    """A 404: Ollama maps it to ``os.ErrNotExist``, whose text is ``file does not exist``."""

    http_status = 404

    def __init__(self, message: str = "file does not exist") -> None:
        super().__init__(message)


class Unauthorized(RegistryError):
    http_status = 401

    def __init__(self, message: str = "unauthorized: access denied") -> None:
        super().__init__(message)


class InsecureProtocol(RegistryError):
    def __init__(self) -> None:
        super().__init__("insecure protocol http")


@dataclass(frozen=True)
class TransferOptions:
    """Knobs of pull and push; the defaults are Ollama's. Tests shrink the part sizes and delays."""

    num_parts: int = 16  # blobs are split into about this many parts, fetched concurrently
    min_part_size: int = 100 * MB
    max_part_size: int = 1000 * MB
    max_retries: int = 6  # per request and per part
    backoff: float = 1.0  # first retry delay in seconds; doubles each try, with jitter
    max_backoff: float = 30.0
    stall_timeout: float = 30.0  # a part with no bytes for this long is retried
    connect_timeout: float = 30.0
    progress_interval: float = 0.06  # Ollama reports progress every 60 ms
    checkpoint_interval: float = 1.0  # how often a part's progress is persisted while it downloads
    chunk_size: int = 1 << 20

    def part_size(self, total: int) -> int:
        return min(max(total // max(self.num_parts, 1), self.min_part_size), self.max_part_size)


def is_transient(status: int) -> bool:
    return status == 429 or status >= 500


def backoff_delay(options: TransferOptions, attempt: int) -> float:
    delay = min(options.backoff * (2**attempt), options.max_backoff)
    return delay * (random.random() + 0.5)  # jitter against thundering herds


def parse_challenge(header: str) -> dict[str, str]:
    """``Bearer realm="...",service="...",scope="..."`` -> its parameters (scheme under ``""``)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {"": scheme.lower()}
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().strip(",").strip().lower()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            end = rest.find('"', i + 1)
            end = len(rest) if end < 0 else end
            params[key] = rest[i + 1 : end]
            i = end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
        while i < len(rest) and rest[i] in ", ":
            i += 1
    return params


def error_detail(status: int, body: bytes) -> str:
    """``<status>: <registry message>``; the messages of a registry's ``{"errors": [...]}`` when present."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        messages = [str(e.get("message") or e.get("code")) for e in data["errors"] if isinstance(e, dict)]
        if messages:
            text = "; ".join(messages)
    return f"{status}: {text[:500]}" if text else str(status)


Body = bytes | Callable[[], Any] | None


class RegistryClient:
    """Requests against one registry, with auth and retries. Use ``async with RegistryClient(...)``."""

    def __init__(self, name: ModelName, *, insecure: bool, options: TransferOptions | None = None) -> None:
        if name.scheme == "http" and not insecure:
            raise InsecureProtocol()
        self.name = name
        self.options = options or TransferOptions()
        scheme = "http" if insecure else (name.scheme or "https")
        self.base_url = f"{scheme}://{name.host}"
        self.repository = name.namespace_model
        self.token = ""
        self._session: aiohttp.ClientSession | None = None
        self._patient_timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.options.connect_timeout)

    async def __aenter__(self) -> RegistryClient:
        host = (urlsplit(self.base_url).hostname or "").lower()
        loopback = host in {"localhost", "::1"} or host.startswith("127.")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.options.connect_timeout, sock_read=self.options.stall_timeout
            ),
            headers={"User-Agent": USER_AGENT},
            auto_decompress=False,
            # HTTPS_PROXY/NO_PROXY as Go's client honours them, except for loopback as Go does.
            trust_env=not loopback,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("RegistryClient used outside 'async with'")
        return self._session

    # -- URLs ------------------------------------------------------------------------------------------
    def url(self, *parts: str) -> str:
        path = "/".join(quote(p, safe=":") for p in ("v2", *self.repository.split("/"), *parts))
        return f"{self.base_url}/{path}"

    def manifest_url(self) -> str:
        return self.url("manifests", self.name.tag)

    def blob_url(self, digest: str) -> str:
        return self.url("blobs", digest)

    def resolve(self, location: str, base: str) -> str:
        """A ``Location`` header, relative or absolute, as an absolute URL on the registry's scheme."""
        absolute = urljoin(base, location)
        if self.base_url.startswith("http://") and absolute.startswith("https://"):
            # Ollama's makeRequest rewrites every URL of an insecure pull or push to http.
            absolute = "http://" + absolute[len("https://") :]
        return absolute

    # -- requests --------------------------------------------------------------------------------------
    @asynccontextmanager
    async def open(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        allow_redirects: bool = True,
        auth: bool = True,
        retry: bool = True,
        patient: bool = False,
        ok_statuses: tuple[int, ...] = (),
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request and yield a response with a success status (or one in ``ok_statuses``).

        Connection failures, 5xx and 429 are retried; a 401 fetches a bearer token and retries once;
        404 raises ``RegistryNotFound``; any other error status raises ``RegistryError``. ``body`` is
        bytes, or a callable returning a fresh payload for each attempt. ``retry=False`` leaves retrying
        to the caller (uploads, which must ask the registry where to resume). ``patient`` drops the
        stall timeout: a registry answers an upload only once it has the whole chunk (or has hashed the
        whole blob), which can take longer than any silence a download should tolerate.
        """
        opts = self.options
        max_retries = opts.max_retries if retry else 0
        attempt = 0
        authorized = False
        while True:
            send_headers = dict(headers or {})
            if auth and self.token:
                send_headers["Authorization"] = f"Bearer {self.token}"
            data = body() if callable(body) else body
            extra: dict[str, Any] = {"timeout": self._patient_timeout} if patient else {}
            try:
                resp = await self.session.request(
                    method, url, headers=send_headers, data=data, allow_redirects=allow_redirects, **extra
                )
            except aiohttp.ClientSSLError as exc:  # not transient: retrying cannot fix a TLS mismatch
                hint = " (a plain-http registry needs insecure: true)" if "WRONG_VERSION" in str(exc) else ""
                raise RegistryError(f"{method} {url}: {describe_exception(exc)}{hint}") from exc
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                dial = dial_error(exc)
                if dial:  # Go's *url.Error: `Get "<url>": dial tcp ...`
                    raise RegistryError(f'{method[:1]}{method[1:].lower()} "{url}": {dial}') from exc
                if attempt >= max_retries:
                    raise RegistryError(f"{method} {url}: {describe_exception(exc)}") from exc
                delay = backoff_delay(opts, attempt)
                log.info("%s %s failed (%s), retrying in %.2fs", method, url, describe_exception(exc), delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            try:
                if resp.status in ok_statuses or resp.status < 400:
                    yield resp
                    return
                if resp.status == 401 and auth and not authorized:
                    challenge = resp.headers.get("WWW-Authenticate", "")
                    resp.release()
                    self.token = await self._fetch_token(challenge, url)
                    authorized = True
                    continue
                payload = await _read_safely(resp)
                if resp.status == 401:
                    raise Unauthorized()
                if resp.status == 404:
                    raise RegistryNotFound()
                if is_transient(resp.status) and attempt < max_retries:
                    delay = _retry_after(resp) or backoff_delay(opts, attempt)
                    log.info("%s %s answered %d, retrying in %.2fs", method, url, resp.status, delay)
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                error = RegistryError(error_detail(resp.status, payload))
                error.http_status = resp.status
                raise error
            finally:
                resp.release()

    async def _fetch_token(self, challenge: str, url: str) -> str:
        """Ollama's ``getAuthorizationToken``, unsigned: GET ``<realm>?service=..&scope=..&ts=..&nonce=..``."""
        params = parse_challenge(challenge)
        realm = params.get("realm", "")
        if params.get("") != "bearer" or not realm.startswith(("http://", "https://")):
            raise Unauthorized()
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", s) for s in params.get("scope", "").split(" ") if s]
        query.append(("ts", str(int(time.time()))))
        query.append(("nonce", base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()))
        sep = "&" if urlsplit(realm).query else "?"
        token_url = realm + sep + urlencode(query)
        async with self.open("GET", token_url, auth=False) as resp:
            raw = await resp.read()
        try:
            data = json.loads(raw)
        except ValueError:
            raise RegistryError(f"invalid token response from {realm}") from None
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise Unauthorized()
        return token


async def _read_safely(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await resp.read()
    except (aiohttp.ClientError, TimeoutError):
        return b""


def _retry_after(resp: aiohttp.ClientResponse) -> float:
    value = resp.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return 0.0


def dial_error(exc: BaseException) -> str:
    """Go's dial error text when ``exc`` says the host does not resolve or refuses the connection, else "".

    Neither is transient on the time scale of a pull, and Ollama's ``makeRequestWithRetry`` retries no
    connection error: they fail at once. Dropped connections and timeouts ("" here) keep their retries.
    Go's pure resolver also names the DNS server (``lookup h on 127.0.0.53:53: no such host``); the cgo
    resolver's form is used here, and the host as named rather than the address that refused.
    """
    if not isinstance(exc, aiohttp.ClientConnectorError):
        return ""
    os_error = exc.os_error
    if isinstance(os_error, socket.gaierror):
        not_found = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
        reason = "no such host" if os_error.errno in not_found else str(os_error.strerror or os_error).lower()
        return f"dial tcp: lookup {exc.host}: {reason}"
    if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
        address = f"[{exc.host}]:{exc.port}" if ":" in exc.host else f"{exc.host}:{exc.port}"
        return f"dial tcp {address}: connect: connection refused"
    return ""


def describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
