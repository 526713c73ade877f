"""``Reranker``: one thread per loaded cross-encoder scores (query, document) pairs, as sentence-transformers'
``CrossEncoder.predict`` scores them.

    submit(query, documents) -> queue -> thread: drain every waiting request -> tokenize each pair
        -> sort all pairs by length -> padded, attention-masked forwards in a few chunks
        -> the classifier's one logit per pair -> the CrossEncoder's activation -> per-request scores

Concurrent requests are batched together, as the ``Embedder`` batches embeddings. What ``CrossEncoder``
does, this does (sentence-transformers 6.3, read in its ``cross_encoder/model.py`` and
``base/modules/transformer.py``):

- A pair is tokenized as one input, ``tokenizer(query, document)`` (BERT's token types 0 and 1), truncated
  ``longest_first`` to the model's limit: ``max_seq_length`` of ``sentence_bert_config.json`` for a model
  sentence-transformers saved as a ``CrossEncoder``, else the tokenizer's ``model_max_length`` capped at
  ``max_position_embeddings``. ``do_lower_case`` there lower-cases both texts.
- The score is the activation of the one logit: the ``activation_fn`` recorded in
  ``config_sentence_transformers.json`` (a saved ``CrossEncoder``), else in config.json's
  ``sentence_transformers`` key (how the hub's cross-encoders record ``Identity``), else its legacy
  ``sbert_ce_default_activation_function``; else ``Sigmoid``. A recorded path is used only when it names a
  ``torch.nn`` module (sentence-transformers, without ``trust_remote_code``, falls back to the default for
  any path outside ``torch.``).
- Logits are upcast to float32 before the activation.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InternalError
from .api import RankedDocument
from .embedder import plan_chunks
from .loader import LoadedModel
from .pooling import read_json
from .threads import BatchQueue

log = logging.getLogger(__name__)

UNLOADED = "the reranking model was unloaded"
_NO_LIMIT = 10**8  # a tokenizer's model_max_length at or above this is Transformers' "no limit" placeholder


@dataclass(frozen=True)
class CrossEncoderConfig:
    """What sentence-transformers reads beside the weights to score with a cross-encoder."""

    activation: torch.nn.Module
    activation_source: str  # where it came from, for the log
    max_seq_length: int | None = None
    do_lower_case: bool = False


@dataclass(frozen=True)
class ScoreResult:
    scores: list[float]  # one per document, in order
    prompt_eval_count: int  # tokens fed to the model: every pair, special tokens included, after truncation


@dataclass
class _Job:
    query: str
    documents: list[str]
    future: Future[ScoreResult]


@dataclass(frozen=True)
class _Pair:
    ids: list[int]
    types: list[int] | None  # token types (segment ids), when the tokenizer makes them


def rank(scores: Sequence[float], top_n: int | None) -> tuple[RankedDocument, ...]:
    """The documents best first (ties keep their order), cut to ``top_n`` (None: all of them). A score that is
    NaN or infinite cannot be ranked: a 500, since it is the model's failure, not the request's."""
    if not all(math.isfinite(s) for s in scores):
        raise InternalError("rerank scores contain NaN or Inf values")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return tuple(RankedDocument(i, float(scores[i])) for i in order[:top_n])


# -- the model's sentence-transformers configuration ---------------------------------------------------------
def _read_json(path: Path) -> Any:
    return read_json(path, "reranking model")


def resolve_activation(path: str) -> torch.nn.Module | None:
    """The ``torch.nn`` module a recorded class path names, made without arguments; None (with a warning) for
    a path outside ``torch.``, as sentence-transformers falls back to its default for one."""
    if not path.startswith("torch."):
        log.warning("activation function %r is not a torch path: using the default", path)
        return None
    module_name, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        raise InternalError(f"unknown activation function {path!r} in the reranking model") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise InternalError(f"unsupported activation function {path!r} in the reranking model: not a torch.nn module")
    module: torch.nn.Module = cls()
    return module


def read_cross_encoder(model_dir: Path, config: Any) -> CrossEncoderConfig:
    """The scoring configuration sentence-transformers' ``CrossEncoder`` would load from ``model_dir``."""
    max_seq_length: int | None = None
    do_lower_case = False
    candidates: list[tuple[str, Any]] = []
    modules = _read_json(model_dir / "modules.json")
    if isinstance(modules, list) and modules and isinstance(modules[0], dict):  # saved as a CrossEncoder
        st_config = _read_json(model_dir / "config_sentence_transformers.json") or {}
        candidates.append(("config_sentence_transformers.json", st_config.get("activation_fn")))
        bert_config = _read_json(model_dir / str(modules[0].get("path") or "") / "sentence_bert_config.json") or {}
        value = bert_config.get("max_seq_length")
        max_seq_length = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
        do_lower_case = bool(bert_config.get("do_lower_case", False))
    st_key = getattr(config, "sentence_transformers", None)
    if isinstance(st_key, dict) and "activation_fn" in st_key:
        candidates.append(("config.json sentence_transformers.activation_fn", st_key["activation_fn"]))
    else:
        candidates.append(("config.json sbert_ce_default_activation_function", getattr(config, "sbert_ce_default_activation_function", None)))
    for source, path in candidates:
        if isinstance(path, str) and (activation := resolve_activation(path)) is not None:
            return CrossEncoderConfig(activation, f"{path} ({source})", max_seq_length, do_lower_case)
    return CrossEncoderConfig(torch.nn.Sigmoid(), "Sigmoid (the default for one label)", max_seq_length, do_lower_case)


