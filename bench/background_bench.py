"""The default compiled decode on a CPU (``OLLAMA_TORCH_COMPILE`` unset): what a user meets at a model's first load.

Model: SmolLM2-135M-Instruct (the demo model), float32 on CPU, greedy, one stream of back-to-back requests.
Two servers on fresh stores, one after the other:
- ``OLLAMA_TORCH_COMPILE=0``: the uncompiled reference, measured in the same run;
- unset: the first request's load, the decode rate while a child process compiles the steps in the background
  (every request meanwhile), how long until the compiled step serves, the rate after it, and a reload's.
Usage: ``python bench/background_bench.py [--out PATH] [--tokens N]``. About 7 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from bench.common import publish  # noqa: E402
from ollama_torch.demo import demo_gguf  # noqa: E402
from tests.server_process import ServerProcess, start_server  # noqa: E402

PROMPT = "Write a story about a lighthouse keeper."
COMPILED = "decode step compiled in"


def request(url: str, tokens: int) -> tuple[float, float]:
    """One greedy request: its decode rate (tok/s) and load duration (s)."""
    body = {"model": "smol", "prompt": PROMPT, "stream": False, "options": {"temperature": 0, "num_predict": tokens}}
    r = httpx.post(f"{url}/api/generate", json=body, timeout=900).json()
    return r["eval_count"] / (r["eval_duration"] / 1e9), r.get("load_duration", 0) / 1e9


def serve(tmp: Path, compile_env: str) -> ServerProcess:
    import ollama

    tmp.mkdir(parents=True, exist_ok=True)
    server = start_server(tmp / "models", tmp / "server.log", env={"OLLAMA_TORCH_COMPILE": compile_env}, timeout=120)
    client = ollama.Client(host=server.url, timeout=900)
    gguf = demo_gguf()
    client.create(model="smol", files={gguf.name: client.create_blob(gguf)})
    return server


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="background-bench-"))
    server = serve(tmp / "eager", "0")
    try:
        request(server.url, args.tokens)
        eager = [request(server.url, args.tokens)[0] for _ in range(5)]
    finally:
        server.stop()
    server = serve(tmp / "default", "")
    try:
        started = time.perf_counter()
        first, first_load = request(server.url, args.tokens)
        during: list[float] = []
        while COMPILED not in server.log():
            during.append(request(server.url, args.tokens)[0])
            if time.perf_counter() - started > 1800:
                raise RuntimeError(f"not compiled after 30 minutes:\n{server.log()[-4000:]}")
        until = time.perf_counter() - started
        if server.compiled_decode_fallback():
            raise RuntimeError(f"the compiled step fell back to eager: {server.compiled_decode_fallback()}")
        after = [request(server.url, args.tokens)[0] for _ in range(5)]
        httpx.post(f"{server.url}/api/generate", json={"model": "smol", "prompt": "", "keep_alive": 0}, timeout=120)
        before = len(server.log())
        reload_started = time.perf_counter()
        _, reload_load = request(server.url, args.tokens)
        while COMPILED not in server.log()[before:] and time.perf_counter() - reload_started < 300:
            time.sleep(0.1)
        reload_until = time.perf_counter() - reload_started
    finally:
        server.stop()
    shutil.rmtree(tmp, ignore_errors=True)  # the run's models (hundreds of MB); a failed run keeps them, with its logs
    median = statistics.median
    lines = [
        "## Compiled decode by default: the first load on a CPU",
        "",
        f"SmolLM2-135M-Instruct (the demo model), float32, `OLLAMA_NUM_PARALLEL` 8 (steps for 1, 2 and 4 rows), "
        f"one stream of back-to-back greedy requests of {args.tokens} tokens through HTTP, each server on a fresh "
        "store. `OLLAMA_TORCH_COMPILE` unset: the model serves uncompiled at once while a child process compiles "
        "the steps in the background, then switches to them.",
        "",
        "| | `OLLAMA_TORCH_COMPILE=0` | unset |",
        "|---|---:|---:|",
        f"| first request: load | | {first_load:.1f} s |",
        f"| first request: decode | | {first:.1f} tok/s |",
        f"| while compiling ({len(during)} requests): decode, median (min) | | {median(during):.1f} ({min(during):.1f}) tok/s |"
        if during else "| while compiling | | no request (compiled before the second) |",
        f"| compiled step serving after | | {until:.0f} s |",
        f"| decode, median of 5 | {median(eager):.1f} tok/s | {median(after):.1f} tok/s ({median(after) / median(eager):.2f}x) |",
        f"| after an unload: load, then compiled step serving after | | {reload_load:.1f} s, {reload_until:.1f} s |",
    ]
    return publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    raise SystemExit(main())
