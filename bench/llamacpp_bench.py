"""Decode speed beside llama.cpp, the engine Ollama runs, on the same SmolLM2 weights in the same run.

The weights: SmolLM2-135M-Instruct from the demo GGUF, converted once to float32 Safetensors (what our engine
serves). For each pair below, llama.cpp (llama-cpp-python, built by ``make bench`` with the Makefile's
portable flags) loads our GGUF export of those weights in that type, and our server serves the same model
created with the matching ``quantize``:

* f32: llama.cpp F32 vs ours float32;
* 8-bit: llama.cpp Q8_0 vs our ``q8_0``;
* 4-bit: llama.cpp Q4_0 (what Ollama's library ships most) vs our ``q4_K_M`` (our 4-bit CPU kernel).

Measured: greedy decode tokens/s of one stream after a chat prompt (prefill excluded; llama.cpp in process,
ours through HTTP), each the median over three prompts, and the aggregate over 8 concurrent streams.
llama.cpp's 8 streams: llama-server (its HTTP server with parallel slots) is not built by llama-cpp-python, so
``llama_cpp_streams`` runs llama-server's decode loop on llama.cpp's C API in process (one sequence per
stream, one ``llama_decode`` a step). llama.cpp runs just before and just after each of our runs, and ratios
are against the mean of the two: a shared VM's speed drifts over minutes (up to 3x within the hour here), so a
reference measured once, minutes away from ours, could make a ratio by itself. (Ours compiled against ours
eager, minutes apart, is not corrected so.) Without llama-cpp-python the section says so.

Then the same models again with the compiled decode step (``OLLAMA_TORCH_COMPILE=1``, engine/compiled.py): a
server with an empty compile cache loads each (the load compiles: its ``load_duration``), and a restarted server
loads each again, with the steps the first saved (checked in its log), and measures one stream (llama.cpp again
around it) and 4 (on a CPU batches of 1, 2 and 4 rows run compiled, and 8 where the packing is oneDNN's). The restarted server is what every load after
the first runs: a step loaded from its file, not the one just compiled in the process (the two differed: float32
at 4 rows ran 113 tok/s just compiled and 50 loaded, before the float32 kernel).

Usage: ``python bench/llamacpp_bench.py [--out PATH] [--tokens N] [--no-compile]``. About 13-16 minutes on 2 idle
cores, 4 without the compiled pass.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from gen_bench import PROMPTS, concurrent, gguf_path, stream_generate  # noqa: E402

from bench.common import publish  # noqa: E402
from tests.server_process import start_server  # noqa: E402

PAIRS = [("f32", "F32", ""), ("8-bit", "Q8_0", "q8_0"), ("4-bit", "Q4_0", "q4_K_M")]  # (label, llama.cpp, ours)


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


_SILENCE: list[Any] = []  # the log callback llama.cpp calls, kept alive as long as the library may call it


def _quiet(llama_cpp: Any) -> None:
    if not _SILENCE:
        _SILENCE.append(llama_cpp.llama_log_callback(lambda level, text, data: None))
        llama_cpp.llama_log_set(_SILENCE[0], None)


def llama_cpp_decode(path: Path, chat_ids: list[list[int]], tokens: int, threads: int) -> float:
    """Median greedy decode tokens/s over the prompts (the first token, which pays the prefill, excluded)."""
    import llama_cpp

    _quiet(llama_cpp)
    llm = llama_cpp.Llama(str(path), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    rates = []
    for round_ in range(len(chat_ids) + 1):
        prompt = chat_ids[max(round_ - 1, 0)]  # round 0 warms up
        times = []
        for _ in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            times.append(time.perf_counter())
            if len(times) > tokens:
                break
        if round_:
            rates.append((len(times) - 2) / max(times[-1] - times[1], 1e-9))
    del llm
    return statistics.median(rates)


def llama_cpp_streams(path: Path, prompts: list[list[int]], tokens: int, threads: int) -> float:
    """Aggregate greedy tokens/s of ``len(prompts)`` streams decoded together, as llama-server's parallel slots
    decode them: one context with a sequence per stream, the prompts prefilled in one batch, then one batch a
    step with each running stream's last token; a stream leaves at its end-of-generation token or after
    ``tokens``. Timed from the prefill to the last token, as our figure is timed from the requests to the
    last answer. llama-server is not built by llama-cpp-python; this is its decode loop on llama.cpp's own
    C API (``llama_decode`` with one sequence id per stream), without HTTP."""
    import ctypes

    import llama_cpp as lc
    import numpy as np

    _quiet(lc)
    lc.llama_backend_init()
    model = lc.llama_model_load_from_file(str(path).encode(), lc.llama_model_default_params())
    params = lc.llama_context_default_params()
    streams = len(prompts)
    params.n_seq_max, params.n_ctx = streams, streams * (max(map(len, prompts)) + tokens + 16)
    params.n_batch = params.n_ubatch = max(params.n_ctx, 512)
    params.n_threads = params.n_threads_batch = threads
    ctx = lc.llama_init_from_model(model, params)
    vocab = lc.llama_model_get_vocab(model)
    width = lc.llama_vocab_n_tokens(vocab)
    batch = lc.llama_batch_init(params.n_batch, 0, streams)

    def decode(entries: list[tuple[int, int, int, bool]]) -> None:  # (token, position, stream, wants logits)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq
        batch.n_tokens = len(entries)
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def argmax(i: int) -> int:
        row = ctypes.cast(lc.llama_get_logits_ith(ctx, i), ctypes.POINTER(ctypes.c_float))
        return int(np.ctypeslib.as_array(row, shape=(width,)).argmax())

    try:
        started = time.perf_counter()
        decode([(t, j, s, j == len(p) - 1) for s, p in enumerate(prompts) for j, t in enumerate(p)])
        ends = list(np.cumsum([len(p) for p in prompts]) - 1)
        last = {s: argmax(int(ends[s])) for s in range(streams)}
        made = {s: 1 for s in range(streams)}
        while True:
            running = [s for s in range(streams) if made[s] < tokens and not lc.llama_vocab_is_eog(vocab, last[s])]
            if not running:
                break
            decode([(last[s], len(prompts[s]) + made[s] - 1, s, True) for s in running])
            for i, s in enumerate(running):
                last[s] = argmax(i)
                made[s] += 1
        wall = time.perf_counter() - started
    finally:
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
        lc.llama_model_free(model)
    return sum(made.values()) / wall


def ours_decode(url: str, model: str, tokens: int) -> tuple[float, float, float]:
    """Our median single-stream decode tokens/s over three prompts, and the aggregates of 4 and 8 streams."""
    stream_generate(url, PROMPTS[0], 16, model=model)  # load + warm up
    single = statistics.median(
        r["eval_count"] / r["eval_seconds"] for r in (stream_generate(url, p, tokens, model=model) for p in PROMPTS[:3])
    )
    aggregate4, _ = concurrent(url, 4, tokens, model=model)
    aggregate, _ = concurrent(url, 8, tokens, model=model)
    return single, aggregate4, aggregate


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled decode step's pass")
    args = ap.parse_args()
    threads = os.cpu_count() or 2
    title = "## Decode beside llama.cpp (the engine Ollama runs)\n\n"
    if not llama_cpp_available():
        return publish(title + "_Not measured: llama-cpp-python is not installed (`make bench` builds it)._\n", args.out)
    import ollama
    from transformers import AutoTokenizer

    from converters.gguf_export import export_hf, load_source, parse_gguf_type

    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="llamacpp-bench-"))
    server = start_server(tmp / "models", tmp / "server.log", timeout=120)
    rows: list[dict[str, Any]] = []
    try:
        client = ollama.Client(host=server.url, timeout=1200)
        demo = gguf_path()
        client.create(model="smollm2:135m", files={demo.name: client.create_blob(demo)})
        stream_generate(server.url, PROMPTS[0], 1)  # the Safetensors conversion exists once the model has loaded
        derived = next((server.models / "ollama-torch" / "derived").iterdir())
        tok = AutoTokenizer.from_pretrained(str(derived))
        chat_ids = [
            list(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"])
            for p in PROMPTS
        ]
        # ours: the float32 Safetensors as a model of its own (quantize needs float weights; the demo is a Q4_1 GGUF)
        files = {p.name: client.create_blob(p) for p in sorted(derived.iterdir()) if p.is_file()}
        client.create(model="smollm2-f32", files=files)
        client.generate(model="smollm2:135m", prompt="", keep_alive=0)
        source = load_source(derived)
        eight = [chat_ids[i % len(chat_ids)] for i in range(8)]
        for label, gguf_name, quantize in PAIRS:
            path = tmp / f"{gguf_name}.gguf"
            export_hf(derived, path, parse_gguf_type(gguf_name), source=source)
            model = "smollm2-f32"
            if quantize:
                model = f"smollm2-f32:{quantize.lower()}"
                client.create(model=model, from_="smollm2-f32", quantize=quantize)
            theirs = [llama_cpp_decode(path, chat_ids[:3], args.tokens, threads)]
            theirs8 = [llama_cpp_streams(path, eight, args.tokens, threads)]
            single, aggregate4, aggregate = ours_decode(server.url, model, args.tokens)
            client.generate(model=model, prompt="", keep_alive=0)  # unload: one model resident at a time
            theirs.append(llama_cpp_decode(path, chat_ids[:3], args.tokens, threads))
            theirs8.append(llama_cpp_streams(path, eight, args.tokens, threads))
            rows.append({"label": label, "gguf": gguf_name, "path": path, "ours": quantize or "float32", "theirs": theirs,
                         "single": single, "aggregate4": aggregate4, "aggregate": aggregate, "theirs8": theirs8})
            print(f"{label}: llama.cpp {gguf_name} {_around(theirs)} (1) / {_around(theirs8)} (8) tok/s, "
                  f"ours {single:.1f} (1) / {aggregate:.1f} (8)", flush=True)
    finally:
        server.stop()
    if not args.no_compile:
        compiled_pass(tmp / "models", tmp, rows, args.tokens, chat_ids[:3], eight, threads)
    lines = [
        title.rstrip(),
        "",
        f"SmolLM2-135M-Instruct, {args.tokens} greedy tokens after a chat prompt, {threads} threads, prefill excluded; "
        f"llama.cpp {llama_cpp_version()} (llama-cpp-python, in process) on our GGUF export of the same weights, "
        f"ours through HTTP. Load average at start / end: {load_start:.2f} / {os.getloadavg()[0]:.2f}.",
        "",
        "| weights | llama.cpp, 1 stream | ollama-torch, 1 stream | ratio | llama.cpp, 8 streams | ollama-torch, 8 streams | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['label']}: {r['gguf']} vs `{r['ours']}` | {_around(r['theirs'])} tok/s | {r['single']:.1f} tok/s | "
                     f"{r['single'] / statistics.mean(r['theirs']):.2f}x | {_around(r['theirs8'])} tok/s | {r['aggregate']:.1f} tok/s | "
                     f"{r['aggregate'] / statistics.mean(r['theirs8']):.2f}x |")
    if not args.no_compile:
        lines += [
            "",
            "With the compiled decode step (`OLLAMA_TORCH_COMPILE=1`; on a CPU it runs batches of 1, 2 and 4 rows, and 8 "
            "where the packing is oneDNN's (AMD), so elsewhere 8 streams run eager steps of 8 rows; the 8 streams of the "
            "first table are eager; 4 streams compiled are against our 4 eager streams, measured beside the 8; 8 streams "
            "compiled against llama.cpp's 8 streams run just before and after them). "
            "First load: a server with an empty compile cache (the load compiles its steps, one per row count, and saves them); after "
            "a restart: a new server process loading the same model, whose load loads the step the first saved in "
            "`<models>/compiled` (target: under 10 s). The rates are the restarted server's, which every load after "
            "the first runs: steps loaded from their files.",
            "",
            "| weights | llama.cpp, 1 stream | ollama-torch compiled, 1 stream | ratio | vs eager | compiled, 4 streams | vs eager "
            "| llama.cpp, 8 streams | compiled, 8 streams | ratio | first load | load after a restart |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(f"| {r['label']}: {r['gguf']} vs `{r['ours']}` | {_around(r['theirs_compiled'])} tok/s | {r['compiled']:.1f} tok/s | "
                         f"{r['compiled'] / statistics.mean(r['theirs_compiled']):.2f}x | {r['compiled'] / r['single']:.2f}x | {r['compiled4']:.1f} tok/s | "
                         f"{r['compiled4'] / r['aggregate4']:.2f}x | {_around(r['theirs8_compiled'])} tok/s | {r['compiled8']:.1f} tok/s | "
                         f"{r['compiled8'] / statistics.mean(r['theirs8_compiled']):.2f}x | {r['cold_load']:.1f} s | "
                         f"{r['warm_load']:.1f} s |")
    lines += [
        "",
        "Each llama.cpp figure is the mean of two runs, one just before ours and one just after (in the second table, "
        "around the compiled step's run, minutes later), with the two in brackets; each ratio is against that mean. On a "
        "shared VM the machine's speed drifts over minutes (the same llama.cpp run has given 20 and 39 tok/s within "
        "the hour), and a reference measured once, minutes away, can make a ratio of it.",
        "",
        "8 streams: the aggregate of 8 greedy streams (the prompts in turn) from the requests to the last token. "
        "llama.cpp's is llama-server's decode loop (one sequence per stream, one `llama_decode` a step) run on its C API "
        "in process, since llama-cpp-python does not build llama-server itself: no HTTP, so it is, if anything, favoured. "
        "llama-cpp-python is built with the Makefile's portable flags (AVX2, FMA, F16C; no AVX-512 or AMX: a native "
        "build crashed with SIGILL on quantized tensors on our VM), which may understate llama.cpp on a CPU with "
        "AVX-512; torch uses what the CPU has.",
    ]
    shutil.rmtree(tmp, ignore_errors=True)  # the run's models (hundreds of MB); a failed run keeps them, with its logs
    return publish("\n".join(lines) + "\n", args.out)


def compiled_pass(models: Path, tmp: Path, rows: list[dict[str, Any]], tokens: int, chat_ids: list[list[int]],
                  eight: list[list[int]], threads: int) -> None:
    """Fill each row's ``compiled`` (one stream, tok/s), ``theirs_compiled`` (llama.cpp's one stream just before
    and after it), ``compiled4``, ``compiled8`` and ``theirs8_compiled`` (llama.cpp's 8 streams just before and
    after our 8), ``cold_load`` and ``warm_load`` (seconds)."""
    import ollama

    env = {"OLLAMA_TORCH_COMPILE": "1"}
    for attempt in ("cold", "warm"):
        server = start_server(models, tmp / f"server-compiled-{attempt}.log", env=env, timeout=120)
        try:
            client = ollama.Client(host=server.url, timeout=1200)
            for r in rows:
                model = "smollm2-f32" if r["ours"] == "float32" else f"smollm2-f32:{r['ours'].lower()}"
                logged, started = len(server.log()), time.perf_counter()
                client.generate(model=model, prompt="", keep_alive="10m")  # loads it (Ollama reports no load_duration here)
                r[f"{attempt}_load"] = time.perf_counter() - started
                for line in server.log()[logged:].splitlines():  # what the load spent its time on, in the run's output
                    if " level=WARN" in line or "loaded" in line or "decode step" in line or "building" in line:
                        print("   ", line[:240], flush=True)
                if attempt == "warm":
                    stream_generate(server.url, PROMPTS[0], 16, model=model)  # warm up
                    r["theirs_compiled"] = [llama_cpp_decode(r["path"], chat_ids, tokens, threads)]
                    r["compiled"] = statistics.median(
                        x["eval_count"] / x["eval_seconds"]
                        for x in (stream_generate(server.url, p, tokens, model=model) for p in PROMPTS[:3])
                    )
                    r["theirs_compiled"].append(llama_cpp_decode(r["path"], chat_ids, tokens, threads))
                    r["compiled4"], _ = concurrent(server.url, 4, tokens, model=model)  # rows of 4, 2 and 1 as they finish
                    r["theirs8_compiled"] = [llama_cpp_streams(r["path"], eight, tokens, threads)]
                    r["compiled8"], _ = concurrent(server.url, 8, tokens, model=model)
                    r["theirs8_compiled"].append(llama_cpp_streams(r["path"], eight, tokens, threads))
                client.generate(model=model, prompt="", keep_alive=0)
                print(f"{r['label']} compiled: {attempt} load {r[f'{attempt}_load']:.1f} s"
                      + (f", 1 stream {r['compiled']:.1f} tok/s, 4 streams {r['compiled4']:.1f}, 8 streams {r['compiled8']:.1f} "
                         f"(llama.cpp {_around(r['theirs8_compiled'])})" if attempt == "warm" else ""),
                      flush=True)
            log = server.log()
            if server.compiled_decode_fallback():
                raise RuntimeError(f"the compiled decode step did not run:\n{log}")
            if attempt == "warm" and "rows: loaded" not in log:
                raise RuntimeError(f"the restarted server did not load the saved decode step:\n{log}")
        finally:
            server.stop()


def _around(rates: list[float]) -> str:
    """llama.cpp's rates before and after ours: their mean, then both."""
    return f"{statistics.mean(rates):.1f} ({' / '.join(f'{x:.1f}' for x in rates)})"


def llama_cpp_version() -> str:
    import llama_cpp

    return str(getattr(llama_cpp, "__version__", "?"))


if __name__ == "__main__":
    sys.exit(main())
