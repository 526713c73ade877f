"""LoRA adapters benchmark: what mixed-adapter batches cost, and an adapter's first use.

Model: SmolLM2-135M-Instruct (the demo model) as the base, float32 on CPU, greedy; four PEFT LoRA adapters
(rank 8 on q/k/v/o, trained here for a step each). Measured through the real server:
- 8 concurrent streams spread over the 4 adapters (2 each) vs 8 streams on the base alone, aggregate tok/s;
- time to first token of a request whose adapter is not loaded yet vs the same request once it is.
Usage: ``python bench/adapter_bench.py [--out PATH] [--tokens N]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from bench.common import publish  # noqa: E402
from bench.gen_bench import PROMPTS  # noqa: E402
from ollama_torch.demo import demo_gguf  # noqa: E402
from tests.lora_support import train_lora  # noqa: E402
from tests.server_process import start_server  # noqa: E402

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def concurrent(url: str, models: list[str], tokens: int) -> float:
    counts = [0] * len(models)

    def run(i: int) -> None:
        body = {"model": models[i], "prompt": PROMPTS[i % len(PROMPTS)], "stream": False,
                "options": {"temperature": 0, "num_predict": tokens}}
        counts[i] = httpx.post(f"{url}/api/generate", json=body, timeout=900).json()["eval_count"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(models))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="adapter-bench-"))
    server = start_server(tmp / "models", tmp / "server.log", timeout=120)
    try:
        import ollama

        client = ollama.Client(host=server.url, timeout=900)
        gguf = demo_gguf()
        client.create(model="smol", files={gguf.name: client.create_blob(gguf)})
        client.generate(model="smol", prompt="")
        digest = json.loads((server.models / "manifests/registry.ollama.ai/library/smol/latest").read_text())["layers"][0]["digest"]
        base = server.models / "ollama-torch" / "derived" / digest.replace(":", "-")
        names = []
        for i in range(5):
            adapter = train_lora(base, tmp / f"lora{i}", targets=TARGETS, rank=8, alpha=16, seed=i, steps=1)
            files = {f"{adapter.name}/{p.name}": client.create_blob(p) for p in sorted(adapter.iterdir()) if p.name.startswith("adapter_")}
            r = httpx.post(f"{server.url}/api/create", json={"model": f"smol-lora{i}", "from": "smol", "adapters": files, "stream": False}, timeout=900)
            r.raise_for_status()
            names.append(f"smol-lora{i}")
        concurrent(server.url, ["smol"] * 2, 8)  # warm up
    except Exception:
        server.stop()
        raise
    try:
        cold = _ttft(server.url, names[4], "Hello there, how are you today?")
        warm = _ttft(server.url, names[4], "Good morning, what is new with you?")  # no shared prefix to reuse
        base_only = [concurrent(server.url, ["smol"] * 8, args.tokens) for _ in range(2)]
        mixed = [concurrent(server.url, [names[i % 4] for i in range(8)], args.tokens) for _ in range(2)]
    finally:
        server.stop()
    base_rate, mixed_rate = sum(base_only) / 2, sum(mixed) / 2
    lines = [
        f"Base: SmolLM2-135M-Instruct, float32, CPU ({os.cpu_count()} cores), greedy, {args.tokens} new tokens per stream; "
        "adapters: PEFT LoRA rank 8 on q/k/v/o, trained here.",
        "",
        "| 8 concurrent streams | aggregate tok/s | vs base |",
        "|---|---:|---:|",
        f"| all on the base | {base_rate:.1f} | 1.00x |",
        f"| over 4 adapters (2 each), one batch | {mixed_rate:.1f} | {mixed_rate / base_rate:.2f}x |",
        "",
        "| adapter first use | time to first token |",
        "|---|---:|",
        f"| not loaded yet (read and attached on the worker thread) | {cold * 1000:.0f} ms |",
        f"| loaded | {warm * 1000:.0f} ms |",
    ]
    shutil.rmtree(tmp, ignore_errors=True)  # the run's models (hundreds of MB); a failed run keeps them, with its logs
    return publish("## LoRA adapters: mixed batches and first use\n\n" + "\n".join(lines) + "\n", args.out)


def _ttft(url: str, model: str, prompt: str) -> float:
    started = time.perf_counter()
    body = {"model": model, "prompt": prompt, "stream": True, "options": {"temperature": 0, "num_predict": 2}}
    with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=900) as r:
        for line in r.iter_lines():
            if json.loads(line).get("response"):
                return time.perf_counter() - started
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
