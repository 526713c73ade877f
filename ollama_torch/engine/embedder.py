"""``Embedder``: one thread per loaded embedding model turns texts into sentence vectors.

    submit(texts) -> queue -> thread: drain every waiting request -> tokenize (truncate / check length)
                  -> sort all sequences by length -> padded, attention-masked forwards in a few chunks
                  -> pool each row with the model's sentence-transformers head -> per-request results

Concurrent requests are batched together. The model and its tokenizer are used from the thread only
(Hugging Face fast tokenizers must not be reconfigured from several threads at once). Vectors come back
as the model's pipeline leaves them (its own ``Normalize`` module included, as sentence-transformers does);
the L2 normalization of ``/api/embed`` is the HTTP layer's business, because ``/api/embeddings`` skips it.

A completion model embeds too, as in Ollama (its embed handlers ask no capability): over the same loaded
weights, its decoder stack without the LM head gives the final (normed) hidden states, pooled at the last
token, which is what Ollama's llama.cpp runner returns for a model without a pooling type.

Limits follow Ollama's ``EmbedHandler``: an input may have ``min(num_ctx, the model's maximum)`` tokens,
its special tokens included, so ``num_ctx`` 3 leaves one token of text between ``[CLS]`` and ``[SEP]``.
A ``num_ctx`` of 0 or less bounds nothing there, but Ollama's runner then has its minimum context of 4
tokens, which a longer input cannot be cut to fit. ``num_ctx=None`` (the default) is just the model's maximum.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import BadRequest
from .loader import LoadedModel
from .lora import AdapterRef, routed
from .options import MIN_NUM_CTX
from .pooling import SentencePipeline, read_pipeline
from .threads import BatchQueue

log = logging.getLogger(__name__)

# Ollama's texts (server/routes.go EmbedHandler; llama-server's message for an empty token list).
TOO_LONG = "the input length exceeds the context length"
NOTHING_LEFT = "input after truncation exceeds maximum context length"
CANNOT_TRUNCATE = "input exceeds maximum context length and cannot be truncated further"
EMPTY_INPUT = "Input content cannot be empty"

# The chunking below trades padding (pure wasted compute: on CPU a forward costs in proportion to its
# padded tokens) against the fixed cost of each extra forward, counted here as this many padded tokens.
# A rough figure: on MiniLM over 2 cores anything from 48 to 400 ran about equally well, and all beat
# one 64-row batch padded to its longest row by ~1.7x; the fixed cost grows when other processes compete
# for the cores, so we stay in the middle.
_FORWARD_OVERHEAD_TOKENS = 128


@dataclass(frozen=True)
class EmbedResult:
    vectors: list[list[float]]  # one per input, in order; not L2-normalized unless the model's head does it
    prompt_eval_count: int  # tokens fed to the model, special tokens included


@dataclass
class _Job:
    texts: list[str]
    truncate: bool
    num_ctx: int | None
    future: Future[EmbedResult]
    adapters: tuple[AdapterRef, ...] = ()  # a base+adapter model's LoRA adapters, applied to every input


def is_decoder(config: Any) -> bool:
    """Decoder-only architectures pool their last token; encoders (BERT and kin) do not run causally."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_encoder_decoder", False):
        return False
    model_type = getattr(config, "model_type", "")
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return False
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return True
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in getattr(config, "architectures", None) or ())


def plan_chunks(lengths: Sequence[int], *, max_batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Split sequences into forward passes: indices sorted longest first, cut where padding would cost more
    than another forward (a small dynamic programme over the sorted lengths)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[k]: cost of the first k sequences
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end - 1, -1, -1):
            size, longest = end - start, lengths[order[start]]
            if size > max_batch_size or (size > 1 and size * longest > max_batch_tokens):
                break
            cost = best[start] + size * longest + _FORWARD_OVERHEAD_TOKENS
            if cost < best[end]:
                best[end], cut[end] = cost, start
    chunks: list[list[int]] = []
    end = n
    while end > 0:
        chunks.append(order[cut[end] : end])
        end = cut[end]
    return chunks[::-1]


