"""The embedding head: pooling math, the sentence-transformers pipeline read from a model directory, the
Embedder's batching, and the HTTP layer's vector shaping.

Pooling is checked three ways: by hand on tensors small enough to read, against sentence-transformers' own
``Pooling`` module on random tensors with left and right padding, and end to end against
``SentenceTransformer.encode`` on tiny random models whose ``modules.json`` we vary.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from ollama_torch.engine.embedder import Embedder, is_decoder, plan_chunks
from ollama_torch.engine.loader import LoadedModel
from ollama_torch.engine.pooling import (
    POOLING_MODES,
    default_pooling,
    load_dense,
    parse_pooling_config,
    pool,
    read_pipeline,
)
from ollama_torch.errors import BadRequest, InternalError
from ollama_torch.server.routes_embed import normalize, parse_input, shape_vector
from tests.tiny_fixtures import tiny_bert_dir, tiny_llama_bos_dir, tiny_llama_dir  # noqa: F401

# hidden: [B=2, T=3, H=2]; row 0 has 2 real tokens (right padding), row 1 has 3.
HIDDEN = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]], [[1.0, -1.0], [2.0, 0.0], [3.0, 4.0]]])
RIGHT = torch.tensor([[1, 1, 0], [1, 1, 1]])


def left_padded(hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same rows with their padding moved to the left."""
    rows, masks = [], []
    for h, m in zip(hidden, mask, strict=True):
        n = int(m.sum())
        rows.append(torch.cat([h[n:], h[:n]]))
        masks.append(torch.cat([m[n:], m[:n]]))
    return torch.stack(rows), torch.stack(masks)


# -- pooling by hand ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("mean", [[2.0, 4.0], [2.0, 1.0]]),
        ("mean_sqrt_len_tokens", [[4 / math.sqrt(2), 8 / math.sqrt(2)], [6 / math.sqrt(3), 3 / math.sqrt(3)]]),
        ("cls", [[1.0, 2.0], [1.0, -1.0]]),
        ("max", [[3.0, 6.0], [3.0, 4.0]]),
        ("lasttoken", [[3.0, 6.0], [3.0, 4.0]]),
        ("weightedmean", [[(1 + 2 * 3) / 3, (2 + 2 * 6) / 3], [(1 + 4 + 9) / 6, (-1 + 0 + 12) / 6]]),
    ],
)
def test_pooling_by_hand_with_right_and_left_padding(mode: str, expected: list[list[float]]) -> None:
    want = torch.tensor(expected)
    assert torch.allclose(pool(HIDDEN, RIGHT, [mode]), want)
    assert torch.allclose(pool(*left_padded(HIDDEN, RIGHT), [mode]), want)


def test_padding_never_leaks() -> None:
    """Pad positions hold huge values, or NaN (a left-padded decoder's pad rows can); no mode may see them."""
    with_nan = HIDDEN.clone()
    with_nan[0, 2] = float("nan")
    for mode in POOLING_MODES:
        assert pool(HIDDEN, RIGHT, [mode])[0].abs().max() < 50, mode
        assert torch.equal(pool(with_nan, RIGHT, [mode]), pool(HIDDEN, RIGHT, [mode])), mode
        assert torch.isfinite(pool(*left_padded(with_nan, RIGHT), [mode])).all(), mode


def test_modes_concatenate_in_order_and_pool_in_float32() -> None:
    out = pool(HIDDEN.to(torch.bfloat16), RIGHT, ["cls", "mean"])
    assert out.dtype == torch.float32 and out.shape == (2, 4)
    assert torch.allclose(out[:, :2], pool(HIDDEN, RIGHT, ["cls"]))
    with pytest.raises(InternalError, match="unknown pooling mode 'median'"):
        pool(HIDDEN, RIGHT, ["median"])


# -- pooling against sentence-transformers' Pooling module ---------------------------------------------
@pytest.mark.parametrize("mode", [*POOLING_MODES, ("cls", "mean", "max")])
@pytest.mark.parametrize("side", ["right", "left"])
def test_pooling_matches_sentence_transformers(mode: str | tuple[str, ...], side: str) -> None:
    st_pooling = pytest.importorskip("sentence_transformers.sentence_transformer.modules.pooling")
    gen = torch.Generator().manual_seed(0)
    lengths = [7, 1, 4, 7, 2]
    hidden = torch.randn(len(lengths), 7, 16, generator=gen)
    mask = torch.tensor([[1] * n + [0] * (7 - n) for n in lengths])
    if side == "left":
        mask = mask.flip(1)
    module = st_pooling.Pooling(embedding_dimension=16, pooling_mode=mode)
    want = module({"token_embeddings": hidden.clone(), "attention_mask": mask})["sentence_embedding"]
    modes = (mode,) if isinstance(mode, str) else mode
    assert torch.allclose(pool(hidden, mask, modes), want, atol=1e-6)