# -- the worker ------------------------------------------------------------------------------------------------
class Reranker:
    def __init__(self, loaded: LoadedModel, *, max_batch_size: int = 64, max_batch_tokens: int = 16384) -> None:
        labels = int(getattr(loaded.model.config, "num_labels", 0))
        if labels != 1:
            raise InternalError(f"{loaded.name} has {labels} labels; a reranker has one (a relevance logit)")
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.head = read_cross_encoder(loaded.model_dir, loaded.model.config)
        self.activation = self.head.activation.to(self.device)
        self.max_length = self._max_length()
        self.pad_id = loaded.pad_token_id
        self.left_padding = getattr(self.tokenizer, "padding_side", "right") == "left"
        self._jobs = BatchQueue(f"reranker-{loaded.name}", self._process, unloaded=UNLOADED)
        log.info("reranker for %s: %s, max %s tokens per pair", loaded.name, self.head.activation_source, self.max_length)

    # -- public API ----------------------------------------------------------------------------------
    @property
    def max_rows(self) -> int:
        """Requests scored together before more count as waiting (the scheduler's queue limit)."""
        return self.max_batch_size

    def submit(self, query: str, documents: Sequence[str]) -> Future[ScoreResult]:
        future: Future[ScoreResult] = Future()
        if not documents:
            future.set_result(ScoreResult([], 0))
            return future
        self._jobs.put(_Job(query, list(documents), future))
        return future

    async def score(self, query: str, documents: Sequence[str]) -> ScoreResult:
        """Score each (query, document) pair in one batch with whatever else is waiting. Cancelling the
        awaiting task drops the request if the thread has not started on it yet."""
        return await asyncio.wrap_future(self.submit(query, documents))

    def close(self) -> None:
        """Finish the batch in flight, fail what is still queued, and join the thread."""
        self._jobs.close()

    # -- the thread ----------------------------------------------------------------------------------

    def _process(self, jobs: list[_Job]) -> None:
        ready: list[tuple[_Job, list[_Pair]]] = []
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue  # its client went away while it waited
            try:
                ready.append((job, self._tokenize(job)))
            except Exception as exc:
                job.future.set_exception(exc)
        if not ready:
            return
        pairs = [pair for _, job_pairs in ready for pair in job_pairs]
        try:
            scores = self._score(pairs).tolist()
        except Exception as exc:
            log.exception("reranking forward failed")
            for job, _ in ready:
                job.future.set_exception(exc)
            return
        start = 0
        for job, job_pairs in ready:
            count = len(job_pairs)
            job.future.set_result(ScoreResult(scores[start : start + count], sum(len(p.ids) for p in job_pairs)))
            start += count

    def _tokenize(self, job: _Job) -> list[_Pair]:
        query, documents = job.query, job.documents
        if self.head.do_lower_case:
            query, documents = query.lower(), [d.lower() for d in documents]
        truncation: dict[str, Any] = (
            {"truncation": "longest_first", "max_length": self.max_length} if self.max_length else {"truncation": False}
        )
        enc = self.tokenizer([query] * len(documents), documents, verbose=False, **truncation)
        types = enc.get("token_type_ids")
        return [_Pair(list(ids), list(types[i]) if types is not None else None) for i, ids in enumerate(enc["input_ids"])]

    def _score(self, pairs: list[_Pair]) -> torch.Tensor:
        """Pairs -> scores ``[N]`` (float32, CPU), in input order."""
        out = torch.empty(len(pairs), dtype=torch.float32)
        lengths = [len(p.ids) for p in pairs]
        for chunk in plan_chunks(lengths, max_batch_size=self.max_batch_size, max_batch_tokens=self.max_batch_tokens):
            out[torch.tensor(chunk)] = self._forward([pairs[i] for i in chunk]).cpu()
        return out

    def _forward(self, rows: list[_Pair]) -> torch.Tensor:
        width = max(len(r.ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, T]
        types = torch.zeros((len(rows), width), dtype=torch.long) if rows[0].types is not None else None  # [B, T]
        for i, row in enumerate(rows):
            span = slice(width - len(row.ids), width) if self.left_padding else slice(0, len(row.ids))
            ids[i, span] = torch.tensor(row.ids, dtype=torch.long)
            mask[i, span] = 1
            if types is not None and row.types is not None:
                types[i, span] = torch.tensor(row.types, dtype=torch.long)
        kwargs: dict[str, torch.Tensor] = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if types is not None:
            kwargs["token_type_ids"] = types.to(self.device)
        with torch.inference_mode():
            logits = self.model(**kwargs).logits  # [B, 1]
            return self.activation(logits.float()).squeeze(-1)  # [B]

    def _max_length(self) -> int | None:
        """Tokens a pair may have, special tokens included (None: nothing bounds it, so nothing is cut):
        sentence-transformers' ``max_seq_length`` when the model records one, else the tokenizer's
        ``model_max_length`` capped at the model's position embeddings."""
        if self.head.max_seq_length:
            return self.head.max_seq_length
        limit = getattr(self.tokenizer, "model_max_length", None)
        limit = limit if isinstance(limit, int) and 0 < limit < _NO_LIMIT else None
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            limit = min(limit, positions) if limit else positions
        return limit
