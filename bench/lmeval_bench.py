"""lm-evaluation-harness loglikelihood requests per second: through the server (``local-completions`` over
``/v1/completions`` with ``echo`` and prompt logprobs) vs lm-eval's own ``hf`` backend in this process, on the
same weights (SmolLM2-135M, the store's Safetensors conversion of the demo GGUF, float32 on CPU).

The requests are those of ``ot_multiple_choice`` (tests/data/lm_eval: 40 questions x 4 choices = 160
loglikelihood requests), built once and timed through ``lm.loglikelihood``, which is everything lm-eval does
per request: tokenizing (the server's ``/tokenize`` for ``local-completions``, as lm-eval's default remote
tokenizer does), the HTTP requests, reading the logprobs. The server is started here with a store holding
SmolLM2 only. Rounds alternate between the configurations so that noise from other processes hits all alike;
the best round counts. Every configuration's loglikelihoods are checked against ``hf``'s.

Prints (and with ``--out PATH`` writes) a markdown section. About 5 min a round on 2 cores with other jobs
running (20 min for the default 2 rounds at a load average of 5-6): run it on an idle machine.
Usage: ``python bench/lmeval_bench.py [--out PATH] [--rounds N]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import ollama  # noqa: E402

from tests.e2e.conftest import derived_dir  # noqa: E402
from tests.server_process import start_server  # noqa: E402

TASK = "ot_multiple_choice"
TASKS = ROOT / "tests" / "data" / "lm_eval"
MODEL = "smollm2:135m"
HF_UNCACHED = "lm-eval `hf` backend in process (batch_size 8), `logits_cache=False`"
# (label, local-completions model_args beyond model/base_url, lm-eval batch_size)
SERVER_CONFIGS: list[tuple[str, dict[str, Any], int]] = [
    ("`local-completions`, one request at a time (lm-eval's default)", {}, 1),
    ("`local-completions`, 8 prompts per request", {}, 8),
    ("`local-completions`, 8 requests in flight", {"num_concurrent": 8}, 1),
]


def instances() -> list[Any]:
    from lm_eval.tasks import TaskManager, get_task_dict

    task = get_task_dict([TASK], TaskManager(include_path=str(TASKS)))[TASK]
    task.build_all_requests(limit=None, rank=0, world_size=1)
    return list(task.instances)


def loadavg() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def timed(run: Callable[[], list[tuple[float, bool]]]) -> tuple[float, list[tuple[float, bool]]]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from ollama_torch.demo import demo_gguf

    load_before = loadavg()
    requests = instances()
    with tempfile.TemporaryDirectory(prefix="lmeval-bench-") as tmp:
        server = start_server(Path(tmp) / "models", Path(tmp) / "server.log", env={"OLLAMA_TORCH_DEVICE": "cpu"})
        try:
            client = ollama.Client(host=server.url, timeout=600)
            gguf = demo_gguf()
            client.create(model=MODEL, files={gguf.name: client.create_blob(gguf)})
            base_url = f"{server.url}/v1/completions"
            lms: dict[str, Any] = {
                label: LocalCompletionsAPI(model=MODEL, base_url=base_url, batch_size=batch, **extra)
                for label, extra, batch in SERVER_CONFIGS
            }
            hf_label = "lm-eval `hf` backend in process (batch_size 8)"
            lms[hf_label] = HFLM(pretrained=str(derived_dir(server)), dtype="float32", device="cpu", batch_size=8)
            # hf's logits cache answers every choice whose continuation is one token from one forward of the
            # shared context (most of this task's); a server sees each request alone and runs one forward each
            lms[HF_UNCACHED] = HFLM(pretrained=str(derived_dir(server)), dtype="float32", device="cpu", batch_size=8,
                                    logits_cache=False)
            for lm in lms.values():  # warm up: the model loaded, the first forward passes paid
                lm.loglikelihood(requests[:8], disable_tqdm=True)
            seconds: dict[str, list[float]] = {label: [] for label in lms}
            results: dict[str, list[tuple[float, bool]]] = {}
            for _ in range(args.rounds):
                for label, lm in lms.items():
                    elapsed, results[label] = timed(lambda lm=lm: lm.loglikelihood(requests, disable_tqdm=True))
                    seconds[label].append(elapsed)
        finally:
            server.stop()
    load_after = loadavg()

    reference = results[hf_label]
    hf_rate = len(requests) / min(seconds[hf_label])
    lines = [
        f"## lm-evaluation-harness loglikelihood requests (`{TASK}`: {len(requests)} requests, SmolLM2-135M, float32 CPU, "
        f"{torch.get_num_threads()} threads, best of {args.rounds} rounds)",
        "",
        "| path | requests/s | vs `hf` in process | largest \\|Δ loglikelihood\\| vs `hf` | same greedy flags |",
        "|---|---:|---:|---:|---|",
    ]
    for label in lms:
        rate = len(requests) / min(seconds[label])
        worst = max(abs(a[0] - b[0]) for a, b in zip(results[label], reference, strict=True))
        same = all(a[1] == b[1] for a, b in zip(results[label], reference, strict=True))
        lines.append(f"| {label} | {rate:.1f} | {rate / hf_rate:.2f}x | {worst:.1e} | {'yes' if same else 'no'} |")
    lines += [
        "",
        "lm-eval's `hf` backend has a logits cache: the choices of a question share its context, and a choice whose "
        "continuation is a single token (most here) is read from the forward of another, so it runs about one "
        "forward per question instead of one per request. A server receives each request alone (and its answer "
        "carries every prompt token's logprob), so it runs one forward per request; the `logits_cache=False` row is "
        "`hf` doing the same work.",
        "",
        f"Load average (1/5/15 min) before: {load_before}; after: {load_after} (2 cores: above 2 the machine was not idle).",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
