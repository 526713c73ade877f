"""``ModelWorker``: one thread per loaded model owns the torch model, the batch KV cache and the step loop.

    step():  admit waiting requests (one batched prefill) -> one batched decode forward
             -> per-row logits processing + sampling -> detokenize, stop strings, events

A request joins the running batch at the next step and leaves when it is done, without waiting for the
others (continuous batching). Models whose attention Transformers implements with per-layer cache logic
we do not reproduce (sliding windows, recurrent layers) run one request at a time through Transformers'
own ``DynamicCache``; they still stream, they just do not share forward passes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InternalError
from .api import TokenLogprob
from .cache import BatchKVCache
from .chunked import ChunkPlanner, PartialPrefill
from .compiled import (
    BACKGROUND_COMPILE,
    CompiledDecode,
    buckets_for,
    use_cache_dir,
    versioned_dir,
)
from .loader import LoadedModel
from .logprobs import TokenBytes, batch_logprobs, entry_from_row
from .lora import routed
from .native import cpp_compiler
from .prefix_cache import PrefixCache
from .prompt_scoring import prefill_groups, score_prompt
from .requests import DoneEvent, ErrorEvent, GenerationRequest, PromptEvent, TextEvent
from .sampling import BatchSampler, RowSampling
from .text import Detokenizer, StopMatcher
from .threads import OnDemandThread, ThreadTuner

log = logging.getLogger(__name__)


@dataclass
class _Seq:
    req: GenerationRequest
    sampling: RowSampling
    detok: Detokenizer
    stops: StopMatcher
    tokens: list[int]
    n_prompt: int
    prompt_evaluated: int = 0
    generated: int = 0
    row: int = -1
    prefill_started: float = 0.0
    prefill_seconds: float = 0.0
    decode_started: float = 0.0
    solo_cache: Any = None
    resumed: bool = False  # re-prefilled after a context shift
    cached_tokens: int = 0  # prompt tokens the prefix cache served at admission
    adapter_keys: tuple[str, ...] = ()  # the LoRA adapters this request's rows run with
    partial: PartialPrefill | None = None  # its prompt's prefill so far, when it is read in chunks
    done: bool = False
    logprobs: list[TokenLogprob] = field(default_factory=list)  # entries of tokens whose text is not out yet


class ModelWorker:
    def __init__(
        self, loaded: LoadedModel, max_rows: int, prefix_cache_bytes: int = 256 << 20, prefill_chunk: int = 0,
        compile_dir: Path | None = None, compile_at_load: bool = True,
    ) -> None:
        """``compile_dir``: where compiled decode steps are kept (``None``: eager only). ``compile_at_load``: the
        load compiles them, on any device (``OLLAMA_TORCH_COMPILE=1``); otherwise (unset), on a CPU only, the
        model serves eager at once while a thread loads the saved steps, or has a child process compile the
        missing ones first, then switches to them."""
        self.loaded = loaded
        self.max_rows = max_rows if loaded.batchable else 1
        if loaded.device.type == "cpu":  # float32 layers: packed copies for batched steps, one-row compiled steps
            from .packed import pack_linears

            # our float32 kernel runs in compiled steps only: eager-only workers do not build or load it
            loaded.size_bytes += pack_linears(loaded.model, self.max_rows, native=None if compile_dir is not None else False)
            from .hugepages import relocate

            relocate(loaded.model)  # out of the Safetensors memory map, into huge pages: before anything runs it
        self.inbox: queue.SimpleQueue[GenerationRequest] = queue.SimpleQueue()
        self.waiting: deque[_Seq] = deque()
        self.rows: list[_Seq] = []
        self.admitting: list[_Seq] = []
        self.prefilling: deque[_Seq] = deque()  # long prompts read in chunks while the rows decode
        self.chunks = ChunkPlanner(prefill_chunk)
        self.cache: BatchKVCache | None = None
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if loaded.batchable else None
        self.sampler = BatchSampler(self.max_rows, loaded.logits_width, loaded.logits_device)
        self._closed = False
        self.threads = ThreadTuner(enabled=loaded.device.type == "cpu")
        self.active = 0  # requests submitted and not finished (read from other threads)
        self._lock = threading.Lock()
        self.compiled: CompiledDecode | None = None
        if compile_dir is not None:
            self.compiled = self._compile(compile_dir, at_load=compile_at_load)
        self.thread = OnDemandThread(f"worker-{loaded.name}", self._tick, lambda: not self.inbox.empty(), on_start=self._on_start)

    def _compile(self, cache_dir: Path, at_load: bool) -> CompiledDecode | None:
        """The compiled decode step, made now so that the load pays it (``at_load``), or ``None`` where the
        eager step runs: vision models, models without the batch cache or spread over devices, any model whose
        compile fails (logged; it still serves), models on CUDA unless ``at_load``, and until the background
        thread (``_compile_in_background``) hands its step over."""
        loaded = self.loaded
        if not loaded.batchable or loaded.kind != "causal":
            log.info("%s: not compiled (only text models decoding through the batch cache are)", loaded.name)
            return None
        if not at_load:
            if loaded.device.type != "cpu":
                log.info("%s: decode step not compiled on %s unless OLLAMA_TORCH_COMPILE=1", loaded.name, loaded.device.type)
                return None
            threading.Thread(target=self._compile_in_background, args=(cache_dir,), name=f"compile-{loaded.name}",
                             daemon=True).start()
            return None
        prepared = self._prepare(cache_dir)
        if prepared is None:
            return None
        compiled, cache, kernels = prepared
        log.info("%s: compiling the decode step for batches of %s rows (the first load of an architecture takes "
                 "minutes on a CPU, a minute or more for each batch size; later loads reuse what is kept in %s)", loaded.name,
                 sorted(compiled.buckets), kernels)
        return self._warm_up(compiled, cache)

    def _prepare(self, cache_dir: Path) -> tuple[CompiledDecode, BatchKVCache, str] | None:
        """The steps to make, a scratch cache to make them on, and inductor's cache directory; ``None`` (logged)
        where the model is not compiled."""
        loaded = self.loaded
        if loaded.device.type == "cpu" and cpp_compiler() is None:
            log.warning("%s: decode step not compiled: inductor finds no C++ compiler (install g++, or name one in CXX)",
                        loaded.name)
            return None
        with torch.inference_mode():  # as the worker's own cache is: dynamo guards on it
            cache = loaded.new_batch_cache(self.max_rows)
        if len(set(cache.layer_devices)) > 1:
            log.info("%s: not compiled (spread over several devices)", loaded.name)
            return None
        cache_dir = versioned_dir(cache_dir)
        kernels = use_cache_dir(cache_dir)
        compiled = CompiledDecode(loaded.model, loaded.device, buckets_for(loaded.device, self.max_rows), saved=cache_dir,
                                  threads=self.threads.options[0])  # the count the worker starts with
        return compiled, cache, kernels

    def _warm_up(self, compiled: CompiledDecode, cache: BatchKVCache) -> CompiledDecode | None:
        loaded = self.loaded
        try:
            with torch.inference_mode():
                seconds = compiled.warm_up(cache, loaded.pad_token_id, stop=lambda: self._closed)
        except Exception:
            log.exception("%s: compiling the decode step failed; it runs eager", loaded.name)
            return None
        if self._closed:
            log.info("%s: unloaded while its decode step compiled; the steps compiled so far are saved", loaded.name)
            return None
        origins = ", ".join(f"{rows} rows: {how}" for rows, how in sorted(compiled.origins.items()))
        log.info("%s: decode step compiled in %.1f s (%s)", loaded.name, seconds, origins)
        return compiled

    def _compile_in_background(self, cache_dir: Path) -> None:
        """On its own thread, at a lower priority than serving (which it shares the CPU with): the saved steps
        are loaded, or the steps compiled, one model at a time, then the worker's next step uses them."""
        loaded = self.loaded
        try:
            with contextlib.suppress(AttributeError, OSError):  # Linux: a thread's own nice value, which the
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # compilers it starts inherit
            prepared = self._prepare(cache_dir)
            if prepared is None or self._closed:
                return
            compiled, cache, kernels = prepared
            if compiled.all_saved():
                log.info("%s: loading its saved decode steps (batches of %s rows)", loaded.name, sorted(compiled.buckets))
                self.compiled = self._warm_up(compiled, cache)
                return
            log.info("%s: compiling the decode step for batches of %s rows in the background, serving uncompiled until "
                     "then (the first compile of an architecture takes minutes on a CPU, a minute or more for each batch "
                     "size; later loads reuse what is kept in %s)", loaded.name, sorted(compiled.buckets), kernels)
            if not hasattr(os, "fork"):  # traced on this thread, which slows serving while it traces
                with BACKGROUND_COMPILE:
                    if not self._closed:
                        self.compiled = self._warm_up(compiled, cache)
                return
            with BACKGROUND_COMPILE:
                if self._closed:
                    return
                started = time.perf_counter()
                compiled.compile_in_child(cache, loaded.pad_token_id, stop=lambda: self._closed)
            if self._closed:
                log.info("%s: unloaded while its decode step compiled; the steps compiled so far are saved", loaded.name)
                return
            wanted = compiled.buckets
            compiled.keep_saved()
            if wanted - compiled.buckets:
                log.warning("%s: batches of %s rows run eager (their step was not compiled ahead of time: see above)",
                            loaded.name, sorted(wanted - compiled.buckets))
            if not compiled.buckets:
                log.warning("%s: the decode step could not be compiled ahead of time (see above); it runs eager "
                            "(OLLAMA_TORCH_COMPILE=1 compiles it in memory at each load)", loaded.name)
                return
            log.info("%s: decode step made in the background in %.0f s; loading it", loaded.name,
                     time.perf_counter() - started)
            self.compiled = self._warm_up(compiled, cache)
        except Exception:
            log.exception("%s: compiling the decode step failed; it runs eager", loaded.name)

    # -- public, any thread ------------------------------------------------------------------------------
    def submit(self, req: GenerationRequest) -> None:
        with self._lock:
            self.active += 1
        self.inbox.put(req)
        self.thread.wake()

    def close(self) -> None:
        self._closed = True
        self.thread.stop()
        self._drain_inbox(block=False)  # anything queued after the thread stopped fails below
        self._fail_all(InternalError("model unloaded"))
        if self.prefix_cache is not None:
            self.prefix_cache.clear()  # its KV tensors live on the model's device

    @property
    def running(self) -> int:
        return len(self.rows)

    def cache_bytes(self) -> int:
        cache = self.cache
        return cache.bytes() if cache is not None else 0

    # -- the loop (on the worker's own thread, see OnDemandThread) -----------------------------------------
    def _on_start(self) -> None:
        torch.set_grad_enabled(False)
        self.threads.apply()

    def _tick(self) -> bool:
        self._drain_inbox(block=not (self.rows or self.waiting or self.prefilling))
        if self._closed or not (self.rows or self.waiting or self.prefilling):
            return False
        try:
            with torch.inference_mode():
                self.step()
        except Exception as exc:  # a failed forward must not wedge the worker: fail the batch, go on
            log.exception("step failed")
            self._fail_all(exc)
        return True

    def _drain_inbox(self, block: bool) -> None:
        try:
            item = self.inbox.get(timeout=0.25) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            try:
                self.waiting.append(self._new_seq(item))
            except Exception as exc:  # a request that cannot even start fails alone
                log.exception("request rejected by the worker")
                item.emit(ErrorEvent(exc))
                self._release_request()
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _new_seq(self, req: GenerationRequest) -> _Seq:
        tok = self.loaded.tokenizer
        seq = _Seq(
            req=req,
            sampling=RowSampling.of(req.options),
            detok=Detokenizer(tok, req.prompt_ids),
            stops=StopMatcher(req.options.stop),
            tokens=list(req.prompt_ids),
            n_prompt=len(req.prompt_ids),
            adapter_keys=tuple(a.key for a in req.adapters),
        )
        if req.adapters:  # loaded here, between forwards, by the thread that runs the model; released in _release
            self.loaded.adapters().acquire(req.adapters)
        return seq

    def step(self) -> None:
        for seq in [s for s in self.rows if s.req.cancelled.is_set()]:
            self._finish(seq, None)
        self.waiting = deque(s for s in self.waiting if not self._drop_if_cancelled(s))
        self.prefilling = deque(s for s in self.prefilling if not self._drop_if_cancelled(s))
        free = self.max_rows - len(self.rows) - len(self.prefilling)
        if free > 0 and self.waiting:
            group: list[_Seq] = []
            while self.waiting and len(group) < free:
                seq = self.waiting.popleft()
                if self._reads_in_chunks(seq):
                    self.prefilling.append(seq)  # it keeps a row's place
                    free -= 1
                else:
                    group.append(seq)
            if group:
                # Held in ``admitting`` until they are rows, so a failed prefill still fails them.
                self.admitting = group
                for part in prefill_groups(group, self._scores_prompt, lambda s: len(s.tokens), self.loaded.logits_width):
                    self._prefill(part)
                self.admitting = []
        if self.prefilling and not self.rows:  # nobody decoding: nothing to keep pace with, read the rest at once
            self.chunks.idle()
            self._prefill_chunk(self.prefilling[0], None)
        elif self.prefilling and self.chunks.may_run():
            self._prefill_chunk(self.prefilling[0], self.chunks.tokens)
        if self.rows:
            self._decode()

    def _reads_in_chunks(self, seq: _Seq) -> bool:
        """A prompt too long to prefill in one step while other rows decode (vision prompts never are:
        they prefill alone; nor are scored prompts, whose every position's logits one prefill keeps)."""
        return (self.loaded.batchable and bool(self.rows) and not seq.req.model_inputs and seq.partial is None
                and not self._scores_prompt(seq) and len(seq.tokens) - 1 > self.chunks.tokens)

    def _drop_if_cancelled(self, seq: _Seq) -> bool:
        if seq.req.cancelled.is_set():
            self._release(seq)
            return True
        return False

    # -- prefill ---------------------------------------------------------------------------------------------
    def _prefill_chunk(self, seq: _Seq, budget: int | None) -> None:
        """The next chunk of a long prompt, into its private cache; once all but its last token are in, it
        waits at the front of the queue to join the batch (that token is prefilled with the next group)."""
        started = time.perf_counter()
        if seq.partial is None:
            hit = self._lookup_prefix(seq)
            seq.partial = PartialPrefill.start(self.loaded.model.config, hit)
            if self.cache is not None:  # the batch's room for it, in this chunk's time rather than at its join
                self.cache.make_room(len(seq.tokens))
            log.info("reading a %d-token prompt in chunks of %s while %d rows decode", len(seq.tokens),
                     budget or "all", len(self.rows))
            if hit is not None and not seq.resumed:
                seq.cached_tokens = hit[0]
        partial = seq.partial
        end = len(seq.tokens) - 1 if budget is None else min(len(seq.tokens) - 1, partial.done + budget)
        if end > partial.done:
            ids = torch.tensor([seq.tokens[partial.done : end]], device=self.loaded.device)
            self._forward([seq], input_ids=ids, past_key_values=partial.cache, use_cache=True, logits_to_keep=1)
            elapsed = time.perf_counter() - started
            self.chunks.record_chunk(end - partial.done, elapsed)
            seq.prompt_evaluated += end - partial.done
            seq.prefill_seconds += elapsed
            partial.done = end
        if partial.done >= len(seq.tokens) - 1:
            self.prefilling.remove(seq)
            self.waiting.appendleft(seq)

    def _prefill(self, group: list[_Seq]) -> None:
        if not self.loaded.batchable or any(s.req.model_inputs for s in group):
            for seq in group:
                self._prefill_solo(seq)
            return
        if self.cache is None:
            self.cache = self.loaded.new_batch_cache(self.max_rows)
        cache = self.cache
        started = time.perf_counter()
        prefixes = [s.partial.prefix() if s.partial is not None else self._lookup_prefix(s) for s in group]
        row0 = cache.reserve_rows([len(s.tokens) for s in group])
        for i, seq in enumerate(group):
            seq.row = row0 + i
            self.rows.append(seq)
            self.sampler.admit(seq.row, seq.sampling, seq.tokens)
            hit = prefixes[i]
            if hit is not None:
                cache.load_prefix(seq.row, hit[1], hit[2])
                if not seq.resumed and seq.partial is None:
                    seq.cached_tokens = hit[0]
            seq.partial = None
        qlens = [len(s.tokens) - (p[0] if p else 0) for s, p in zip(group, prefixes, strict=True)]
        q = max(qlens)
        pad = self.loaded.pad_token_id
        ids = torch.tensor([[pad] * (q - n) + s.tokens[len(s.tokens) - n :] for s, n in zip(group, qlens, strict=True)])
        positions, mask, cache_position = cache.begin_prefill(row0, qlens)
        try:
            out = self._forward(
                group,
                input_ids=ids.to(self.loaded.device),
                position_ids=positions,
                attention_mask=mask,
                past_key_values=cache,
                cache_position=cache_position,
                use_cache=True,
                logits_to_keep=self._logits_to_keep(group),
            )
        finally:
            cache.end_step(advance=False)
        self._emit_prompt_scores(group, out.logits)
        logits = out.logits[:, -1, :].float()
        elapsed = time.perf_counter() - started
        for i, seq in enumerate(group):
            seq.prompt_evaluated += qlens[i]
            seq.prefill_seconds += elapsed
            seq.decode_started = time.perf_counter()
        self._sample_and_advance(group, logits)

    def _prefill_solo(self, seq: _Seq) -> None:
        from transformers import DynamicCache

        started = time.perf_counter()
        seq.solo_cache = DynamicCache(config=self.loaded.model.config)
        ids = torch.tensor([seq.tokens], device=self.loaded.device)
        out = self._forward([seq], input_ids=ids, past_key_values=seq.solo_cache, use_cache=True,
                            logits_to_keep=self._logits_to_keep([seq]), **seq.req.model_inputs)
        self._emit_prompt_scores([seq], out.logits)
        seq.prompt_evaluated += len(seq.tokens)
        seq.prefill_seconds += time.perf_counter() - started
        seq.decode_started = time.perf_counter()
        seq.row = len(self.rows)
        self.rows.append(seq)
        self.sampler.admit(seq.row, seq.sampling, seq.tokens)
        self._sample_and_advance([seq], out.logits[:, -1, :].float())

    # -- prompt scoring (``prompt_logprobs``: engine/prompt_scoring.py) ------------------------------------------
    @staticmethod
    def _scores_prompt(seq: _Seq) -> bool:
        """Whether this prefill scores the prompt (once: not again after a context shift)."""
        return seq.req.prompt_logprobs and not seq.resumed

    def _logits_to_keep(self, group: list[_Seq]) -> int:
        """0 (every position) for a group that scores its prompts (``prefill_groups`` keeps them apart), else
        only the last position's logits, which sampling needs."""
        return 0 if any(self._scores_prompt(s) for s in group) else 1

    def _emit_prompt_scores(self, group: list[_Seq], logits: torch.Tensor) -> None:
        """``logits`` [rows, q, W] of a prefill: each scoring row's prompt occupies its last ``len(tokens)``
        positions (nothing came from the prefix cache: see ``_lookup_prefix``)."""
        for i, seq in enumerate(group):
            if self._scores_prompt(seq):
                n = len(seq.tokens)
                first, entries = score_prompt(logits[i, -n:], seq.tokens, seq.req.top_logprobs, self.loaded.vocab_size, self.token_bytes)
                seq.req.emit(PromptEvent(first, entries))

    # -- decode ----------------------------------------------------------------------------------------------
    def _decode(self) -> None:
        if not self.loaded.batchable:
            started = time.perf_counter()
            seq = self.rows[0]
            ids = torch.tensor([[seq.tokens[-1]]], device=self.loaded.device)
            out = self._forward([seq], input_ids=ids, past_key_values=seq.solo_cache, use_cache=True)
            self._sample_and_advance([seq], out.logits[:, -1, :].float())
            self.threads.record(time.perf_counter() - started, 1)
            return
        cache = self.cache
        assert cache is not None
        started, batch = time.perf_counter(), cache.rows
        ids = torch.tensor([[s.tokens[-1]] for s in self.rows], device=self.loaded.device)
        logits = self._compiled_step(cache, ids)
        eager = logits is None
        if logits is None:
            logits = self._eager_step(cache, ids)
        self._sample_and_advance(list(self.rows), logits.float())
        elapsed = time.perf_counter() - started
        if eager:  # a compiled step runs with the thread count it was compiled for, whatever the tuner picks
            self.threads.record(elapsed, batch)
        self.chunks.record_decode(elapsed)

    def _compiled_step(self, cache: BatchKVCache, ids: torch.Tensor) -> torch.Tensor | None:
        """The compiled step's logits [rows, V], or ``None`` where it does not apply (a batch size it has no
        graph for, rows with LoRA adapters). A compiled step that fails is logged and not tried again."""
        compiled = self.compiled
        if compiled is None or not compiled.handles(cache.rows) or any(s.adapter_keys for s in self.rows):
            return None
        try:
            return compiled.step(cache, ids)
        except Exception:
            log.exception("%s: the compiled decode step failed; decoding eager from now on", self.loaded.name)
            self.compiled = None
            return None
        finally:
            self.threads.apply()  # the tuner's count again, for the eager steps

    def _eager_step(self, cache: BatchKVCache, ids: torch.Tensor) -> torch.Tensor:
        positions, mask, cache_position = cache.begin_decode()
        try:
            out = self._forward(
                self.rows,
                input_ids=ids,
                position_ids=positions,
                attention_mask=mask,
                past_key_values=cache,
                cache_position=cache_position,
                use_cache=True,
            )
        finally:
            cache.end_step(advance=True)
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def _forward(self, seqs: list[_Seq], **inputs: Any) -> Any:
        """One forward of the model over ``seqs`` (batch position i is ``seqs[i]``), each row with its own
        LoRA adapters."""
        if not any(s.adapter_keys for s in seqs):
            return self.loaded.model(**inputs)
        with routed([s.adapter_keys for s in seqs], self.loaded.device):
            return self.loaded.model(**inputs)

    # -- sampling and bookkeeping ------------------------------------------------------------------------------
    def _sample_and_advance(self, seqs: list[_Seq], logits: torch.Tensor) -> None:
        """``logits`` [len(seqs), V]: one row per sequence, in ``seqs`` order, on the model's device. The whole
        batch is masked, penalized and sampled on that device; the chosen ids (and logprobs) come back to
        the host in one transfer, then each sequence takes its token."""
        vocab = self.loaded.vocab_size
        if logits.shape[-1] > vocab:  # padded embedding rows beyond the tokenizer are never sampled
            logits[:, vocab:] = float("-inf")
        done = [s for s in seqs if s.req.options.max_new_tokens <= s.generated]  # num_predict 0
        live = [i for i, s in enumerate(seqs) if s.req.options.max_new_tokens > s.generated]
        if len(live) < len(seqs):
            logits = logits[live]
        seqs = [seqs[i] for i in live]
        if seqs:
            tokens, entries = self._sample(seqs, logits)
            # penalty counts follow the accepted tokens (before rows move: finishing one moves another)
            self.sampler.accept([s.row for s in seqs], tokens, [s.tokens for s in seqs])
            for seq, token, lp in zip(seqs, tokens, entries, strict=True):
                if lp is not None:
                    seq.logprobs.append(entry_from_row(lp, token, seq.req.top_logprobs, self.token_bytes))
                self._accept(seq, token)
        for seq in done:
            self._finish(seq, "length")

    def _sample(self, seqs: list[_Seq], logits: torch.Tensor) -> tuple[list[int], list[list[float] | None]]:
        """The next token of each sequence, and its logprob row (``batch_logprobs``) where asked for."""
        wants = [i for i, s in enumerate(seqs) if s.req.logprobs]
        # logprobs are the model's own: taken before grammar masks, penalties and temperature
        raw = logits[wants].clone() if wants else None
        constrained = [(i, s.req.grammar) for i, s in enumerate(seqs) if s.req.grammar is not None]
        if constrained:
            from .grammar.compiler import apply_grammar_masks

            apply_grammar_masks(logits, constrained)
        chosen = self.sampler.sample([s.row for s in seqs], logits)  # [n] on the device
        if raw is None:
            return chosen.tolist(), [None] * len(seqs)  # the step's one host sync
        top = max(seqs[i].req.top_logprobs for i in wants)
        picked = chosen[wants] if len(wants) < len(seqs) else chosen
        table = batch_logprobs(raw, picked, top)  # [w, 1 + 2 * top]
        host = torch.cat([chosen.double(), table.flatten()]).tolist()  # the step's one host sync
        tokens = [int(t) for t in host[: len(seqs)]]
        width = table.shape[1]
        entries: list[list[float] | None] = [None] * len(seqs)
        for j, i in enumerate(wants):
            entries[i] = host[len(seqs) + j * width : len(seqs) + (j + 1) * width]
        return tokens, entries

    @functools.cached_property
    def token_bytes(self) -> TokenBytes:
        """Built on the first request that asks for logprobs."""
        return TokenBytes(self.loaded.tokenizer)

    def _accept(self, seq: _Seq, token: int) -> None:
        seq.generated += 1
        grammar = seq.req.grammar
        if grammar is not None:
            try:
                grammar.consume(token)
            except InternalError as exc:  # a token the mask allowed but the grammar rejects: fail this request only
                seq.done = True
                seq.req.emit(ErrorEvent(exc))
                self._remove_row(seq)
                self._release(seq)
                return
        if token in self.loaded.eos_ids:
            self._finish(seq, "stop")
            return
        seq.tokens.append(token)
        text = seq.stops.push(seq.detok.push(token))
        if text:
            self._emit_text(seq, text)
        if seq.stops.stopped or (grammar is not None and grammar.is_finished()):
            self._finish(seq, "stop")
        elif seq.generated >= seq.req.options.max_new_tokens:
            self._finish(seq, "length")
        elif len(seq.tokens) >= seq.req.options.num_ctx:
            self._context_full(seq)

    @staticmethod
    def _emit_text(seq: _Seq, text: str) -> None:
        """Text that is final, with the logprobs of the tokens that made it."""
        seq.req.emit(TextEvent(text, tuple(seq.logprobs)))
        seq.logprobs = []

    def _context_full(self, seq: _Seq) -> None:
        """Ollama's context shift: keep ``num_keep`` tokens, drop half of the rest, continue."""
        opts = seq.req.options
        if not opts.shift or seq.req.model_inputs:  # shifting would cut through an image
            self._finish(seq, "length")
            return
        keep = max(0, min(opts.num_keep, len(seq.tokens) - 2))
        discard = (len(seq.tokens) - keep) // 2
        self._remove_row(seq)
        seq.tokens = seq.tokens[:keep] + seq.tokens[keep + discard :]
        seq.resumed = True
        self.waiting.appendleft(seq)

    def _finish(self, seq: _Seq, reason: str | None) -> None:
        """End ``seq``; ``reason`` None means the client is gone (no events)."""
        if seq.done:
            return
        seq.done = True
        if reason is not None:
            tail = seq.detok.flush()
            text = seq.stops.push(tail) if tail else ""
            if not seq.stops.stopped:
                text += seq.stops.flush()
            if seq.stops.stopped:
                seq.logprobs.clear()  # the tokens of the stop string (held back, never sent) are trimmed too
            if text or seq.logprobs:
                self._emit_text(seq, text)
            seq.req.emit(
                DoneEvent(
                    reason=reason,
                    prompt_tokens=seq.n_prompt,
                    cached_tokens=seq.cached_tokens,
                    prompt_eval_count=seq.prompt_evaluated,
                    prompt_eval_duration=seq.prefill_seconds,
                    eval_count=seq.generated,
                    eval_duration=time.perf_counter() - seq.decode_started if seq.decode_started else 0.0,
                    tokens=list(seq.tokens),
                    stop_sequence=seq.stops.matched,
                )
            )
        self._remember_prefix(seq)
        self._remove_row(seq)
        self._release(seq)

    def _release(self, seq: _Seq) -> None:
        if seq.req.adapters:
            self.loaded.adapters().release(seq.req.adapters)
        self._release_request()

    def _release_request(self) -> None:
        with self._lock:
            self.active -= 1

    def _remove_row(self, seq: _Seq) -> None:
        if seq.row < 0 or seq.row >= len(self.rows) or self.rows[seq.row] is not seq:
            return
        row = seq.row
        if self.cache is not None and self.loaded.batchable:
            self.cache.remove_row(row)
        last = self.rows.pop()
        if last is not seq:
            self.rows[row] = last
            self.sampler.move(last.row, row)
            last.row = row
        else:
            self.sampler.release(row)
        seq.row = -1
        seq.solo_cache = None

    def _fail_all(self, exc: BaseException) -> None:
        for seq in [*self.rows, *self.admitting, *self.waiting, *self.prefilling]:
            if not seq.done:
                seq.done = True
                seq.req.emit(ErrorEvent(exc))
                self._release(seq)
        self.rows.clear()
        self.admitting = []
        self.waiting.clear()
        self.prefilling.clear()
        self.cache = None

    # -- prefix reuse ----------------------------------------------------------------------------------------
    def _lookup_prefix(self, seq: _Seq) -> tuple[int, list[torch.Tensor], list[torch.Tensor]] | None:
        # a prompt that is scored needs the logits of every position, which a cached prefix does not compute
        if self.prefix_cache is None or seq.req.model_inputs or self._scores_prompt(seq):
            return None
        return self.prefix_cache.lookup(seq.tokens, seq.adapter_keys)

    def _remember_prefix(self, seq: _Seq) -> None:
        # Scored prompts are not kept: an evaluation sends thousands, each would push out the chat prefixes
        # the cache is for (and cost a copy of its KV), and no scored prompt can ever read one back.
        if self.prefix_cache is None or self.cache is None or seq.row < 0 or seq.req.model_inputs or seq.req.prompt_logprobs:
            return
        keys, values = self.cache.extract(seq.row)
        n = keys[0].shape[-2]
        self.prefix_cache.store(seq.tokens[:n], keys, values, seq.adapter_keys)
