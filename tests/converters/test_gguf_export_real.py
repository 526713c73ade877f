"""The GGUF export of the real models, in llama.cpp: SmolLM2 (the issue's quality targets) and all-MiniLM.

SmolLM2-135M-Instruct as our engine runs it (float32 Safetensors, the demo GGUF's conversion) is exported per
type; llama.cpp, teacher-forced on ``tests/data/perplexity-en.txt``, must pick the Hugging Face model's
next-token argmax at >= 97% of positions in F16 and >= 93% in Q8_0, with perplexity within 1% (F16), 3% (Q8_0)
and 25% (a 4-bit type); greedy generations agree with Transformers'. all-MiniLM's embeddings in llama.cpp equal
sentence-transformers'.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from converters.gguf_export import export_hf, load_source, parse_gguf_type
from tests import llama_cpp_support as lc

pytestmark = pytest.mark.slow

TEXT = Path(__file__).resolve().parents[1] / "data" / "perplexity-en.txt"
WINDOW = 1024


@pytest.fixture(scope="module")
def smollm2_dir(smollm2_hf_dir: Path) -> Path:
    return smollm2_hf_dir


@pytest.fixture(scope="module")
def text_ids(smollm2_dir: Path) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(str(smollm2_dir))(TEXT.read_text(encoding="utf-8")).input_ids)


def _windows(ids: list[int]) -> list[list[int]]:
    return [ids[s : s + WINDOW + 1] for s in range(0, len(ids) - 1, WINDOW)]


@pytest.fixture(scope="module")
def reference(smollm2_dir: Path, text_ids: list[int]) -> tuple[float, np.ndarray]:
    """The Hugging Face model's perplexity and argmax per position (float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    total, count, argmax = 0.0, 0, []
    with torch.inference_mode():
        for chunk in _windows(text_ids):
            logits = model(torch.tensor([chunk[:-1]])).logits[0].float().numpy()
            total += lc.nll(logits, chunk[1:])
            count += len(chunk) - 1
            argmax.append(logits.argmax(-1))
    return math.exp(total / count), np.concatenate(argmax)


@pytest.fixture(scope="module")
def exported(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    lc.llama_cpp()
    root = tmp_path_factory.mktemp("smollm2-gguf")
    source = load_source(smollm2_dir)
    files = {}
    for kind in ("F16", "Q8_0", "Q4_K_M"):
        files[kind] = root / f"{kind}.gguf"
        export_hf(smollm2_dir, files[kind], parse_gguf_type(kind), source=source)
    return files


@pytest.mark.parametrize(("kind", "min_agree", "max_ratio"), [("F16", 0.97, 1.01), ("Q8_0", 0.93, 1.03), ("Q4_K_M", 0.0, 1.25)])
def test_smollm2_in_llama_cpp_meets_the_targets(
    kind: str, min_agree: float, max_ratio: float, exported: dict[str, Path], text_ids: list[int], reference: tuple[float, np.ndarray]
) -> None:
    llm = lc.load(exported[kind], n_ctx=WINDOW)
    total, count, argmax = 0.0, 0, []
    for chunk in _windows(text_ids):
        logits = lc.logits(llm, chunk[:-1])
        total += lc.nll(logits, chunk[1:])
        count += len(chunk) - 1
        argmax.append(logits.argmax(-1))
    ref_ppl, ref_argmax = reference
    agree = float((np.concatenate(argmax) == ref_argmax).mean())
    ratio = math.exp(total / count) / ref_ppl
    print(f"{kind}: argmax agreement {agree:.4f}, perplexity ratio {ratio:.4f}")
    assert agree >= min_agree
    assert ratio <= max_ratio


def test_smollm2_greedy_generation_in_llama_cpp(exported: dict[str, Path], smollm2_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    prompt = list(tokenizer.apply_chat_template([{"role": "user", "content": "Why is the sky blue?"}], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    with torch.inference_mode():
        want = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)[0, len(prompt) :].tolist()
    got: list[int] = []
    for token in lc.load(exported["F16"]).generate(prompt, temp=0.0, top_k=1, reset=True):
        got.append(int(token))
        if len(got) == 16:
            break
    assert got == want, (tokenizer.decode(got), tokenizer.decode(want))
    text = tokenizer.decode(got)
    assert "sky" in text.lower() or "blue" in text.lower() or "light" in text.lower(), text


@pytest.mark.parametrize("kind", ["F32", "F16"])
def test_minilm_embeds_in_llama_cpp_as_sentence_transformers(kind: str, minilm_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "minilm.gguf"
    export_hf(minilm_dir, out, parse_gguf_type(kind))
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    llm = lc.load(out, embedding=True)
    for text in ("Why is the sky blue?", "The cat sleeps on the warm mat, dreaming of 42 fish.", "hello"):
        assert lc.tokenize(llm, text) == list(model.tokenizer(text).input_ids)
        got = np.array(llm.embed(text))
        ref = model.encode([text], normalize_embeddings=True)[0]
        assert float(got @ ref / np.linalg.norm(got)) > 0.999
