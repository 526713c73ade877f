"""Generation benchmark: the real server over HTTP vs plain Transformers, same weights, same run.

Model: SmolLM2-135M-Instruct (the demo model), float32 on CPU, greedy decoding. Measured:
- reference: plain ``model.generate`` single stream, and a static padded batch of 8 in one ``generate``;
- server: decode tokens/s of 1 stream, aggregate tokens/s at 1, 4 and 8 concurrent streams (each stream
  generates the same number of tokens; a stream's rate counts its decode time), time to first token at 1
  and 8 streams;
- prefix reuse: prefill time of a second chat turn that extends the first, vs the same number of tokens
  with nothing cached.
Ratios are against the reference measured in this run. Run on an otherwise idle machine.
Usage: ``python bench/gen_bench.py [--out PATH] [--tokens N]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from bench.common import publish  # noqa: E402
from tests.server_process import start_server  # noqa: E402

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a refrigerator works.",
    "Describe the water cycle in detail.",
    "What are the main causes of the French Revolution?",
    "Give me a recipe for pancakes and explain each step.",
    "Why do leaves change color in autumn?",
    "Explain the difference between a virus and a bacterium.",
    "Tell me about the history of the printing press.",
]


def gguf_path() -> Path:
    from ollama_torch.demo import demo_gguf

    return demo_gguf()


GREEDY = {"temperature": 0}


def stream_generate(url: str, prompt: str, tokens: int, options: dict[str, Any] = GREEDY,
                    model: str = "smollm2:135m") -> dict[str, float]:
    """One streamed request; returns time to first token, decode rate and counts."""
    started = time.perf_counter()
    first = None
    final: dict[str, Any] = {}
    body = {"model": model, "prompt": prompt, "stream": True, "options": {**options, "num_predict": tokens}}
    with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=600) as r:
        for line in r.iter_lines():
            chunk = json.loads(line)
            if first is None and chunk.get("response"):
                first = time.perf_counter() - started
            if chunk.get("done"):
                final = chunk
    wall = time.perf_counter() - started
    return {
        "ttft": first or wall,
        "eval_count": final["eval_count"],
        "eval_seconds": final["eval_duration"] / 1e9,
        "wall": wall,
    }


def concurrent(url: str, n: int, tokens: int, sampled: bool = False,
               model: str = "smollm2:135m") -> tuple[float, list[dict[str, float]]]:
    """``n`` streams at once: aggregate tokens/s and each stream's figures. ``sampled`` uses Ollama's default
    sampling (temperature 0.8, top_k 40, top_p 0.9) with a seed per stream instead of greedy decoding."""
    results: list[dict[str, float]] = [{} for _ in range(n)]

    def run(i: int) -> None:
        options = {"seed": i} if sampled else GREEDY
        results[i] = stream_generate(url, PROMPTS[i % len(PROMPTS)], tokens, options, model)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    total = sum(r["eval_count"] for r in results)
    return total / wall, results


def reference(model_dir: Path, tokens: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def ids(prompt: str) -> Any:
        out: Any = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt")
        return out["input_ids"] if hasattr(out, "keys") else out

    with torch.inference_mode():
        model.generate(ids(PROMPTS[0]), max_new_tokens=8, do_sample=False)  # warm-up
        rates = []
        for prompt in PROMPTS[:3]:
            x = ids(prompt)
            t = time.perf_counter()
            out = model.generate(x, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
            rates.append((out.shape[1] - x.shape[1]) / (time.perf_counter() - t))
        tok.padding_side = "left"
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False) for p in PROMPTS]
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        t = time.perf_counter()
        out = model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        static8 = len(PROMPTS) * tokens / (time.perf_counter() - t)
    del model
    return {"single": statistics.median(rates), "static8": static8}


def prefix_reuse(url: str) -> dict[str, float]:
    system = "You are a meticulous assistant who explains things step by step. " * 12
    first = [{"role": "system", "content": system}, {"role": "user", "content": "Explain photosynthesis."}]
    c = httpx.Client(base_url=url, timeout=600)
    r1 = c.post("/api/chat", json={"model": "smollm2:135m", "messages": first, "stream": False, "options": {"temperature": 0, "num_predict": 32}}).json()
    turn2 = [*first, {"role": "assistant", "content": r1["message"]["content"]}, {"role": "user", "content": "Now summarize that in one sentence."}]
    r2 = c.post("/api/chat", json={"model": "smollm2:135m", "messages": turn2, "stream": False, "options": {"temperature": 0, "num_predict": 4}}).json()
    cold = [dict(m) for m in turn2]
    cold[0]["content"] = "X" + system[1:]  # same length, nothing in common from the first token on
    r3 = c.post("/api/chat", json={"model": "smollm2:135m", "messages": cold, "stream": False, "options": {"temperature": 0, "num_predict": 4}}).json()
    return {
        "reuse_tokens": r2.get("prompt_eval_count", 0),
        "reuse_seconds": r2.get("prompt_eval_duration", 0) / 1e9,
        "cold_tokens": r3.get("prompt_eval_count", 0),
        "cold_seconds": r3.get("prompt_eval_duration", 0) / 1e9,
    }


def _streams_around(url: str, streams: int, during: Callable[[float], float]) -> tuple[list[list[float]], float, float]:
    """``streams`` greedy streams decoding; 6 s in, ``during(start)`` runs and returns when its window ends.
    Returns each stream's token times and the window (as offsets from the streams' start)."""
    stamps: list[list[float]] = [[] for _ in range(streams)]
    stop = threading.Event()

    def decode(i: int) -> None:
        body = {"model": "smollm2:135m", "prompt": PROMPTS[i % len(PROMPTS)], "stream": True,
                "options": {"temperature": 0, "num_predict": 100000, "num_ctx": 4096}}
        with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=900) as r:
            for line in r.iter_lines():
                if json.loads(line).get("response"):
                    stamps[i].append(time.perf_counter())
                if stop.is_set():
                    return

    threads = [threading.Thread(target=decode, args=(i,)) for i in range(streams)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(6.0)  # all decoding, steady
    sent = time.perf_counter()
    answered = during(sent)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    return [[t - began for t in s] for s in stamps], sent - began, answered - began


def _rate(stamps: list[list[float]], lo: float, hi: float) -> float:
    """Tokens/s per stream in ``[lo, hi)``, each stream over the time it was decoding: a greedy stream may end at
    its end token inside the window, and counting it as a stream that slowed down would charge the long
    prompt for streams that finished."""
    counted = [(sum(1 for t in s if lo <= t < hi), min(hi, s[-1]) - lo) for s in stamps if s and s[-1] > lo + 1.0]
    return sum(n for n, _ in counted) / sum(active for _, active in counted)


def long_prompt_under_load(url: str, streams: int = 7, prompt_tokens: int = 2000) -> dict[str, float]:
    """A ``prompt_tokens``-token prompt arriving while ``streams`` streams decode: its time to first token,
    and the streams' rate while it is read, against the same streams over the same seconds of a run without
    it (the control: streams slow down on their own as their contexts grow) and against their rate in the 4 s
    before it."""
    long_prompt = " ".join(f"Entry {i}: the keeper logged the weather, the tide and the ships." for i in range(prompt_tokens // 16))
    ttft = 0.0

    def read_long_prompt(sent: float) -> float:
        nonlocal ttft
        ttft = stream_generate(url, long_prompt, 1)["ttft"]
        return sent + ttft

    def wait_as_long(sent: float) -> float:
        time.sleep(ttft)
        return sent + ttft

    stamps, sent, answered = _streams_around(url, streams, read_long_prompt)
    control, c_sent, _ = _streams_around(url, streams, wait_as_long)
    shift = c_sent - sent  # the control's window starts as many seconds into its streams
    return {"ttft": ttft, "before": _rate(stamps, sent - 4.0, sent), "during": _rate(stamps, sent, answered),
            "control": _rate(control, sent + shift, answered + shift),
            "streams": sum(1 for s in stamps if s and s[-1] > sent + 1.0),
            "ended": streams - sum(1 for s in stamps if s and s[-1] >= answered)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gen-bench-"))
    server = start_server(tmp / "models", tmp / "server.log", timeout=120)
    try:
        import ollama

        client = ollama.Client(host=server.url, timeout=600)
        client.create(model="smollm2:135m", files={gguf_path().name: client.create_blob(gguf_path())})
        digest = json.loads((server.models / "manifests/registry.ollama.ai/library/smollm2/135m").read_text())["layers"][0]["digest"]
        model_dir = server.models / "ollama-torch" / "derived" / digest.replace(":", "-")
        stream_generate(server.url, PROMPTS[0], 16)  # load + warm up
        rows = {}
        for n in (1, 4, 8):
            agg, results = concurrent(server.url, n, args.tokens)
            rows[n] = {
                "aggregate": agg,
                "per_stream": statistics.median(r["eval_count"] / r["eval_seconds"] for r in results),
                "ttft": statistics.median(r["ttft"] for r in results),
            }
        sampled_agg, sampled = concurrent(server.url, 8, args.tokens, sampled=True)
        greedy_again, _ = concurrent(server.url, 8, args.tokens)  # the greedy reference again, right beside it
        reuse = prefix_reuse(server.url)
        loaded = long_prompt_under_load(server.url)
    finally:
        server.stop()
    ref = reference(model_dir, args.tokens)
    single = rows[1]["per_stream"]
    lines = [
        f"Model: SmolLM2-135M-Instruct, float32, CPU ({os.cpu_count()} cores), greedy, {args.tokens} new tokens per stream.",
        "",
        "| measure | ollama-torch (HTTP) | plain Transformers | ratio |",
        "|---|---:|---:|---:|",
        f"| single-stream decode tok/s | {single:.1f} | {ref['single']:.1f} (`generate`) | {single / ref['single']:.2f}x |",
        f"| aggregate tok/s, 8 streams | {rows[8]['aggregate']:.1f} | {ref['static8']:.1f} (static batch of 8) | {rows[8]['aggregate'] / ref['static8']:.2f}x |",
        "",
        "| concurrent streams | aggregate tok/s | vs 1 stream | per-stream decode tok/s | time to first token |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, row in rows.items():
        lines.append(f"| {n} | {row['aggregate']:.1f} | {row['aggregate'] / rows[1]['aggregate']:.2f}x | {row['per_stream']:.1f} | {row['ttft'] * 1000:.0f} ms |")
    greedy8 = (rows[8]["aggregate"] + greedy_again) / 2
    lines += [
        "",
        "Sampling is batched on the logits' device (one pass for the whole batch, one host sync per step):",
        "",
        "| 8 streams | aggregate tok/s | tokens generated | vs greedy |",
        "|---|---:|---:|---:|",
        f"| greedy (mean of two runs) | {greedy8:.1f} | {8 * args.tokens} | 1.00x |",
        f"| sampled: temperature 0.8, top_k 40, top_p 0.9, a seed per stream | {sampled_agg:.1f} | "
        f"{sum(int(r['eval_count']) for r in sampled)} | {sampled_agg / greedy8:.2f}x |",
    ]
    lines += [
        "",
        "| second chat turn | prompt tokens evaluated | prefill time |",
        "|---|---:|---:|",
        f"| extends the first turn (prefix reused) | {reuse['reuse_tokens']} | {reuse['reuse_seconds'] * 1000:.0f} ms |",
        f"| same length, nothing cached | {reuse['cold_tokens']} | {reuse['cold_seconds'] * 1000:.0f} ms |",
    ]
    lines += [
        "",
        "A 2,000-token prompt arriving while 7 streams decode (chunked prefill: chunks of 256 tokens, a fifth of the time). "
        "Rates are per stream, each over the time it was decoding (greedy streams may reach their end token "
        f"meanwhile: {loaded['ended']} of 7 did here):",
        "",
        "| its time to first token | a stream while it is read, tok/s | the same seconds without it (control) | drop | "
        "the 4 s before it | drop |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {loaded['ttft']:.1f} s | {loaded['during']:.1f} | {loaded['control']:.1f} | {1 - loaded['during'] / loaded['control']:.0%} | "
        f"{loaded['before']:.1f} | {1 - loaded['during'] / loaded['before']:.0%} |",
        "",
        "The control runs the same 7 streams again without the long prompt and measures them over the same seconds "
        "after their start: streams slow down on their own as their contexts grow, which the drop from the 4 s before "
        "counts against the long prompt.",
    ]
    shutil.rmtree(tmp, ignore_errors=True)  # the run's models (hundreds of MB); a failed run keeps them, with its logs
    return publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    sys.exit(main())