# -- reading the pipeline ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "modes", "include_prompt"),
    [
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, ("mean",), True),
        ({"pooling_mode_cls_token": True}, ("cls",), True),
        ({"pooling_mode_lasttoken": True, "include_prompt": False}, ("lasttoken",), False),
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True, "pooling_mode_max_tokens": True}, ("cls", "max", "mean"), True),
        ({"pooling_mode_weightedmean_tokens": True}, ("weightedmean",), True),
        ({"pooling_mode_mean_sqrt_len_tokens": True}, ("mean_sqrt_len_tokens",), True),
        ({"word_embedding_dimension": 384}, ("mean",), True),  # nothing set: sentence-transformers' mean
        ({}, ("mean",), True),
        ({"embedding_dimension": 8, "pooling_mode": "max"}, ("max",), True),  # sentence-transformers >= 5.4
        ({"pooling_mode": ["cls", "mean"], "pooling_mode_max_tokens": True}, ("cls", "mean"), True),
    ],
)
def test_parse_pooling_config(config: dict[str, Any], modes: tuple[str, ...], include_prompt: bool) -> None:
    assert parse_pooling_config(config) == (modes, include_prompt)


def test_parse_pooling_config_rejects_unknown_modes() -> None:
    with pytest.raises(InternalError, match="unknown pooling mode 'median'"):
        parse_pooling_config({"pooling_mode": "median"})


def write_modules(directory: Path, *modules: tuple[str, str]) -> None:
    entries = [{"idx": i, "name": str(i), "path": path, "type": kind} for i, (kind, path) in enumerate(modules)]
    (directory / "modules.json").write_text(json.dumps(entries))


def test_read_pipeline_variants(tmp_path: Path) -> None:
    # No sentence-transformers files: the architecture's convention.
    plain = read_pipeline(tmp_path, decoder=False)
    assert (plain.pooling, plain.normalize, plain.max_seq_length) == (("mean",), False, None)
    assert read_pipeline(tmp_path, decoder=True).pooling == ("lasttoken",) == default_pooling(True)

    # all-MiniLM's layout, with the old and the new module type names.
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 77, "do_lower_case": True}))
    write_modules(tmp_path, ("sentence_transformers.models.Transformer", ""), ("sentence_transformers.models.Pooling", "1_Pooling"),
                  ("sentence_transformers.models.Normalize", "2_Normalize"))
    p = read_pipeline(tmp_path, decoder=False)
    assert (p.pooling, p.normalize, p.max_seq_length, p.do_lower_case, p.source) == (("cls",), True, 77, True, "modules.json")
    write_modules(tmp_path, ("sentence_transformers.base.modules.transformer.Transformer", ""),
                  ("sentence_transformers.sentence_transformer.modules.pooling.Pooling", "1_Pooling"),
                  ("sentence_transformers.models.Dropout", "2_Dropout"))
    p = read_pipeline(tmp_path, decoder=True)
    assert (p.pooling, p.normalize) == (("cls",), False)

    # A Pooling module without a config is sentence-transformers' default (mean).
    write_modules(tmp_path, ("sentence_transformers.models.Transformer", ""), ("sentence_transformers.models.Pooling", "9_Missing"))
    assert read_pipeline(tmp_path, decoder=True).pooling == ("mean",)


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        ([("sentence_transformers.models.Transformer", "")], "has no Pooling module"),
        ([("sentence_transformers.models.Transformer", ""), ("sentence_transformers.models.LSTM", "1_LSTM")], "unsupported sentence-transformers module"),
        ([("sentence_transformers.models.Transformer", ""), ("sentence_transformers.models.Dense", "1_Dense")], "Dense module before Pooling"),
    ],
)
def test_read_pipeline_refuses_what_it_cannot_run(tmp_path: Path, modules: list[tuple[str, str]], message: str) -> None:
    write_modules(tmp_path, *modules)
    with pytest.raises(InternalError, match=message):
        read_pipeline(tmp_path, decoder=False)


