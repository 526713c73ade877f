"""Start the real ``ollama-torch serve`` process on a free loopback port (for end-to-end tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    models: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def compiled_decode_fallback(self) -> str:
        """For a server that compiles (``OLLAMA_TORCH_COMPILE`` 1 or unset): the first log line saying its compiled decode
        step fell back to eager (a model whose compile failed, a batch size that did not compile, a compiled
        step that failed while serving, a saved step that disagreed), or that nothing compiled; "" when the
        compiled step ran as it should."""
        log = self.log()
        if "decode step compiled in" not in log:
            return "no decode step was compiled"
        return next((line for line in log.splitlines() if "eager" in line or "step failed" in line), "")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(models: Path, log_path: Path, env: dict[str, str] | None = None, timeout: float = 60) -> ServerProcess:
    port = free_port()
    full_env = {
        **os.environ,
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(models),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "OLLAMA_TORCH_COMPILE": "0",  # a test or benchmark that compiles says so (unset, a CPU compiles in the background)
        **(env or {}),
    }
    log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "ollama_torch", "serve"], env=full_env, stdout=log_file, stderr=subprocess.STDOUT
    )
    server = ServerProcess(proc, port, models, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(server.url + "/", timeout=2) as resp:
            if resp.status == 200:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not start in {timeout}s:\n{server.log()}")


@contextlib.contextmanager
def running_server(models: Path, log_path: Path, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    server = start_server(models, log_path, env)
    try:
        yield server
    finally:
        server.stop()
