"""Helpers shared by the grammar tests and ``bench/schema_suite.py``: the real SmolLM2 tokenizer, feeding a
text to a grammar token by token through the mask, random walks under the mask, and the JSON-Schema-Test-Suite
runner whose counts ``test_schema_suite.py`` checks against a golden table."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ollama_torch.demo import DemoModelMissing, demo_gguf
from ollama_torch.engine.grammar.compiler import (
    COMPACT,
    SPACED,
    GrammarCompiler,
    GrammarState,
    JsonStyle,
    apply_grammar_masks,
    parse_format,
)
from ollama_torch.errors import BadRequest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path("/work/shared/data")
SUITE = DATA / "json-schema-test-suite" / "tests"
BENCH = DATA / "jsonschemabench-dev"
# SmolLM2's tokenizer has 49152 ids; a logits width padded past it checks that padded ids stay masked
PADDED_VOCAB = 49160
SMOLLM2_EOS = (2, 0)  # <|im_end|> (ChatML end of turn), <|endoftext|>

SERIALIZERS: dict[str, tuple[JsonStyle, Callable[[Any], str]]] = {
    "compact": (COMPACT, lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))),
    "spaced": (SPACED, lambda v: json.dumps(v, ensure_ascii=False)),
}


def smollm2_gguf_path() -> Path | None:
    try:
        return demo_gguf()
    except DemoModelMissing:
        return None


@functools.lru_cache(maxsize=2)
def load_tokenizer(gguf: Path) -> Any:
    """SmolLM2's tokenizer from its GGUF file (a few seconds; cached for the session)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@functools.lru_cache(maxsize=2)
def make_compiler(gguf: Path, vocab_size: int = PADDED_VOCAB) -> GrammarCompiler:
    return GrammarCompiler(load_tokenizer(gguf), vocab_size, SMOLLM2_EOS)


@functools.lru_cache(maxsize=2)
def closing_tokens(compiler: GrammarCompiler) -> np.ndarray:
    """Bool [V]: tokens whose text contains a closing character; random walks favour them to terminate."""
    out = np.zeros(compiler.vocab_size, dtype=np.bool_)
    for i in range(len(out)):
        raw = compiler.ll_tokenizer.decode_bytes([i]) if i < compiler.ll_tokenizer.vocab_size else b""
        out[i] = any(c in raw for c in b'"]}')
    return out


def mask_bits(state: GrammarState) -> np.ndarray:
    """Bool [V]: the next-token mask of one state, read through the engine's bitmask path."""
    compiler = state.compiled.compiler
    row = torch.zeros(compiler.mask_words, dtype=torch.int32)
    state.fill_mask(row)
    bits = np.unpackbits(row.numpy().view(np.uint8), bitorder="little")[: compiler.vocab_size]
    return bits.astype(np.bool_)


def feed_text(state: GrammarState, text: str) -> bool:
    """True if the grammar takes ``text`` token by token (each token checked against the mask) and may
    end right after it (an end-of-sequence id is allowed)."""
    compiler = state.compiled.compiler
    ids = compiler.ll_tokenizer.tokenize_str(text)
    for token in ids:
        if not mask_bits(state)[token]:
            return False
        state.consume(token)
    allowed = mask_bits(state)
    return all(allowed[e] for e in compiler.eos_token_ids)


@dataclass
class Walk:
    tokens: list[int] = field(default_factory=list)
    ended: bool = False  # an end-of-sequence id was sampled
    eos_violations: int = 0  # steps where "end-of-sequence allowed" disagreed with is_accepting()
    padded_allowed: int = 0  # steps where an id past the tokenizer was allowed