def test_read_pipeline_unreadable_json(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text("{not json")
    with pytest.raises(InternalError, match=r"unreadable modules\.json"):
        read_pipeline(tmp_path, decoder=False)


@pytest.mark.parametrize("activation", ["Tanh", "Identity", "GELU"])
@pytest.mark.parametrize("use_residual", [False, True])
def test_dense_matches_sentence_transformers(tmp_path: Path, activation: str, use_residual: bool) -> None:
    dense_mod = pytest.importorskip("sentence_transformers.base.modules.dense")
    torch.manual_seed(0)
    st_dense = dense_mod.Dense(8, 5, activation_function=getattr(torch.nn, activation)(), use_residual=use_residual)
    st_dense.save(str(tmp_path))
    x = torch.randn(3, 8)
    want = st_dense({"sentence_embedding": x.clone()})["sentence_embedding"]
    assert torch.allclose(load_dense(tmp_path)(x), want, atol=1e-6)


def test_dense_refuses_untrusted_activation(tmp_path: Path) -> None:
    dense_mod = pytest.importorskip("sentence_transformers.base.modules.dense")
    dense_mod.Dense(4, 2).save(str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "activation_function": "os.system"}))
    with pytest.raises(InternalError, match="unsupported Dense activation"):
        load_dense(tmp_path)


# -- chunking ----------------------------------------------------------------------------------------
def test_plan_chunks_covers_everything_longest_first() -> None:
    lengths = [5, 300, 7, 6, 290, 8, 5, 5, 12]
    chunks = plan_chunks(lengths, max_batch_size=4, max_batch_tokens=100_000)
    flat = [i for c in chunks for i in c]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert all(len(c) <= 4 for c in chunks)
    # The two long sequences are not padded together with the short ones.
    assert {frozenset(c) for c in chunks} >= {frozenset({1, 4})}


def test_plan_chunks_token_budget_and_edge_cases() -> None:
    assert plan_chunks([], max_batch_size=8, max_batch_tokens=100) == []
    assert plan_chunks([500], max_batch_size=8, max_batch_tokens=100) == [[0]]  # alone, even over budget
    chunks = plan_chunks([60, 60, 60, 60], max_batch_size=8, max_batch_tokens=130)
    assert all(len(c) * 60 <= 130 for c in chunks) and sum(map(len, chunks)) == 4
    assert plan_chunks([10] * 10, max_batch_size=64, max_batch_tokens=10_000) == [list(range(10))]


def test_is_decoder() -> None:
    from transformers import BertConfig, LlamaConfig, T5Config

    assert not is_decoder(BertConfig()) and is_decoder(LlamaConfig()) and not is_decoder(T5Config())


