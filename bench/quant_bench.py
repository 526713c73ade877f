"""Quantization benchmark: quality, memory and decode speed of each ``quantize`` scheme against float32.

On SmolLM2-135M-Instruct in float32 Safetensors (the demo GGUF's conversion, or ``--source DIR``), every
distinct scheme of ``converters/quantize_schemes.py`` is quantized with the create-time code path, loaded
the way the engine loads it (dtype from the stored scheme, ``resident_bytes`` for the size /api/ps
reports), and measured for:

* perplexity on ``tests/data/perplexity-en.txt`` (about 3,050 tokens, windows of 1,024), beside float32's;
* resident size and its ratio to float32 (targets: 8-bit <= 0.35x, 4-bit <= 0.25x);
* decode tokens/s of plain greedy ``generate`` (prefill excluded), and a greedy sample for one prompt.

Prints (and with ``--out PATH`` writes) a markdown report. Usage:
``python bench/quant_bench.py [--out PATH] [--source DIR] [--tokens N] [--schemes Q8_0,Q4_K_M,...]``
(a few minutes on 2 idle cores; numbers taken while other processes use the cores are not comparable).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from bench.common import smollm2_f32  # noqa: E402
from converters.int4 import register  # noqa: E402
from converters.quantize import quantize_directory  # noqa: E402
from converters.quantize_schemes import SCHEMES, QuantScheme  # noqa: E402
from ollama_torch.engine.quantized import prepare_for_cpu, quiet_bitsandbytes, resident_bytes  # noqa: E402

TEXT = ROOT / "tests" / "data" / "perplexity-en.txt"
PROMPT = "Why is the sky blue?"
DEFAULT_SCHEMES = ("Q8_0", "Q4_K_M", "Q4_K_S", "NF4", "FP4")
LIMITS = {8: 1.03, 4: 1.15}  # perplexity ratio targets
SIZE_LIMITS = {8: 0.35, 4: 0.25}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Result:
    label: str
    names: str
    bits: int
    ppl: float
    size: int
    tok_s: float
    quantize_s: float
    sample: str


def aliases(scheme: QuantScheme) -> str:
    """Every accepted name that maps to the same scheme (``Q8_0 = INT8``)."""
    same = [n for n, s in SCHEMES.items() if (s.method, s.dtype, s.blocksize, s.double_quant) == (scheme.method, scheme.dtype, scheme.blocksize, scheme.double_quant)]
    return " = ".join(same)



@torch.inference_mode()
def perplexity(model: Any, ids: torch.Tensor, window: int = 1024) -> float:
    nll, count = 0.0, 0
    for start in range(0, ids.shape[1] - 1, window):
        chunk = ids[:, start : start + window + 1].to(model.device)  # chunk: [1, T+1]
        logprobs = torch.log_softmax(model(chunk[:, :-1]).logits.float(), -1)  # [1, T, V]
        nll -= logprobs.gather(-1, chunk[:, 1:].unsqueeze(-1)).sum().item()
        count += chunk.shape[1] - 1
    return math.exp(nll / count)


class _Clock:
    """A ``generate`` streamer that timestamps every token it is given (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@torch.inference_mode()
def decode_speed(model: Any, tokenizer: Any, tokens: int) -> tuple[float, str]:
    """Decode tokens/s of greedy ``generate``: tokens after the first over the time since the first."""
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    greedy = {"do_sample": False, "pad_token_id": tokenizer.eos_token_id}
    model.generate(**inputs, max_new_tokens=2, **greedy)  # warm-up
    clock = _Clock()
    out = model.generate(**inputs, max_new_tokens=tokens + 1, min_new_tokens=tokens + 1, streamer=clock, **greedy)
    times = clock.times[1:]  # times[0]: the first generated token (prefill)
    sample = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return (len(times) - 1) / max(times[-1] - times[0], 1e-9), sample


def measure(label: str, names: str, bits: int, model_dir: Path, dtype: torch.dtype, ids: torch.Tensor, tokens: int, quantize_s: float) -> Result:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, device_map=device, local_files_only=True).eval()
    if device == "cpu":
        prepare_for_cpu(model)  # as the server's loader does
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    ppl = perplexity(model, ids)
    tok_s, sample = decode_speed(model, tokenizer, tokens)
    result = Result(label, names, bits, ppl, resident_bytes(model), tok_s, quantize_s, sample)
    print(f"{label}: ppl {ppl:.3f}, {result.size / 2**20:.1f} MiB, {tok_s:.1f} tok/s", flush=True)
    del model
    return result


