"""Every setting, read from the environment in one place, with Ollama's names and meanings.

Nothing else in the package reads ``os.environ`` for configuration: the CLI builds one ``Settings``
at start-up and hands it to the server, the scheduler and the store through their constructors.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .durations import parse_env_keep_alive

log = logging.getLogger(__name__)

DEFAULT_PORT = 11434


def _var(env: Mapping[str, str], key: str) -> str:
    """Ollama's ``envconfig.Var``: trimmed of spaces and of surrounding quotes."""
    return env.get(key, "").strip().strip("\"'").strip()


def _bool(env: Mapping[str, str], key: str, default: bool = False) -> bool:
    value = _var(env, key).lower()
    if not value:
        return default
    return value in {"1", "true", "t", "yes", "y", "on"}


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    value = _var(env, key)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        log.warning("invalid %s %r, using default %d", key, value, default)
        return default


@dataclass(frozen=True)
class HostSetting:
    """``OLLAMA_HOST`` parsed as Ollama does: default ``http://127.0.0.1:11434``."""

    scheme: str = "http"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> HostSetting:
        text = text.strip()
        default_port = DEFAULT_PORT
        scheme, sep, hostport = text.partition("://")
        if not sep:
            scheme, hostport = "http", text
        elif scheme == "http":
            default_port = 80
        elif scheme == "https":
            default_port = 443
        hostport = hostport.split("/", 1)[0]
        host, port = _split_host_port(hostport)
        if host is None:
            host, port_num = "127.0.0.1", default_port
            bare = hostport.strip("[]")
            if bare:
                host = bare
            return cls(scheme, host, port_num)
        try:
            port_num = int(port or "")
            if not 0 <= port_num <= 65535:
                raise ValueError
        except ValueError:
            log.warning("invalid port %r, using default %d", port, default_port)
            port_num = default_port
        # Go binds every interface for ":port", as Ollama does with OLLAMA_HOST=":11434".
        return cls(scheme, host or "0.0.0.0", port_num)

    @property
    def connect_host(self) -> str:
        """Unspecified bind addresses (0.0.0.0, ::) become loopback for clients."""
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            return self.host
        if ip.is_unspecified:
            return "127.0.0.1" if ip.version == 4 else "::1"
        return self.host

    @property
    def base_url(self) -> str:
        host = self.connect_host
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def _split_host_port(hostport: str) -> tuple[str | None, str | None]:
    """Go's ``net.SplitHostPort``: ``(None, None)`` when there is no port."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1 :].startswith(":"):
            return None, None
        return hostport[1:end], hostport[end + 2 :]
    if hostport.count(":") != 1:
        return None, None
    host, _, port = hostport.partition(":")
    return host, port


class SettingsError(ValueError):
    """A setting that must not be ignored is unusable (the server refuses to start rather than guess)."""


def _api_key(env: Mapping[str, str]) -> str:
    """``OLLAMA_TORCH_API_KEY``, or the content of the file ``OLLAMA_TORCH_API_KEY_FILE`` names, trimmed of
    surrounding whitespace (for secrets mounted as files). A key file that cannot be read or is empty stops the start-up: a server the
    operator meant to protect must not come up open."""
    key = _var(env, "OLLAMA_TORCH_API_KEY")
    path = _var(env, "OLLAMA_TORCH_API_KEY_FILE")
    if key and path:
        raise SettingsError("set OLLAMA_TORCH_API_KEY or OLLAMA_TORCH_API_KEY_FILE, not both")
    if not path:
        return key
    try:
        key = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"OLLAMA_TORCH_API_KEY_FILE: cannot read {path}: {exc}") from None
    if not key:
        raise SettingsError(f"OLLAMA_TORCH_API_KEY_FILE: {path} holds no key")
    return key


def default_models_dir() -> Path:
    return Path.home() / ".ollama-torch" / "models"


DEFAULT_ORIGINS = tuple(
    [
        f"{scheme}://{origin}{port}"
        for origin in ("localhost", "127.0.0.1", "0.0.0.0")
        for port in ("", ":*")
        for scheme in ("http", "https")
    ]
    + ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]
)


@dataclass(frozen=True)
class Settings:
    host: HostSetting = field(default_factory=HostSetting)
    models: Path = field(default_factory=default_models_dir)
    keep_alive: float = 300.0  # seconds; math.inf = forever
    max_loaded_models: int = 0  # 0 = auto (3 per GPU, 3 on CPU)
    num_parallel: int = 0  # 0 = auto (see effective_num_parallel)
    max_queue: int = 512
    context_length: int = 0  # 0 = auto (4096, clamped to the model's trained context)
    origins: tuple[str, ...] = DEFAULT_ORIGINS
    noprune: bool = False
    debug: int = 0
    flash_attention: bool = False
    kv_cache_type: str = "f16"
    load_timeout: float = 300.0
    device: str = ""  # OLLAMA_TORCH_DEVICE: "cuda", "cuda:1", "cpu"; "" = CUDA when present
    dtype: str = ""  # OLLAMA_TORCH_DTYPE: "float32", "bfloat16", "float16"; "" = device default
    prefill_chunk: int = 0  # OLLAMA_TORCH_PREFILL_CHUNK: prompt tokens per step while others decode; 0 = adaptive
    # OLLAMA_TORCH_COMPILE: compiled decode steps (engine/compiled.py). None (unset) = on a CPU, compiled in the
    # background while the model serves eager; True = on every device, compiled as the model loads; False = off
    compile: bool | None = None
    api_key: str = field(default="", repr=False)  # OLLAMA_TORCH_API_KEY(_FILE): "" = no authentication

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        models = _var(env, "OLLAMA_MODELS")
        keep_alive_text = _var(env, "OLLAMA_KEEP_ALIVE")
        keep_alive = 300.0
        if keep_alive_text:
            try:
                keep_alive = parse_env_keep_alive(keep_alive_text)
            except ValueError as exc:
                log.warning("%s, using default 5m", exc)
        extra_origins = tuple(o.strip() for o in _var(env, "OLLAMA_ORIGINS").split(",") if o.strip())
        debug_text = _var(env, "OLLAMA_DEBUG").lower()
        debug = 2 if debug_text == "2" else int(debug_text in {"1", "true", "t", "yes", "on"})
        load_timeout_text = _var(env, "OLLAMA_LOAD_TIMEOUT")
        load_timeout = 300.0
        if load_timeout_text:
            try:
                load_timeout = parse_env_keep_alive(load_timeout_text)
            except ValueError as exc:
                log.warning("%s, using default 5m", exc)
        return cls(
            host=HostSetting.parse(_var(env, "OLLAMA_HOST")),
            models=Path(models).expanduser() if models else default_models_dir(),
            keep_alive=keep_alive,
            max_loaded_models=_int(env, "OLLAMA_MAX_LOADED_MODELS", 0),
            num_parallel=_int(env, "OLLAMA_NUM_PARALLEL", 0),
            max_queue=_int(env, "OLLAMA_MAX_QUEUE", 512),
            context_length=_int(env, "OLLAMA_CONTEXT_LENGTH", 0),
            origins=extra_origins + DEFAULT_ORIGINS,
            noprune=_bool(env, "OLLAMA_NOPRUNE"),
            debug=debug,
            flash_attention=_bool(env, "OLLAMA_FLASH_ATTENTION"),
            kv_cache_type=_var(env, "OLLAMA_KV_CACHE_TYPE") or "f16",
            load_timeout=load_timeout,
            device=_var(env, "OLLAMA_TORCH_DEVICE"),
            dtype=_var(env, "OLLAMA_TORCH_DTYPE"),
            prefill_chunk=max(0, _int(env, "OLLAMA_TORCH_PREFILL_CHUNK", 0)),
            compile=_bool(env, "OLLAMA_TORCH_COMPILE") if _var(env, "OLLAMA_TORCH_COMPILE") else None,
            api_key=_api_key(env),
        )

    @property
    def effective_max_loaded_models(self) -> int:
        return self.max_loaded_models if self.max_loaded_models > 0 else 3

    @property
    def effective_num_parallel(self) -> int:
        # Ollama defaults to 1 because llama.cpp splits num_ctx across slots; our KV cache grows per
        # request, so a batch of 8 costs nothing until it is used, and batching is where the speed is.
        return self.num_parallel if self.num_parallel > 0 else 8

    @property
    def compile_dir(self) -> Path | None:
        """Where compiled decode steps are kept between loads and restarts, or ``None`` when they are off."""
        return None if self.compile is False else self.models / "compiled"

    @property
    def default_num_ctx(self) -> int:
        return self.context_length if self.context_length > 0 else 4096