def random_walks(states: list[GrammarState], seed: int, max_steps: int = 300) -> list[Walk]:
    """Sample uniformly among allowed tokens (half the time among those with a closing character, and
    ending when allowed with probability 0.3) for a batch of states, masking a batch whose row 0 is an
    unconstrained request. The grammar alone decides what is valid."""
    compiler = states[0].compiled.compiler
    rng = np.random.default_rng(seed)
    closers = closing_tokens(compiler)
    n_tok = compiler.ll_tokenizer.vocab_size
    eos = np.array(compiler.eos_token_ids)
    walks = [Walk() for _ in states]
    for _ in range(max_steps):
        live = [i for i, w in enumerate(walks) if not w.ended]
        if not live:
            break
        logits = torch.zeros(len(live) + 1, compiler.vocab_size)  # [1 + R, V]
        apply_grammar_masks(logits, [(k + 1, states[i]) for k, i in enumerate(live)])
        if not torch.isfinite(logits[0]).all():
            raise AssertionError("the unconstrained row was masked")
        allowed_rows = torch.isfinite(logits[1:]).numpy()
        for k, i in enumerate(live):
            allowed, walk, state = allowed_rows[k], walks[i], states[i]
            walk.padded_allowed += int(allowed[n_tok:].any())
            eos_ok = bool(allowed[eos].all())
            walk.eos_violations += int(eos_ok != state.is_accepting() or bool(allowed[eos].any()) != eos_ok)
            if state.is_finished() and set(np.flatnonzero(allowed).tolist()) != set(eos.tolist()):
                walk.eos_violations += 1
            token = choose_token(allowed, closers, eos, rng)
            state.consume(token)
            if token in compiler.eos_token_ids:
                walk.ended = True
            else:
                walk.tokens.append(token)
    return walks


def choose_token(allowed: np.ndarray, closers: np.ndarray, eos: np.ndarray, rng: np.random.Generator) -> int:
    """A random allowed token: an end-of-sequence id with probability 0.3 when allowed, else half the time
    one with a closing character (so walks terminate), else any allowed token."""
    if allowed[eos].all() and rng.random() < 0.3:
        return int(rng.choice(eos))
    pool = np.flatnonzero(allowed & closers) if rng.random() < 0.5 else np.empty(0, dtype=np.int64)
    if len(pool) == 0:
        pool = np.flatnonzero(allowed)
    return int(rng.choice(pool))


@dataclass
class Counts:
    accepted: int = 0  # schemas compiled
    refused: int = 0  # schemas refused with a 400
    valid: int = 0  # valid instances of compiled schemas
    valid_accepted: int = 0
    invalid: int = 0  # invalid instances of compiled schemas
    invalid_rejected: int = 0

    def add(self, other: Counts) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)


@dataclass
class FileResult:
    counts: Counts
    invalid_accepted: list[tuple[str, str]]  # (case description, test description)
    valid_rejected: list[tuple[str, str]]
    refusals: list[tuple[str, str]]  # (case description, message)


def run_suite_file(compiler: GrammarCompiler, path: Path, style_name: str) -> FileResult:
    """Compile every schema of a JSON-Schema-Test-Suite file through ``parse_format`` + the compiler, and
    feed each instance of the accepted ones (serialised in ``style_name``) token by token."""
    style, dump = SERIALIZERS[style_name]
    result = FileResult(Counts(), [], [], [])
    for case in json.loads(path.read_text()):
        schema = case["schema"]
        try:
            # Ollama's format must be an object: a boolean schema is sent as its object equivalent
            spec = parse_format(schema if isinstance(schema, dict) else ({} if schema else {"not": {}}))
            assert spec is not None
            compiled = compiler.compile(spec, style)
        except BadRequest as exc:
            result.counts.refused += 1
            result.refusals.append((case["description"], str(exc)))
            continue
        result.counts.accepted += 1
        for test in case["tests"]:
            ok = feed_text(compiled.new_state(), dump(test["data"]))
            if test["valid"]:
                result.counts.valid += 1
                result.counts.valid_accepted += ok
                if not ok:
                    result.valid_rejected.append((case["description"], test["description"]))
            else:
                result.counts.invalid += 1
                result.counts.invalid_rejected += not ok
                if ok:
                    result.invalid_accepted.append((case["description"], test["description"]))
    return result