# -- the Embedder against SentenceTransformer on tiny models --------------------------------------------
def make_embedder(directory: Path, *, kind: str = "embedding", **kwargs: Any) -> Embedder:
    """An Embedder over ``directory`` loaded as the loader loads it: ``AutoModel`` for an embedding model,
    ``AutoModelForCausalLM`` (``kind="causal"``) for a completion model."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    auto: Any = AutoModel if kind == "embedding" else AutoModelForCausalLM
    model = auto.from_pretrained(str(directory), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    loaded = LoadedModel(
        name=directory.name, model=model, tokenizer=tokenizer, kind=kind, device=torch.device("cpu"),
        dtype=torch.float32, eos_ids=frozenset(), pad_token_id=int(tokenizer.pad_token_id or 0), vocab_size=len(tokenizer),
        context_length=int(model.config.max_position_embeddings), batchable=False, size_bytes=0, model_dir=directory,
    )
    return Embedder(loaded, **kwargs)


TEXTS = ["the sky is blue", "cats and dogs are the most common pets. a cat sleeps for most of the day", "hello", "why is the sea blue?"]


def st_encode(directory: Path, texts: list[str]) -> torch.Tensor:
    st = pytest.importorskip("sentence_transformers")
    return torch.as_tensor(st.SentenceTransformer(str(directory), device="cpu").encode(texts))


def variant(tiny_bert_dir: Path, tmp_path: Path, pooling: dict[str, Any], dense: bool, normalize: bool) -> Path:  # noqa: F811
    directory = tmp_path / "variant"
    shutil.copytree(tiny_bert_dir, directory)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling}))
    modules = [("sentence_transformers.models.Transformer", ""), ("sentence_transformers.models.Pooling", "1_Pooling")]
    if dense:
        dense_mod = pytest.importorskip("sentence_transformers.base.modules.dense")
        torch.manual_seed(1)
        (directory / "2_Dense").mkdir()
        dense_mod.Dense(32 * len(parse_pooling_config(pooling)[0]), 12).save(str(directory / "2_Dense"))
        modules.append(("sentence_transformers.models.Dense", "2_Dense"))
    if normalize:
        modules.append(("sentence_transformers.models.Normalize", "3_Normalize"))
    write_modules(directory, *modules)
    return directory


@pytest.mark.parametrize(
    ("pooling", "dense", "normalize"),
    [
        ({"pooling_mode_mean_tokens": True}, False, True),  # all-MiniLM's pipeline
        ({"pooling_mode_cls_token": True}, True, True),
        ({"pooling_mode": "max"}, False, False),
        ({"pooling_mode": ["weightedmean", "lasttoken"]}, True, False),
    ],
)
def test_embedder_matches_sentence_transformers(
    tiny_bert_dir: Path, tmp_path: Path, pooling: dict[str, Any], dense: bool, normalize: bool  # noqa: F811
) -> None:
    directory = variant(tiny_bert_dir, tmp_path, pooling, dense, normalize)
    embedder = make_embedder(directory)
    try:
        got = torch.tensor(embedder.embed_sync(TEXTS).vectors)
        assert got.shape[1] == embedder.dimension == (12 if dense else 32 * len(parse_pooling_config(pooling)[0]))
        assert torch.allclose(got, st_encode(directory, TEXTS), atol=1e-5)
    finally:
        embedder.close()


def test_decoder_pools_last_token_and_batches_exactly(tiny_llama_dir: Path) -> None:  # noqa: F811
    embedder = make_embedder(tiny_llama_dir, max_batch_size=64)
    try:
        assert embedder.decoder and embedder.left_padding and embedder.pipeline.pooling == ("lasttoken",)
        assert embedder.pipeline.source.startswith("default")
        batch = embedder.embed_sync(TEXTS)
        alone = [embedder.embed_sync([t]).vectors[0] for t in TEXTS]
        assert torch.allclose(torch.tensor(batch.vectors), torch.tensor(alone), atol=1e-5)
        # Unpadded reference: the last hidden state of each text run on its own.
        ids = embedder.tokenizer(TEXTS[1], return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            ref = embedder.model(input_ids=ids).last_hidden_state[0, -1]
        assert torch.allclose(torch.tensor(batch.vectors[1]), ref, atol=1e-5)
        assert batch.prompt_eval_count == sum(len(embedder.tokenizer(t)["input_ids"]) for t in TEXTS)
    finally:
        embedder.close()


def test_embedder_limits_and_errors(tiny_bert_dir: Path) -> None:  # noqa: F811
    embedder = make_embedder(tiny_bert_dir)
    try:
        assert embedder.max_length == 128  # sentence_bert_config.json
        long = " ".join(["the sky is blue because of rayleigh scattering"] * 40)
        assert embedder.embed_sync([long]).prompt_eval_count == 128
        assert embedder.embed_sync([long], num_ctx=10).prompt_eval_count == 10
        with pytest.raises(BadRequest, match=r"^the input length exceeds the context length$"):
            embedder.embed_sync(["fine", long], truncate=False)
        with pytest.raises(BadRequest, match=r"^input after truncation exceeds maximum context length$"):
            embedder.embed_sync(["a"], num_ctx=2)  # [CLS] and [SEP] fill it
        assert embedder.embed_sync([]).vectors == []
        # Requests submitted together come back to their own callers, in order.
        futures = [embedder.submit([t]) for t in TEXTS]
        singles = [f.result().vectors[0] for f in futures]
        assert torch.allclose(torch.tensor(singles), torch.tensor(embedder.embed_sync(TEXTS).vectors), atol=1e-5)
    finally:
        embedder.close()
    with pytest.raises(InternalError, match="unloaded"):
        embedder.submit(["late"])


# -- the HTTP layer's shaping of vectors --------------------------------------------------------------
def test_normalize_and_dimensions() -> None:
    assert normalize([3.0, 4.0]) == pytest.approx([0.6, 0.8])
    assert normalize([0.0, 0.0]) == [0.0, 0.0]  # norm floored at 1e-12, as in Ollama
    for bad in ([1.0, float("nan")], [float("inf"), 1.0]):
        with pytest.raises(BadRequest, match=r"^embedding contains NaN or Inf values$"):
            normalize(bad)
    assert shape_vector([3.0, 4.0, 12.0], 2) == pytest.approx([0.6, 0.8])
    for ignored in (0, -1, 3, 10):
        assert shape_vector([3.0, 4.0, 12.0], ignored) == normalize([3.0, 4.0, 12.0])


@pytest.mark.parametrize(
    ("value", "texts"),
    [(None, []), ("", []), ("a", ["a"]), ([], []), (["a", "", "b"], ["a", "", "b"])],
)
def test_parse_input(value: Any, texts: list[str]) -> None:
    assert parse_input(value) == texts


@pytest.mark.parametrize("value", [1, 1.5, True, {"a": "b"}, ["a", 1], [None], [["a"]]])
def test_parse_input_rejects(value: Any) -> None:
    with pytest.raises(BadRequest, match=r"^invalid input type$"):
        parse_input(value)


@pytest.mark.parametrize("mode", ["mean", "max", "cls", "weightedmean"])
def test_decoder_with_left_padding_pools_only_real_tokens(tiny_llama_dir: Path, tmp_path: Path, mode: str) -> None:  # noqa: F811
    directory = tmp_path / "decoder"
    shutil.copytree(tiny_llama_dir, directory)
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": mode}))
    write_modules(directory, ("sentence_transformers.models.Transformer", ""), ("sentence_transformers.models.Pooling", "1_Pooling"))
    embedder = make_embedder(directory, max_batch_size=64)
    try:
        batch = torch.tensor(embedder.embed_sync(TEXTS).vectors)
        alone = torch.tensor([embedder.embed_sync([t]).vectors[0] for t in TEXTS])
        assert torch.isfinite(batch).all()
        assert torch.allclose(batch, alone, atol=1e-5)
    finally:
        embedder.close()


def test_num_ctx_counts_special_tokens_as_ollamas_handler(tiny_bert_dir: Path) -> None:  # noqa: F811
    """Ollama's EmbedHandler: num_ctx 3 keeps one token of text between [CLS] and [SEP] (we kept 4: the
    generation options raised num_ctx to 4); 1 leaves no room; 0 bounds nothing, but the runner's context
    is then Ollama's minimum of 4 tokens, which a longer input cannot be cut to fit."""
    embedder = make_embedder(tiny_bert_dir)
    try:
        sentence = "the sky is blue because of rayleigh scattering"
        cut = embedder.embed_sync([sentence], num_ctx=3)
        word = embedder.embed_sync(["the"])  # one token in this vocabulary
        assert cut.prompt_eval_count == word.prompt_eval_count == 3
        assert torch.allclose(torch.tensor(cut.vectors), torch.tensor(word.vectors), atol=1e-6)
        for num_ctx in (1, 2):
            with pytest.raises(BadRequest, match=r"^input after truncation exceeds maximum context length$"):
                embedder.embed_sync([sentence], num_ctx=num_ctx)
        with pytest.raises(BadRequest, match=r"^input exceeds maximum context length and cannot be truncated further$"):
            embedder.embed_sync([sentence], num_ctx=0)
        with pytest.raises(BadRequest, match=r"^the input length exceeds the context length$"):
            embedder.embed_sync([sentence], num_ctx=0, truncate=False)
        with pytest.raises(BadRequest, match=r"^the input length exceeds the context length$"):
            embedder.embed_sync([sentence], num_ctx=3, truncate=False)
        assert embedder.embed_sync(["the"], num_ctx=0).prompt_eval_count == 3  # fits the runner's 4
        assert embedder.embed_sync([sentence], num_ctx=None).prompt_eval_count == len(embedder.tokenizer(sentence)["input_ids"])
    finally:
        embedder.close()


