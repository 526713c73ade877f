"""``make bench``: run every benchmark and write BENCHMARKS.md. Each section's numbers are ratios against
a reference measured in the same run. Run it on an otherwise idle machine: the 2 cores are shared, and
other processes change the absolute numbers (and, through OpenMP barriers, even the ratios).

Usage: ``python bench/run.py --out BENCHMARKS.md [--only gen,embed,...]``

With ``--only``, the other sections of the existing file are kept as they were (each names the day and the CPU
it was measured on in its footer), so one section can be re-measured without re-running all of them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import cpu_name  # noqa: E402

SECTIONS = [
    ("gen", "Generation (continuous batching vs plain Transformers)", "gen_bench.py"),
    ("structured", "Structured outputs through the server", "structured_bench.py"),
    ("schema", "JSON-schema engine: coverage, compile and mask times", "schema_suite.py"),
    ("embed", "Embeddings vs sentence-transformers", "embed_bench.py"),
    ("quant", "Quantization: memory, quality and speed", "quant_bench.py"),
    ("adapters", "LoRA adapters: mixed batches and first use", "adapter_bench.py"),
    ("llamacpp", "Decode beside llama.cpp (the engine Ollama runs)", "llamacpp_bench.py"),
    ("background", "Compiled decode by default: the first load on a CPU", "background_bench.py"),
    ("lmeval", "lm-evaluation-harness loglikelihood requests: the server vs lm-eval's hf backend", "lmeval_bench.py"),
    ("gguf", "GGUF export: size, quality and llama.cpp speed", "gguf_bench.py"),
]


FOOTER = re.compile(r"^<sub>(?P<script>[\w.]+\.py), [^<]*</sub>$", re.M)


def existing_sections(path: Path) -> dict[str, str]:
    """The sections of an earlier BENCHMARKS.md by script, each with its footer (a section ends at it)."""
    if not path.exists():
        return {}
    text = path.read_text()
    sections, start = {}, 0
    for m in FOOTER.finditer(text):
        body = text[start:m.end()]
        heading = body.find("\n## ")  # the section starts at its heading (the file's header comes before the first)
        sections[m.group("script")] = (body[heading + 1:] if heading >= 0 else body).strip()
        start = m.end()
    return sections


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--only", default="", help="comma-separated section keys: " + ",".join(k for k, _, _ in SECTIONS))
    args = ap.parse_args()
    only = {k for k in args.only.split(",") if k}
    import torch

    kept = existing_sections(args.out) if only else {}
    today, cpu = datetime.date.today().isoformat(), cpu_name()

    parts = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {today}: {cpu}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}. "
        "Every ratio compares against a reference measured in the same run on the same machine"
        + ("; sections not re-measured this time keep their earlier figures, dated and named in their footers." if only else "."),
        "",
    ]
    for key, title, script in SECTIONS:
        if only and key not in only:
            if script in kept:
                parts += [kept[script], ""]
            continue
        path = ROOT / "bench" / script
        if not path.exists():
            parts += [f"## {title}", "", f"_not run: {script} is missing_", ""]
            continue
        with tempfile.NamedTemporaryFile(suffix=".md") as out:
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, str(path), "--out", out.name], cwd=ROOT)
            elapsed = time.perf_counter() - started
            body = Path(out.name).read_text() if proc.returncode == 0 else f"_failed with exit code {proc.returncode}_\n"
        body = body.strip()
        heading = [] if body.startswith("## ") else [f"## {title}", ""]  # most scripts title their own section
        parts += [*heading, body, "", f"<sub>{script}, {elapsed:.0f} s, {today}, {cpu}</sub>", ""]
        print(f"{key}: done in {elapsed:.0f} s", file=sys.stderr)
    args.out.write_text("\n".join(parts))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
