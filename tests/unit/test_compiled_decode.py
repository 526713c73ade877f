"""The compiled decode step (engine/compiled.py, ``OLLAMA_TORCH_COMPILE``) against the eager one on the same
batch cache: the same logits and greedy tokens for rows of different lengths, as the cache grows (its
capacity is a dynamic dimension: no recompile), for one row alone and for a bucket of two; a batch size
without a graph is declined. The step saved to a file (a CPU's, compiled ahead of time) and loaded from it
by a later load decodes as the eager step does; a file that cannot be loaded, or that gives other logits
than the eager step, is compiled again. A bitsandbytes 8-bit model's compiled step (its int8 layers in
inductor's loop) gives the eager logits to bfloat16's rounding."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ollama_torch.engine.cache import BatchKVCache
from ollama_torch.engine.compiled import (
    CompiledDecode,
    artifact_key,
    buckets_for,
    source_digests,
    versioned_dir,
)
from ollama_torch.engine.packed import packing_backend
from ollama_torch.engine.quantized import Int8WeightLinear

pytestmark = pytest.mark.slow


def _cache(model: Any, dtype: torch.dtype = torch.float32, capacity: int = 128) -> BatchKVCache:
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return BatchKVCache(c.num_hidden_layers, 4, c.num_key_value_heads, head_dim, dtype, torch.device("cpu"), capacity=capacity)


def _prefill(model: Any, cache: BatchKVCache, prompts: list[list[int]]) -> torch.Tensor:
    row0 = cache.reserve_rows([len(p) for p in prompts])
    positions, mask, cache_position = cache.begin_prefill(row0, [len(p) for p in prompts])
    q = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (q - len(p)) + p for p in prompts])
    out = model(input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=cache,
                cache_position=cache_position, use_cache=True, logits_to_keep=1)
    cache.end_step(advance=False)
    return out.logits[:, -1].argmax(-1, keepdim=True)


def _eager_step(model: Any, cache: BatchKVCache, ids: torch.Tensor) -> torch.Tensor:
    positions, mask, cache_position = cache.begin_decode()
    out = model(input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=cache,
                cache_position=cache_position, use_cache=True)
    cache.end_step(advance=True)
    return out.logits[:, -1]


@pytest.fixture(scope="module")
def model(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from transformers import AutoModelForCausalLM

    with pytest.MonkeyPatch.context() as mp:  # inductor's cache for these tests only (servers started later inherit the env)
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("compiled")))
        yield AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


@pytest.mark.parametrize("prompts", [[[5, 17, 42, 99, 7]], [[5, 17, 42, 99, 7, 3, 8, 11, 64], [23, 4]]], ids=["one-row", "two-rows"])
def test_compiled_step_matches_eager(model: Any, prompts: list[list[int]]) -> None:
    steps = 300  # past the first capacities (128, 256): the buffers are replaced twice
    from torch._dynamo.utils import counters

    compiled = CompiledDecode(model, torch.device("cpu"), (1, 2))
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        eager_cache, compiled_cache = _cache(model), _cache(model)
        eager_ids, compiled_ids = _prefill(model, eager_cache, prompts), _prefill(model, compiled_cache, prompts)
        assert torch.equal(eager_ids, compiled_ids)
        for _ in range(steps):
            expected = _eager_step(model, eager_cache, eager_ids)
            got = compiled.step(compiled_cache, compiled_ids)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
            eager_ids, compiled_ids = expected.argmax(-1, keepdim=True), got.argmax(-1, keepdim=True)
            assert torch.equal(eager_ids, compiled_ids)
        assert compiled_cache.length == eager_cache.length and compiled_cache.capacity > 256 and compiled_cache.static_window() > 256
        assert counters["stats"]["unique_graphs"] == graphs + 1  # compiled once: the growing capacity is dynamic
        # the history each row attends over is the same: every layer's live columns are equal
        for k_eager, k_compiled in zip(eager_cache.keys, compiled_cache.keys, strict=True):
            lo = min(eager_cache.starts)
            torch.testing.assert_close(k_compiled[: len(prompts), :, lo : compiled_cache.length],
                                       k_eager[: len(prompts), :, lo : eager_cache.length], rtol=1e-4, atol=1e-4)


def _steps_match(compiled: CompiledDecode, m: Any, prompt: list[int], steps: int, capacity: int = 128) -> BatchKVCache:
    """``steps`` compiled steps against the eager ones on caches of ``capacity``; the compiled step's cache."""
    with torch.inference_mode():
        eager_cache, compiled_cache = _cache(m, capacity=capacity), _cache(m, capacity=capacity)
        ids = _prefill(m, eager_cache, [prompt])
        _prefill(m, compiled_cache, [prompt])
        for _ in range(steps):
            expected = _eager_step(m, eager_cache, ids)
            got = compiled.step(compiled_cache, ids)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
            ids = expected.argmax(-1, keepdim=True)
            assert torch.equal(got.argmax(-1, keepdim=True), ids)
    return compiled_cache


