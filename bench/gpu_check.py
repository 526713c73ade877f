"""``make gpu-check``: GPU serving proven in one run on a machine with CUDA and no network.

1. the ``gpu`` tests (tests/gpu: greedy vs Transformers on the device, seeded sampling alone vs in a batch,
   sampled requests, structured output, embeddings, every quantization scheme, unload frees memory);
2. random-weight models from real architecture configs (configs/gpu/llama-3.2-1b.json and
   llama-3.1-8b.json, vocabulary cut to SmolLM2's real tokenizer, extracted here by ``make gpu-prepare``
   into .gpu/tokenizer), built on the device in bf16 and created into a fresh store;
3. through the HTTP server: decode tok/s at 1, 8, 32 and 64 concurrent streams, time to first token, and the
   GPU memory in use at the peak; against plain Transformers ``generate`` (one stream, and a static batch of
   the same size) and Transformers' own continuous batching (``generate_batch``, paged attention) on the
   same card, same weights, in the same run;
4. the first model again with the compiled decode step (``OLLAMA_TORCH_COMPILE=1``: CUDA graphs per batch
   size bucket), its load (the compile) and the same figures;
5. writes the "GPU" section of BENCHMARKS.md (card and torch version named) and, where ``$OUT`` is set,
   gpu-check.md and the tests' log there.

On a machine without CUDA it says so and exits 0 without running anything, unless ``--dry-run-cpu`` asks for
the whole path on the CPU with tiny configs (to check the script itself before spending GPU time).
Usage: ``python bench/gpu_check.py [--dry-run-cpu] [--budget SECONDS] [--tokens N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

TOKENIZER = ROOT / ".gpu" / "tokenizer"  # SmolLM2's tokenizer files (make gpu-prepare)
GPU_CONFIGS = {"Llama-3.2-1B-class": "llama-3.2-1b.json", "Llama-3.1-8B-class": "llama-3.1-8b.json"}
DRY_CONFIGS = {"tiny-llama": "../tiny-llama.json"}
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


class Budget:
    """Seconds left of the run; steps that would not fit are skipped and said so."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