def hidden_state_module(model: Any) -> Any:
    """A completion model's decoder stack without its LM head: its ``last_hidden_state`` is the final
    normed hidden state (llama.cpp's embeddings output), and no logits over the vocabulary are computed."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    return decoder if decoder is not None else model.base_model


class Embedder:
    def __init__(self, loaded: LoadedModel, *, max_batch_size: int = 64, max_batch_tokens: int = 16384) -> None:
        self.loaded = loaded
        completion = loaded.kind != "embedding"  # a generation model's weights, embedding as Ollama does
        self.model = hidden_state_module(loaded.model) if completion else loaded.model
        # Truncation is state on a fast tokenizer: a completion model's own, shared with its prompt threads,
        # must not be switched under them, so this thread gets a copy.
        self.tokenizer = copy.deepcopy(loaded.tokenizer) if completion else loaded.tokenizer
        self.device = loaded.device
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.decoder = completion or is_decoder(loaded.model.config)
        self.pipeline: SentencePipeline = read_pipeline(loaded.model_dir, decoder=self.decoder)
        self.max_length = self._max_length()
        self.special_tokens = int(self.tokenizer.num_special_tokens_to_add(pair=False))
        self.pad_id = loaded.pad_token_id
        self.left_padding = self.decoder or getattr(self.tokenizer, "padding_side", "right") == "left"
        params = inspect.signature(self.model.forward).parameters
        self._forward_kwargs: dict[str, Any] = {"use_cache": False} if "use_cache" in params else {}
        # Decoders get positions counted from each row's first real token, so a left-padded row is
        # computed exactly as it would be alone (absolute-position encoders are right-padded instead).
        self._pass_positions = self.decoder and "position_ids" in params
        # The thread exists only while there is work (see OnDemandThread: an idle thread that has run torch
        # work slows every other thread's parallel regions).
        self._jobs = BatchQueue(f"embedder-{loaded.name}", self._process, unloaded="the embedding model was unloaded")
        log.info(
            "embedder for %s: pooling %s%s%s (%s), max %d tokens",
            loaded.name,
            "+".join(self.pipeline.pooling),
            f" + {len(self.pipeline.dense)} dense" if self.pipeline.dense else "",
            " + normalize" if self.pipeline.normalize else "",
            self.pipeline.source,
            self.max_length,
        )

    # -- public API ----------------------------------------------------------------------------------
    @property
    def max_rows(self) -> int:
        """Requests embedded together before more count as waiting (the scheduler's queue limit)."""
        return self.max_batch_size

    @property
    def dimension(self) -> int:
        if self.pipeline.dense:
            return int(self.pipeline.dense[-1].weight.shape[0])
        return int(self.model.config.get_text_config().hidden_size) * len(self.pipeline.pooling)

    def limit(self, num_ctx: int | None) -> int:
        """Tokens an input may have, special tokens included: ``min(num_ctx, the model's maximum)``
        (``num_ctx`` None or ``<= 0``: the model's maximum, as Ollama's handler)."""
        return min(num_ctx, self.max_length) if num_ctx is not None and num_ctx > 0 else self.max_length

    def submit(
        self, texts: Sequence[str], *, truncate: bool = True, num_ctx: int | None = None, adapters: tuple[AdapterRef, ...] = ()
    ) -> Future[EmbedResult]:
        future: Future[EmbedResult] = Future()
        if not texts:
            future.set_result(EmbedResult([], 0))
            return future
        self._jobs.put(_Job(list(texts), truncate, num_ctx, future, adapters))
        return future

    async def embed(
        self, texts: Sequence[str], *, truncate: bool = True, num_ctx: int | None = None, adapters: tuple[AdapterRef, ...] = ()
    ) -> EmbedResult:
        """Embed ``texts`` in one batch with whatever else is waiting. Cancelling the awaiting task drops
        the request if the thread has not started on it yet."""
        return await asyncio.wrap_future(self.submit(texts, truncate=truncate, num_ctx=num_ctx, adapters=adapters))

    def embed_sync(self, texts: Sequence[str], *, truncate: bool = True, num_ctx: int | None = None) -> EmbedResult:
        return self.submit(texts, truncate=truncate, num_ctx=num_ctx).result()

    def close(self) -> None:
        """Finish the batch in flight, fail what is still queued, and join the thread."""
        self._jobs.close()

    # -- the thread ----------------------------------------------------------------------------------

    def _process(self, jobs: list[_Job]) -> None:
        ready: list[tuple[_Job, list[list[int]]]] = []
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue  # its client went away while it waited
            try:
                ready.append((job, self._tokenize(job)))
            except Exception as exc:
                job.future.set_exception(exc)
        if not ready:
            return
        sequences = [ids for _, job_ids in ready for ids in job_ids]
        adapter_sets = [tuple(a.key for a in job.adapters) for job, job_ids in ready for _ in job_ids]
        refs = [ref for job, _ in ready for ref in job.adapters]
        try:
            if refs:
                self.loaded.adapters().acquire(refs)
            try:
                vectors = self._encode(sequences, adapter_sets).tolist()
            finally:
                if refs:
                    self.loaded.adapters().release(refs)
        except Exception as exc:
            log.exception("embedding forward failed")
            for job, _ in ready:
                job.future.set_exception(exc)
            return
        start = 0
        for job, job_ids in ready:
            count = len(job_ids)
            job.future.set_result(EmbedResult(vectors[start : start + count], sum(len(ids) for ids in job_ids)))
            start += count

    def _tokenize(self, job: _Job) -> list[list[int]]:
        limit = self.limit(job.num_ctx)
        if limit <= self.special_tokens:
            raise BadRequest(NOTHING_LEFT)
        texts = [t.lower() for t in job.texts] if self.pipeline.do_lower_case else job.texts
        if job.truncate:
            enc = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=limit, verbose=False)
        else:
            enc = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
        ids: list[list[int]] = [list(x) for x in enc["input_ids"]]
        if any(len(x) > limit for x in ids):
            raise BadRequest(TOO_LONG)
        if job.num_ctx is not None and job.num_ctx <= 0 and any(len(x) > MIN_NUM_CTX for x in ids):
            # Ollama's runner (context 4) refuses it; its retry cuts to the batch size, which changes nothing.
            raise BadRequest(CANNOT_TRUNCATE if job.truncate else TOO_LONG)
        if any(not x for x in ids):
            raise BadRequest(EMPTY_INPUT)
        return ids

    def _encode(self, sequences: list[list[int]], adapter_sets: list[tuple[str, ...]] | None = None) -> torch.Tensor:
        """Token id lists -> sentence vectors ``[N, D]`` (float32, CPU), in input order; ``adapter_sets[i]``
        are the LoRA adapters sequence i runs with."""
        out: torch.Tensor | None = None
        lengths = [len(s) for s in sequences]
        sets = adapter_sets or [()] * len(sequences)
        for chunk in plan_chunks(lengths, max_batch_size=self.max_batch_size, max_batch_tokens=self.max_batch_tokens):
            with routed([sets[i] for i in chunk], self.device):
                vectors = self._forward([sequences[i] for i in chunk]).cpu()
            if out is None:
                out = torch.empty(len(sequences), vectors.shape[-1], dtype=torch.float32)
            out[torch.tensor(chunk)] = vectors
        assert out is not None  # sequences is never empty here
        return out

    def _forward(self, rows: list[list[int]]) -> torch.Tensor:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, T]
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if self.left_padding else slice(0, len(row))
            ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        kwargs = dict(self._forward_kwargs)
        if self._pass_positions:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            output = self.model(input_ids=ids, attention_mask=mask, **kwargs)
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]  # [B, T, H]
            return self.pipeline.apply(hidden, mask)  # [B, D]

    def _max_length(self) -> int:
        """sentence-transformers' rule: ``max_seq_length`` from sentence_bert_config.json, else the tokenizer's
        ``model_max_length`` capped at the model's position embeddings."""
        ctx = self.loaded.context_length
        if self.pipeline.max_seq_length:
            return min(self.pipeline.max_seq_length, ctx) if ctx > 0 else self.pipeline.max_seq_length
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        tok_max = tok_max if isinstance(tok_max, int) and 0 < tok_max < 10**8 else None
        candidates = [c for c in (tok_max, ctx) if c and c > 0]
        return min(candidates) if candidates else 512