def _other_weights(model: Any) -> Any:
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.5)
    return other


def _warmed(m: Any, saved: Path) -> CompiledDecode:
    compiled = CompiledDecode(m, torch.device("cpu"), (1,), saved=saved)
    with torch.inference_mode():
        compiled.warm_up(_cache(m), 0)
    return compiled


def test_the_compiled_decode_step_of_an_8bit_model_gives_the_eager_logits(tiny_llama_dir: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A bitsandbytes 8-bit model as the server runs it on a CPU (its layers swapped, the rest in bfloat16):
    the compiled step of 1 and 2 rows, whose int8 layers run in inductor's loop, gives the eager step's
    logits, to bfloat16's rounding, step after step (each fed the eager step's token, so that a near tie cannot
    make them part)."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from ollama_torch.engine.compiled import _agree
    from ollama_torch.engine.quantized import prepare_for_cpu, quiet_bitsandbytes

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    quiet_bitsandbytes()
    model = AutoModelForCausalLM.from_pretrained(
        str(tiny_llama_dir), dtype=torch.bfloat16, device_map="cpu", quantization_config=BitsAndBytesConfig(load_in_8bit=True)
    ).eval()
    assert prepare_for_cpu(model) > 0
    compiled = CompiledDecode(model, torch.device("cpu"), (1, 2))
    errors: list[float] = []
    for prompts in ([[5, 17, 42, 99, 7]], [[5, 17, 42, 99, 7, 3, 8, 11], [23, 4, 9]]):
        eager_cache, compiled_cache = _cache(model, torch.bfloat16), _cache(model, torch.bfloat16)
        with torch.inference_mode():
            ids = _prefill(model, eager_cache, prompts)
            _prefill(model, compiled_cache, prompts)
            for _ in range(20):
                expected = _eager_step(model, eager_cache, ids)
                got = compiled.step(compiled_cache, ids)
                assert got.shape == expected.shape and _agree(got, expected)
                errors.append(float((got.float() - expected.float()).norm()) / float(expected.float().norm()))
                ids = expected.argmax(-1, keepdim=True)
    assert compiled.origins == {1: "in memory", 2: "in memory"}
    # bfloat16's roundings: 1.5% on average, at most 3.5% (the kernel's path compiled: 1.5% and 2.6%)
    assert sum(errors) / len(errors) <= 0.03 and max(errors) <= 0.06, errors


def test_a_saved_step_is_loaded_by_the_next_load(model: Any, tmp_path: Path) -> None:
    first = _warmed(model, tmp_path)
    assert first.origins == {1: "compiled"}
    path = first.path(1)
    assert path is not None and path.parent == tmp_path and path.exists()
    # a later load (a restart: a new object, nothing traced in it) of a model of the same architecture with
    # other weights (a fine-tune) loads the same file, and decodes with its own weights as the cache grows
    other = _other_weights(model)
    second = _warmed(other, tmp_path)
    assert second.origins == {1: "loaded"} and second.path(1) == path
    _steps_match(second, other, [3, 1, 4, 1, 5, 9, 2, 6], 300)