# -- models -------------------------------------------------------------------------------------------------
def build_model(config_file: Path, out: Path, device: str, dtype: torch.dtype, tokenizer_dir: Path | None) -> Path:
    """A random-weight model of ``config_file``'s architecture, made on ``device`` and saved to ``out``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.for_model(**json.loads(config_file.read_text()))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir is not None else None
    if tokenizer is not None:
        config.vocab_size = len(tokenizer)
        config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for p in model.parameters():  # small weights keep a random model's activations finite in bf16
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else torch.nn.init.ones_(p)
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    else:
        from tests.tiny_models import build_tiny_llama

        tiny = build_tiny_llama(out.parent / (out.name + "-tok"))
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            if (tiny / name).exists():
                (out / name).write_bytes((tiny / name).read_bytes())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


# -- through the server ----------------------------------------------------------------------------------------
def stream(url: str, model: str, tokens: int, seed: int) -> dict[str, float]:
    import httpx

    started, first, final = time.perf_counter(), None, {}
    body = {"model": model, "prompt": f"{PROMPT} ({seed})", "raw": True, "stream": True,
            "options": {"temperature": 0, "num_predict": tokens}}
    with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=900) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            chunk = json.loads(line)
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if first is None and chunk.get("response"):
                first = time.perf_counter() - started
            if chunk.get("done"):
                final = chunk
    return {"ttft": first or 0.0, "tokens": float(final.get("eval_count", 0)), "wall": time.perf_counter() - started}


def server_rates(url: str, model: str, streams: list[int], tokens: int, peak: PeakMemory) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    stream(url, model, 8, 0)  # load and warm up
    for n in streams:
        results: list[dict[str, float]] = [{} for _ in range(n)]

        def run(i: int) -> None:
            results[i] = stream(url, model, tokens, i)  # noqa: B023 - joined below

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        peak.reset()
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        rows[n] = {"aggregate": sum(r["tokens"] for r in results) / wall,
                   "ttft": statistics.median(r["ttft"] for r in results), "peak": peak.used()}
    return rows


class PeakMemory:
    """GPU memory in use on the device, sampled from outside the server process (mem_get_info)."""

    def __init__(self, device: str) -> None:
        self.device, self.lowest_free, self._stop = device, float("inf"), threading.Event()
        self.total = torch.cuda.mem_get_info()[1] if device == "cuda" else 0
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            if self.device == "cuda":
                self.lowest_free = min(self.lowest_free, torch.cuda.mem_get_info()[0])

    def reset(self) -> None:
        self.lowest_free = float("inf")

    def used(self) -> float:
        return (self.total - self.lowest_free) / 2**30 if self.device == "cuda" and self.lowest_free != float("inf") else 0.0

    def stop(self) -> None:
        self._stop.set()


# -- Transformers on its own ----------------------------------------------------------------------------------
def transformers_rates(model_dir: Path, device: str, dtype: torch.dtype, streams: list[int], tokens: int) -> dict[str, dict[int, float]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    prompts = [tok(f"{PROMPT} ({i})")["input_ids"] for i in range(max(streams))]
    out: dict[str, dict[int, float]] = {"generate": {}, "generate_batch": {}}
    forced = {"do_sample": False, "max_new_tokens": tokens, "min_new_tokens": tokens, "pad_token_id": tok.pad_token_id or 0}
    for n in streams:
        tok.padding_side = "left"
        batch = tok.pad({"input_ids": prompts[:n]}, return_tensors="pt").to(device)
        with torch.inference_mode():
            model.generate(**batch, **{**forced, "max_new_tokens": 4, "min_new_tokens": 4})  # warm up
            _sync(device)
            started = time.perf_counter()
            model.generate(**batch, **forced)
            _sync(device)
        out["generate"][n] = n * tokens / (time.perf_counter() - started)
        try:
            config = GenerationConfig(do_sample=False, max_new_tokens=tokens)
            model.generate_batch(inputs=prompts[:2], generation_config=GenerationConfig(do_sample=False, max_new_tokens=4))
            _sync(device)
            started = time.perf_counter()
            results = model.generate_batch(inputs=prompts[:n], generation_config=config)
            _sync(device)
            produced = sum(len(r.generated_tokens) for r in results.values())
            out["generate_batch"][n] = produced / (time.perf_counter() - started)
        except Exception as exc:  # an older or newer Transformers may lack or change it: said in the table
            print(f"generate_batch failed for {n} streams: {type(exc).__name__}: {exc}", file=sys.stderr)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# -- the run ------------------------------------------------------------------------------------------------
def run_tests(device: str, out_dir: Path | None) -> tuple[int, str]:
    env = {**os.environ, "OLLAMA_TORCH_GPU_TESTS_ON": device}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/gpu", "-x"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if out_dir is not None:
        (out_dir / "gpu-tests.log").write_text(log)
    summary = next((line for line in reversed(log.splitlines()) if " passed" in line or " failed" in line or "error" in line), "")
    return proc.returncode, summary.strip("= ")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dry-run-cpu", action="store_true", help="run the whole path on the CPU with tiny models")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.dry_run_cpu:
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing to run.")
        return 0
    device = "cpu" if args.dry_run_cpu else "cuda"
    dtype = torch.float32 if args.dry_run_cpu else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    budget = Budget(args.budget)
    out_env = os.environ.get("OUT")
    out_dir = Path(out_env) if out_env else None
    card = torch.cuda.get_device_name(0) if device == "cuda" else "CPU dry run"
    lines = [f"Card: {card}; torch {torch.__version__}; {str(dtype).removeprefix('torch.')}; "
             f"{args.tokens} new tokens per stream, greedy.", ""]
    failures = 0
    if not args.skip_tests:
        started = time.perf_counter()
        code, summary = run_tests(device, out_dir)
        failures += code != 0
        lines += [f"GPU tests (tests/gpu): {summary or 'no summary'} in {time.perf_counter() - started:.0f} s.", ""]
        print(lines[-2], flush=True)

    tokenizer = TOKENIZER if TOKENIZER.is_dir() and not args.dry_run_cpu else None
    if tokenizer is None and not args.dry_run_cpu:
        lines += ["_models skipped: .gpu/tokenizer is missing (run `make gpu-prepare` where the demo package is installed)._"]
    configs = DRY_CONFIGS if args.dry_run_cpu else GPU_CONFIGS
    streams = [1, 2, 4] if args.dry_run_cpu else [1, 8, 32, 64]
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    from tests.server_process import start_server

    env = {"OLLAMA_TORCH_DEVICE": device, "OLLAMA_NUM_PARALLEL": str(max(streams)), "OLLAMA_MAX_LOADED_MODELS": "1"}
    server = start_server(work / "models", work / "server.log", env=env, timeout=300)
    peak = PeakMemory(device)
    measured: list[tuple[str, Path, dict[str, dict[int, float]]]] = []
    try:
        for label, config_file in configs.items():
            if tokenizer is None and not args.dry_run_cpu:
                break
            if budget.left() < 120:
                lines += [f"_{label} skipped: {budget.left():.0f} s of the budget left._", ""]
                continue
            started = time.perf_counter()
            model_dir = build_model(ROOT / "configs" / "gpu" / config_file, work / label, device, dtype, tokenizer)
            name = _create(server.url, label.lower(), model_dir)
            built = time.perf_counter() - started
            ours = server_rates(server.url, name, streams, args.tokens, peak)
            httpx_unload(server.url, name)
            ref = transformers_rates(model_dir, device, dtype, streams, args.tokens) if budget.left() > 60 else {}
            lines += _table(label, built, ours, ref, streams)
            measured.append((label, model_dir, ref))
            print("\n".join(lines[-len(streams) - 6:]), flush=True)
    finally:
        server.stop()
    try:
        if measured and budget.left() > 180:
            lines += compiled_pass(work, env, measured[0], streams, args.tokens, peak)
            print("\n".join(lines[-len(streams) - 6:]), flush=True)
        elif measured:
            lines += [f"_Compiled decode skipped: {budget.left():.0f} s of the budget left._", ""]
    finally:
        peak.stop()
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.dry_run_cpu:
        _write_section(ROOT / "BENCHMARKS.md", text)
    if out_dir is not None:
        (out_dir / "gpu-check.md").write_text(text)
    return 1 if failures else 0


def compiled_pass(work: Path, env: dict[str, str], model: tuple[str, Path, dict[str, dict[int, float]]], streams: list[int],
                  tokens: int, peak: PeakMemory) -> list[str]:
    """The same model served with ``OLLAMA_TORCH_COMPILE=1`` (CUDA graphs per batch-size bucket): its load
    (the compile) and the same decode figures; fails loudly if the compiled step fell back to eager."""
    import httpx

    from tests.server_process import start_server

    label, model_dir, ref = model
    server = start_server(work / "models-compiled", work / "server-compiled.log", env={**env, "OLLAMA_TORCH_COMPILE": "1"}, timeout=300)
    try:
        name = _create(server.url, label.lower(), model_dir)
        started = time.perf_counter()
        httpx.post(f"{server.url}/api/generate", json={"model": name, "prompt": ""}, timeout=900).raise_for_status()
        load = time.perf_counter() - started
        ours = server_rates(server.url, name, streams, tokens, peak)
        if server.compiled_decode_fallback():
            raise RuntimeError(f"the compiled decode step did not run:\n{server.log()[-4000:]}")
    finally:
        server.stop()
    return _table(f"{label}, compiled decode (`OLLAMA_TORCH_COMPILE=1`)", load, ours, ref, streams, built_what="Loaded and compiled")


def _create(url: str, name: str, model_dir: Path) -> str:
    import ollama

    client = ollama.Client(host=url, timeout=900)
    files = {p.name: client.create_blob(p) for p in sorted(model_dir.iterdir()) if p.is_file()}
    client.create(model=name, files=files)
    return name


def httpx_unload(url: str, name: str) -> None:
    import httpx

    httpx.post(f"{url}/api/generate", json={"model": name, "prompt": "", "keep_alive": 0}, timeout=120)
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/api/ps", timeout=30).json()["models"] and time.monotonic() < deadline:
        time.sleep(0.2)


def _table(label: str, built: float, ours: dict[int, dict[str, float]], ref: dict[str, dict[int, float]], streams: list[int],
           built_what: str = "Built, created and loaded") -> list[str]:
    rows = [f"### {label}", "", f"{built_what} in {built:.0f} s.", "",
            "| streams | ollama-torch tok/s | TTFT | GPU memory in use | `generate` tok/s | ratio | `generate_batch` tok/s | ratio |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in streams:
        mine = ours[n]["aggregate"]
        gen = ref.get("generate", {}).get(n)
        batch = ref.get("generate_batch", {}).get(n)
        rows.append(f"| {n} | {mine:.1f} | {ours[n]['ttft'] * 1000:.0f} ms | {ours[n]['peak']:.1f} GiB | "
                    f"{_fmt(gen)} | {_ratio(mine, gen)} | {_fmt(batch)} | {_ratio(mine, batch)} |")
    return [*rows, ""]


def _fmt(value: float | None) -> str:
    return f"{value:.1f}" if value else "–"


def _ratio(mine: float, ref: float | None) -> str:
    return f"{mine / ref:.2f}x" if ref else "–"


def _write_section(path: Path, body: str) -> None:
    """Replace (or add) the "## GPU" section of BENCHMARKS.md."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head, sep, rest = text.partition("\n## GPU\n")
    tail = ""
    if sep:
        nxt = rest.find("\n## ")
        tail = rest[nxt:] if nxt >= 0 else ""
    path.write_text(head.rstrip() + "\n\n## GPU\n\n" + body.strip() + "\n" + tail)


if __name__ == "__main__":
    sys.exit(main())