def report(results: list[Result], tokens: int, load: tuple[float, float]) -> str:
    base = results[0]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    import bitsandbytes
    import transformers

    lines = [
        "## Quantization (`quantize` at create time)",
        "",
        "SmolLM2-135M-Instruct (float32 Safetensors from the demo GGUF, whose Q4_1 weights already sit on a group-32 "
        "4-bit grid: the group-32 int4 scheme behind `Q4_K_*` reproduces them almost exactly, which flatters it on this "
        f"model, while the blocks of 64 of NF4/FP4 cut across that grid), {device}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, bitsandbytes {bitsandbytes.__version__}. Perplexity on "
        f"`tests/data/perplexity-en.txt`; decode = greedy `generate`, {tokens} tokens, prefill excluded; "
        f"size = parameters + buffers + quantization state of the loaded model (/api/ps `size`). "
        f"Load average at start / end: {load[0]:.2f} / {load[1]:.2f}.",
        "",
        "| scheme | names | perplexity | vs f32 | target | resident MiB | vs f32 | target | decode tok/s | quantize s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio, size_ratio = r.ppl / base.ppl, r.size / base.size
        ppl_target = f"<= {LIMITS[r.bits]:.2f}x {'ok' if ratio <= LIMITS[r.bits] else 'MISSED'}" if r.bits in LIMITS else ""
        size_target = f"<= {SIZE_LIMITS[r.bits]:.2f}x {'ok' if size_ratio <= SIZE_LIMITS[r.bits] else 'MISSED'}" if r.bits in SIZE_LIMITS else ""
        lines.append(
            f"| {r.label} | {r.names} | {r.ppl:.3f} | {ratio:.3f}x | {ppl_target} | {r.size / 2**20:.1f} | "
            f"{size_ratio:.3f}x | {size_target} | {r.tok_s:.1f} | {r.quantize_s:.1f} |"
        )
    lines += ["", f"Greedy samples for {PROMPT!r}:", ""]
    for r in results:
        text = " ".join(r.sample.split())
        lines.append(f"- **{r.label}**: {text}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    parser.add_argument("--source", type=Path, help="float32 Hugging Face directory (default: SmolLM2 from its GGUF)")
    parser.add_argument("--tokens", type=int, default=64, help="decode tokens per speed measurement")
    parser.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES), help="comma-separated quantize names")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    quiet_bitsandbytes()
    register()  # int4 checkpoints load through Transformers once it knows the method, as in the engine
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="quant-bench-") as tmp:
        work = Path(tmp)
        source = args.source or smollm2_f32(work)
        ids = AutoTokenizer.from_pretrained(str(source), local_files_only=True)(TEXT.read_text(encoding="utf-8"), return_tensors="pt").input_ids
        results = [measure("F32", "F32 (source)", 32, source, torch.float32, ids, args.tokens, 0.0)]
        for name in args.schemes.split(","):
            scheme = SCHEMES[name.strip().upper()]
            out = work / scheme.name
            shutil.copytree(source, out, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json", "config.json"))
            t0 = time.perf_counter()
            quantize_directory(source, out, scheme)
            elapsed = time.perf_counter() - t0
            results.append(measure(scheme.name, aliases(scheme), scheme.bits, out, _DTYPES[scheme.dtype], ids, args.tokens, elapsed))
            shutil.rmtree(out, ignore_errors=True)
    text = report(results, args.tokens, (load_start, os.getloadavg()[0]))
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