def test_a_saved_step_still_runs_once_an_adapter_is_on_the_model(model: Any, tmp_path: Path) -> None:
    """An adapter's host becomes the forward of the module it targets, the module tree as it was: the saved step
    (whose code reads each weight by its path in the tree) decodes rows without adapters as before, and the eager
    forward of a routed row adds the adapter's update. (When the host took the module's place in the tree, the
    step failed with ``KeyError: 'weight'`` and the worker decoded eager from then on.)"""
    from ollama_torch.engine.lora import LoraHost, routed

    m = copy.deepcopy(model)
    compiled = _warmed(m, tmp_path)
    proj = m.get_submodule("model.layers.0.self_attn.q_proj")
    host = LoraHost.host_of(proj)
    assert LoraHost.host_of(proj) is host and m.get_submodule("model.layers.0.self_attn.q_proj") is proj
    torch.manual_seed(1)
    rank = 4
    host.lora["k"] = (torch.randn(rank, proj.in_features), torch.randn(proj.out_features, rank), None, 0.5)
    _steps_match(compiled, m, [3, 1, 4, 1, 5, 9, 2, 6], 20)
    x = torch.randn(2, 3, proj.in_features)
    with torch.inference_mode():
        base = proj(x)
        with routed([("k",), ()], torch.device("cpu")):
            adapted = proj(x)
    a, b, _, scaling = host.lora["k"]
    torch.testing.assert_close(adapted[0], base[0] + (x[0] @ a.T @ b.T) * scaling, rtol=1e-4, atol=1e-4)
    assert torch.equal(adapted[1], base[1])


def test_a_saved_step_reads_a_window_narrower_than_the_buffers(model: Any, tmp_path: Path) -> None:
    """The buffers' capacity never shrinks, the window does (``static_window``): after a long request, rows
    read a window narrower than the buffers. The saved step, loaded as a restart loads it, decodes there as
    the eager step does, and as the window widens, and where the two are equal again (a fresh cache). Before,
    a step traced where they were equal failed there ("expected size 3==3, stride 32768==16384": it took
    the buffers' strides for the window's), and the server decoded eager from then on."""
    _warmed(model, tmp_path)
    loaded = _warmed(model, tmp_path)
    assert loaded.origins == {1: "loaded"}
    for capacity in (512, 1024, 128):
        fresh = _cache(model, capacity=capacity)
        fresh.reserve_rows([5])
        assert (fresh.static_window() < fresh.capacity) == (capacity > 256)
        compiled_cache = _steps_match(loaded, model, [3, 1, 4, 1, 5], 300, capacity)  # the window: 256, then 512
        assert compiled_cache.static_window() == 512 and compiled_cache.capacity == max(capacity, 512)


def test_a_child_process_compiles_and_saves_the_missing_steps(model: Any, tmp_path: Path) -> None:
    """The background compile's fork (``compile_in_child``) from this process, which has run torch on several
    threads: the child saves the steps without running them, this process loads them, and they decode as the
    eager step does. A child told to stop is killed."""
    compiled = CompiledDecode(model, torch.device("cpu"), (1, 2), saved=tmp_path)
    with torch.inference_mode():
        assert not compiled.compile_in_child(_cache(model), 0, stop=lambda: True)  # killed at once
        assert not compiled.all_saved()
        assert compiled.compile_in_child(_cache(model), 0, stop=lambda: False)
        assert compiled.all_saved() and compiled.origins == {}  # compiled in the child, nothing here yet
        compiled.warm_up(_cache(model), 0)
    assert compiled.origins == {1: "loaded", 2: "loaded"}
    _steps_match(compiled, model, [3, 1, 4, 1, 5, 9, 2, 6], 40)