def test_completion_model_embeds_its_last_tokens_final_hidden_state(tiny_llama_bos_dir: Path) -> None:  # noqa: F811
    """What Ollama's llama.cpp runner returns for a model without a pooling type: the last token's hidden
    state after the final norm (no LM head), from the same loaded causal-LM weights; batches are exact."""
    embedder = make_embedder(tiny_llama_bos_dir, kind="causal")
    try:
        causal = embedder.loaded.model
        assert embedder.model is causal.model and embedder.decoder and embedder.pipeline.pooling == ("lasttoken",)
        assert embedder.dimension == causal.config.hidden_size
        assert embedder.tokenizer is not embedder.loaded.tokenizer  # its truncation state is its own
        batch = embedder.embed_sync(TEXTS)
        for text, vector in zip(TEXTS, batch.vectors, strict=True):
            ids = embedder.tokenizer(text, return_tensors="pt")["input_ids"]
            assert ids[0, 0] == embedder.tokenizer.bos_token_id  # the tokenizer's BOS, as llama.cpp adds it
            with torch.inference_mode():
                ref = causal(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
            assert torch.allclose(torch.tensor(vector), ref, atol=1e-5)
        assert batch.prompt_eval_count == sum(len(embedder.tokenizer(t)["input_ids"]) for t in TEXTS)
    finally:
        embedder.close()