def test_a_bucket_the_child_cannot_compile_is_dropped_and_the_others_saved(model: Any, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = CompiledDecode(model, torch.device("cpu"), (1, 2), saved=tmp_path)
    save = compiled._load_or_save

    def failing_for_two_rows(rows: int, inputs: tuple[Any, ...]) -> Any:
        if rows == 2:
            raise RuntimeError("no kernel for this bucket")
        return save(rows, inputs)

    monkeypatch.setattr(compiled, "_load_or_save", failing_for_two_rows)  # the forked child inherits it
    with torch.inference_mode():
        assert compiled.compile_in_child(_cache(model), 0, stop=lambda: False)
    compiled.keep_saved()
    assert compiled.buckets == {1} and [p.name for p in tmp_path.glob("decode-*.pt2")] == [compiled.path(1).name]  # type: ignore[union-attr]


def test_a_forked_child_lets_go_of_the_sockets_and_pipes_it_inherited(tmp_path: Path) -> None:
    """A compile's child must not hold the server's connections open: once the server closes one, its client
    sees the end while the child still runs. Its inherited pipes close too; files stay open."""
    import os
    import socket
    import time

    from ollama_torch.engine.compiled import _detach_child

    server_end, client_end = socket.socketpair()
    read_end, write_end = os.pipe()
    kept = (tmp_path / "kept").open("w")
    result = tmp_path / "result"
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            _detach_child(parent)
            closed = 0
            for fd in (server_end.fileno(), read_end, write_end):
                try:
                    os.fstat(fd)
                except OSError:
                    closed += 1
            os.fstat(kept.fileno())  # raises (and the result is never written) if the file was closed
            result.write_text(f"{closed} closed")
            time.sleep(60)  # the compile, still running
        finally:
            os._exit(0)
    try:
        server_end.close()  # the server closes the connection while the child runs
        client_end.settimeout(30)
        assert client_end.recv(1) == b""  # and its client sees it closed
        deadline = time.monotonic() + 30
        while not result.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert result.read_text() == "3 closed"
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        for f in (client_end, kept):
            f.close()
        os.close(read_end)
        os.close(write_end)


def test_a_saved_step_that_does_not_load_or_disagrees_is_compiled_again(model: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from transformers import AutoModelForCausalLM

    compiled = _warmed(model, tmp_path)
    path = compiled.path(1)
    assert path is not None
    path.write_bytes(b"not a compiled step")
    again = _warmed(model, tmp_path)
    assert again.origins == {1: "compiled"} and "could not be loaded" in caplog.text
    _steps_match(again, model, [7, 7, 3], 5)
    # a file that loads but computes another model (here: another activation, as a file left under this
    # key by other code would) is caught by the check against the eager step
    config = model.config.to_dict()
    config.update(hidden_act="relu")
    relu = AutoModelForCausalLM.from_config(type(model.config).from_dict(config)).eval()
    relu.load_state_dict(model.state_dict())
    relu_path = _warmed(relu, tmp_path).path(1)
    assert relu_path is not None and relu_path != path
    path.write_bytes(relu_path.read_bytes())
    caplog.clear()
    fixed = _warmed(model, tmp_path)
    assert fixed.origins == {1: "compiled"} and "disagrees with the eager step" in caplog.text
    _steps_match(fixed, model, [7, 7, 3], 5)
    assert _warmed(model, tmp_path).origins == {1: "loaded"}  # and the file is right again


def test_a_bucket_that_fails_to_compile_runs_eager_and_the_others_compiled(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = CompiledDecode(model, torch.device("cpu"), (1, 2))
    jit = compiled._jit

    def failing_for_two_rows(*inputs: Any) -> torch.Tensor:
        if inputs[1].shape[0] == 2:
            raise RuntimeError("no kernel for this bucket")
        return jit(*inputs)

    monkeypatch.setattr(compiled, "_jit", failing_for_two_rows)
    with torch.inference_mode():
        compiled.warm_up(_cache(model), 0)
    assert compiled.handles(1) and not compiled.handles(2)
    assert compiled.origins == {1: "in memory", 2: "eager (failed)"}
    _steps_match(compiled, model, [2, 7, 1, 8], 3)
    monkeypatch.setattr(compiled, "_jit", lambda *inputs: (_ for _ in ()).throw(RuntimeError("no kernel at all")))
    compiled._steps.clear()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="no batch size"):
        compiled.warm_up(_cache(model), 0)


def test_the_key_of_a_saved_step(model: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    key = artifact_key(model, cpu, 1, 2)
    assert artifact_key(_other_weights(model), cpu, 1, 2) == key  # weights are inputs of the step
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    assert len({key, artifact_key(model, cpu, 2, 2), artifact_key(model, cpu, 1, 3), artifact_key(bf16, cpu, 1, 2)}) == 4
    eps = model.config.rms_norm_eps
    try:
        model.config.rms_norm_eps = eps * 2
        assert artifact_key(model, cpu, 1, 2) != key
    finally:
        model.config.rms_norm_eps = eps
    assert artifact_key(model, cpu, 1, 2) == key
    # the code the step traces beyond torch's and Transformers' (this module's, a quantized layer's) is in it
    digests = dict(source_digests({torch.nn.Linear, Int8WeightLinear}))
    assert set(digests) == {"ollama_torch.engine.compiled", "ollama_torch.engine.quantized"} and all(digests.values())
    with_int8 = copy.deepcopy(model)
    with_int8.lm_head = Int8WeightLinear(torch.zeros(model.lm_head.weight.shape, dtype=torch.int8),
                                         torch.ones(model.lm_head.weight.shape[0]), None)
    assert artifact_key(with_int8, cpu, 1, 2) != key
    # a layer's file edited (an upgrade of the package it comes from) changes the key
    (tmp_path / "layer_of_elsewhere.py").write_text("import torch\nclass Layer(torch.nn.Identity):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import layer_of_elsewhere

    with_layer = copy.deepcopy(model)
    with_layer.model.norm = layer_of_elsewhere.Layer()
    before = artifact_key(with_layer, cpu, 1, 2)
    (tmp_path / "layer_of_elsewhere.py").write_text("import torch\nclass Layer(torch.nn.Identity):\n    pass  # changed\n")
    assert artifact_key(with_layer, cpu, 1, 2) != before


def test_models_of_one_architecture_each_decode_with_their_own_weights(model: Any) -> None:
    """Dynamo keeps one graph for both (their weights are its inputs): each step must read its own model's."""
    other = _other_weights(model)
    with torch.inference_mode():
        for m in (model, other):
            compiled = CompiledDecode(m, torch.device("cpu"), (1,))
            eager_cache, compiled_cache = _cache(m), _cache(m)
            ids = _prefill(m, eager_cache, [[3, 1, 4, 1, 5]])
            _prefill(m, compiled_cache, [[3, 1, 4, 1, 5]])
            for _ in range(4):
                expected = _eager_step(m, eager_cache, ids)
                torch.testing.assert_close(compiled.step(compiled_cache, ids), expected, rtol=1e-4, atol=1e-4)
                ids = expected.argmax(-1, keepdim=True)


def test_the_directory_is_per_version_and_other_versions_are_removed(tmp_path: Path) -> None:
    import transformers

    root = tmp_path / "compiled"
    current = versioned_dir(root)
    assert current.is_dir() and current.parent == root  # made where missing
    assert current.name == f"torch-{torch.__version__}-transformers-{transformers.__version__}".replace("+", "_")
    (current / "decode-a.pt2").write_bytes(b"kept")
    (current / "fxgraph").mkdir()
    old = root / "torch-2.0.0-transformers-4.40.0"
    (old / "fxgraph").mkdir(parents=True)
    (old / "decode-b.pt2").write_bytes(b"old")
    (root / "decode-c.pt2").write_bytes(b"unversioned")
    (root / "aotautograd").mkdir()
    (root / "link").symlink_to(current)  # a link is removed, not what it points at
    assert versioned_dir(root) == current
    assert sorted(p.name for p in root.iterdir()) == [current.name]
    assert (current / "decode-a.pt2").read_bytes() == b"kept" and (current / "fxgraph").is_dir()


def test_buckets() -> None:
    # measured: at 8 rows eager with packed weights is as fast; packed layers (more than half the batch) do not compile
    eight = (8,) if packing_backend() != "mkl" else ()  # where the eager step has no MKL-packed weights for 8 rows
    assert buckets_for(torch.device("cpu"), 8) == (1, 2, 4, *eight)
    assert buckets_for(torch.device("cpu"), 16) == (1, 2, 4, *eight)
    assert buckets_for(torch.device("cpu"), 4) == (1, 2)
    assert buckets_for(torch.device("cpu"), 2) == (1,)
    assert buckets_for(torch.device("cuda"), 8) == (1, 2, 4, 8)
    assert buckets_for(torch.device("cuda"), 6) == (1, 2, 4, 6)
    assert buckets_for(torch.device("cuda"), 1) == (1,)
    compiled = CompiledDecode(torch.nn.Linear(1, 1), torch.device("cpu"), (1,))
    assert compiled.handles(1) and not compiled.handles(2)


def test_the_window_follows_the_rows_not_the_capacity() -> None:
    cache = BatchKVCache(2, 4, 1, 8, torch.float32, torch.device("cpu"), capacity=4096)
    assert cache.static_window() == 256  # empty: the smallest window
    cache.reserve_rows([300])  # columns [64, 364): the step writes column 364
    assert cache.static_window() == 512
    cache.reserve_rows([3000])
    assert cache.static_window() == 4096
    cache.remove_row(1)  # the long row leaves: the capacity stays, the window does not
    cache.remove_row(0)
    cache.reserve_rows([10])
    assert cache.capacity == 4096 and cache.static_window() == 256


@pytest.mark.parametrize("own", [False, True], ids=["sdpa", "own-kernel"])
def test_a_compiled_one_token_step_attends_on_the_key_value_heads(own: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under dynamo, a grouped-query layer's one-token attention folds its query heads next to their key/value
    head and attends on the key/value heads (no ``repeat_kv`` copy of the window), with PyTorch's SDPA or, where it
    is loaded (a float32 CPU step), our kernel, giving what attention over the copies gives; with several query
    tokens it is Transformers' own."""
    from torch import nn
    from transformers.integrations.sdpa_attention import repeat_kv

    from ollama_torch.engine import compiled
    from ollama_torch.engine.compiled import _decode_attention
    from ollama_torch.engine.native import decode_attention_available

    if own and not decode_attention_available():
        pytest.skip("the native kernels are built on x86-64 CPUs with AVX2 and FMA only")
    monkeypatch.setattr(compiled, "_own_attention", own)
    module = nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    torch.manual_seed(0)
    keys, values = torch.randn(2, 3, 20, 16), torch.randn(2, 3, 20, 16)
    mask = torch.zeros(2, 1, 1, 20)
    mask[0, ..., :5] = float("-inf")  # a row whose first columns are not its own
    attention_ops = (torch.nn.functional.scaled_dot_product_attention, torch.ops.ollama_torch.decode_attention.default,
                     torch.ops.ollama_torch.decode_attention) if own else (torch.nn.functional.scaled_dot_product_attention,)
    for length in (1, 4):
        query = torch.randn(2, 9, length, 16)
        m = mask.expand(2, 1, length, 20)

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            return _decode_attention(module, q, k, v, m, scaling=0.25)[0]

        heads: list[tuple[Any, int]] = []  # the attention the traced graph calls, and the key heads it is handed

        def record(gm: torch.fx.GraphModule, example_inputs: Any, heads: list[tuple[Any, int]] = heads) -> Any:
            heads.extend((n.target, n.args[1].meta["example_value"].shape[1]) for n in gm.graph.nodes
                         if n.target in attention_ops)
            return gm.forward

        torch._dynamo.reset()
        torch.compile(attend, backend=record, fullgraph=True)(query, keys, values, m)
        assert [h for _, h in heads] == [3 if length == 1 else 9]
        assert (heads[0][0] is not torch.nn.functional.scaled_dot_product_attention) == (own and length == 1)
        expected = torch.nn.functional.scaled_dot_product_attention(
            query, repeat_kv(keys, 3), repeat_kv(values, 3), attn_mask=m, scale=0.25).transpose(1, 2)
        torch._dynamo.reset()
        got = torch.compile(attend, fullgraph=True)(query, keys, values, m)
        assert got.shape == (2, length, 9, 16)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
