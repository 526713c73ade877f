"""Compiled decode steps (``OLLAMA_TORCH_COMPILE``): one token for rows ``[0, B)`` of the batch KV cache,
with static shapes, through ``torch.compile``.

The eager decode step reads only the cache's live columns, so its shapes change every step; the compiled
step attends over a window of the cache's buffers (``[B, kv_heads, window, head_dim]`` per layer, the
window a power of two past the written column) and hides the columns that are not a row's with the
additive mask, writes the step's keys and values with ``index_copy_`` at the one column every row writes
(the cache is right-aligned: see ``cache.py``), and takes the column and the positions as tensors, so
nothing in the graph depends on the step. It takes rows ``[0, B)`` of the whole buffers and narrows them to
the window (the mask's width) itself: the buffers' capacity and the window are dynamic dimensions, one graph
serves every width, and the window's strides are always the buffers' (the step is traced on buffers wider
than its window, as a long request leaves them). The batch size is static: each bucket (a row count the
step is compiled for) is its own graph, and a batch between buckets runs eager.

Where the compile pays (measured on SmolLM2, 2-core Xeon): on a CPU, batches of 1, 2 and 4 rows (inductor
turns a step's ~1,200 small ops into fused C++ loops; q8_0 at 2 rows 99-107 tok/s compiled vs 74-78 eager,
at 4 rows 170-174 vs 135-141; float32 66-72 vs 52-61 and 79-87 vs 72-74). At 8 rows the eager step with
MKL-packed weights is as fast (q8_0 166-188 vs 165-172) and a float32 model's packed layers do not compile,
so CPU buckets are 1 and the powers of two up to 4 that stay within half the batch (the rows the packed
layers leave to plain matmuls). Where the packing is oneDNN's (``packed.packing_backend``: AMD's CPUs) and the batch
holds 8 rows, 8 is a bucket too: there a compiled float32 step multiplies with our own kernel, and 8 streams of
SmolLM2 in float32 ran 145-151 tok/s compiled against 105-111 eager on a 2-core AMD EPYC (the compile takes
about 50 s more). On CUDA every power of two up to the batch, captured as CUDA graphs
(``mode="reduce-overhead"``), where a small model's step is all launch overhead. Each bucket compiles on
its own: one that fails is logged and its batches run eager.

On a CPU the step is compiled ahead of time (dynamo's ``aot_compile``) and saved as one file per bucket,
``<models>/compiled/<versions>/decode-<key>.pt2``, keyed by everything the compiled code depends on (``artifact_key``:
the model's class, config, module tree and tensor shapes and dtypes, the rows, the thread count and
instruction set the kernels are built for, the torch and Transformers versions, and the source of the code
the step runs that those versions do not pin: this module's and that of layers from elsewhere, such as our
int8 and int4 layers) and not by the weights,
which are inputs: fine-tunes of one model share a file. A later load, or a restart, loads the file (0.4-0.6 s
a bucket, the first about 2 s with inductor's imports, on a 2-core AMD EPYC) instead of tracing the model again
(about 50 s), and the step runs without dynamo's guard checks, which cost about a millisecond a step: the key and
the inputs this module builds are what makes a call valid. So the file is saved without guards (``_no_guards``):
a load rebuilt each one kept, about 1,300 for SmolLM2, which took 0.3 s of a bucket's 0.7 s (f32's load after a
restart: 7.9 -> 6.4 s). A file that fails to load is compiled again; a loaded one is checked against the eager
step once.
Inductor keeps its compiled kernels in its cache directory (``TORCHINDUCTOR_CACHE_DIR``), which the server
points at the same directory: a step loaded from its file finds them there. The directory is per torch and
Transformers version (``versioned_dir``), and other versions' directories are removed when a model compiles:
an upgrade leaves nothing behind.

By default (``OLLAMA_TORCH_COMPILE`` unset) a CPU model serves eager as soon as it loads, while a thread of
``ModelWorker`` loads its saved steps or, where some are missing, has a forked child process compile and save
them (``compile_in_child``; one model at a time, ``BACKGROUND_COMPILE``) and then loads them;
``OLLAMA_TORCH_COMPILE=1`` compiles as the model loads, on any device.

A grouped-query model's one-token attention is traced on its key/value heads (``_decode_attention``), as
Transformers' eager step runs it: traced as Transformers writes it, it copied the window's keys and values to
every query head first (SmolLM2 q8_0 on the AMD EPYC: 12.2 -> 10.8 ms a step). A float32 CPU step attends with our
kernel (``ollama_torch::decode_attention``, native.py) where it is built: PyTorch's CPU attention took about 60 us a
layer in the step over a window of a few hundred columns. With it and the wrapper's size checks gone, SmolLM2's
float32 step on the 2-core EPYC (the steps timed alternately in one process) went from 23.3 to 21.2 ms at one
row and from 55.8 to 49.7 ms at eight.

On a CPU the model's sibling layers that read the same input (q/k/v, gate/up) are fused first (``fused.py``): a
compiled step multiplies each set with one call of our kernel. SmolLM2's steps on the 2-core EPYC (the fused and the
plain step alternated in one process, the same logits to the bit): one row float32 22.9 -> 21.4 ms, q8_0 11.0 -> 9.6,
q4_K_M 8.8 -> 7.9; eight rows float32 35.4 -> 33.4.

On CUDA the step is compiled in memory at each load (``torch.compile`` with CUDA graphs; saving CUDA-graph
steps has not been run on a GPU here), reusing inductor's cached kernels. Greedy tokens equal the eager
step's (tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from .cache import BatchKVCache

log = logging.getLogger(__name__)

# Held by a background compile (worker.py): one at a time, since on a small CPU each takes every core that
# serving leaves.
BACKGROUND_COMPILE = threading.Lock()


def versioned_dir(root: Path) -> Path:
    """The directory under ``root`` (``<models>/compiled``) for this torch and Transformers, made if missing;
    everything else in ``root`` is removed: what other versions compiled (which nothing loads again once they
    are upgraded) and steps saved before directories were per version. Removing a directory another server
    process is using costs it only a compile at its next load."""
    import shutil

    import transformers

    name = f"torch-{torch.__version__}-transformers-{transformers.__version__}".replace("+", "_")
    path = root / name
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name == name:
                continue
            log.info("removing %s (compiled by other versions of torch or Transformers)", entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def use_cache_dir(path: Path) -> str:
    """Point inductor's on-disk cache at ``path``, unless ``TORCHINDUCTOR_CACHE_DIR`` names another directory
    than inductor's default (which inductor itself writes into the environment once it has looked); returns
    the directory in effect."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        path.mkdir(parents=True, exist_ok=True)
        current = os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path.absolute())
    return current


class _ColumnLayer(CacheLayerMixin):
    is_sliding = False
    is_compileable = True

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, column: torch.Tensor, width: int) -> None:
        super().__init__()
        self.buffers, self.column, self.width = (keys, values), column, width
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.buffers
        # written in the whole buffers (in place: written through a narrowed view, the window would be copied
        # out and back), read in the window
        keys.index_copy_(2, self.column, key_states)
        values.index_copy_(2, self.column, value_states)
        return keys.narrow(2, 0, self.width), values.narrow(2, 0, self.width)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.width, 0

    def get_seq_length(self) -> int:
        return 0

    def get_max_length(self) -> int:
        return -1


class _ColumnCache(Cache):
    """The step's view of the batch cache: whole buffers, one column written, ``width`` columns read."""

    def __init__(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], column: torch.Tensor, width: int) -> None:
        super().__init__(layers=[_ColumnLayer(k, v, column, width) for k, v in zip(keys, values, strict=True)])


# Whether ``ollama_torch::decode_attention`` (native.py) is loaded in this process: set by ``CompiledDecode`` on a CPU,
# read by ``_decode_attention`` as the step is traced
_own_attention = False


def _decode_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Transformers' SDPA attention, except in a compiled one-token step. There a float32 CPU model attends with our
    kernel (``ollama_torch::decode_attention``, where PyTorch's CPU attention spent about 60 us a layer on a window of a
    few hundred columns), and a grouped-query model otherwise attends on the key/value heads, its query heads folded
    into the query length, as Transformers' own eager step does (``pack_gqa``, which it skips under dynamo): traced as
    it is, each layer copied its keys and values to every query head (``repeat_kv``: SmolLM2's 3 heads to 9, over the
    whole window) and attended over the copies. Both take the query heads of a key/value head side by side."""
    groups = getattr(module, "num_key_value_groups", 1)
    if (torch.compiler.is_compiling() and query.shape[2] == 1 and kwargs.get("position_bias") is None
            and kwargs.get("softcap") is None and not kwargs.get("output_attentions")
            and (attention_mask is None or attention_mask.shape[1] == attention_mask.shape[2] == 1)):
        rows, heads, _, dim = query.shape
        grouped = query.reshape(rows, heads // groups, groups, dim)
        if (_own_attention and query.device.type == "cpu" and attention_mask is not None
                and query.dtype == key.dtype == value.dtype == attention_mask.dtype == torch.float32
                and key.shape == value.shape and key.shape[-1] == dim):  # not where values are wider (MLA)
            out = torch.ops.ollama_torch.decode_attention(grouped.contiguous(), key, value, attention_mask,
                                                          kwargs.get("scaling") or dim ** -0.5)
            return out.reshape(rows, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None
        if groups > 1:
            out = torch.nn.functional.scaled_dot_product_attention(
                grouped, key, value, attn_mask=attention_mask, dropout_p=0.0, scale=kwargs.get("scaling"))
            return out.reshape(rows, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _install_decode_attention() -> None:
    """Make ``_decode_attention`` the SDPA attention of every model in this process (outside dynamo it is
    Transformers' own)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    ALL_ATTENTION_FUNCTIONS["sdpa"] = _decode_attention


def buckets_for(device: torch.device, max_rows: int) -> tuple[int, ...]:
    """The row counts to compile for on ``device`` (see the module's docstring)."""
    if device.type == "cuda":
        sizes, b = [], 1
        while b < max_rows:
            sizes.append(b)
            b *= 2
        return (*sizes, max_rows)
    from .packed import packing_backend

    eight = (8,) if max_rows >= 8 and packing_backend() != "mkl" else ()  # see the module's docstring
    return (*(b for b in (1, 2, 4) if b == 1 or b <= max_rows // 2), *eight)


def _forward(model: Any, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, column: torch.Tensor,
             keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    """The step that is compiled: the model's one-token forward over the cache's window (the mask's width) of
    each layer's buffers (whole, the capacity a dynamic dimension); logits [rows, V]."""
    out = model(
        input_ids=ids, position_ids=positions, attention_mask=mask,
        past_key_values=_ColumnCache(keys, values, column, mask.shape[-1]), cache_position=column, use_cache=True,
    )
    logits: torch.Tensor = out.logits[:, -1, :]
    return logits


def artifact_key(model: Any, device: torch.device, rows: int, threads: int) -> str:
    """What a saved step's compiled code depends on, hashed: not the weights (inputs of the step), but the
    model's class, config, modules and the shape, dtype and device of each of its tensors, the row count,
    the thread count and vector instruction set its CPU kernels are built for, and the versions of the
    libraries that traced and compiled it."""
    import transformers
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    config = model.config.to_dict()
    for name in ("_name_or_path", "name_or_path", "transformers_version"):
        config.pop(name, None)
    parts: list[object] = [
        torch.__version__, transformers.__version__, device.type, rows, threads, str(pick_vec_isa()),
        _own_attention and device.type == "cpu",
        type(model).__module__, type(model).__qualname__, getattr(model.config, "_attn_implementation", None),
        json.dumps(config, sort_keys=True, default=str),
    ]
    parts += [(name, type(module).__module__, type(module).__qualname__) for name, module in model.named_modules()]
    tensors = [*model.named_parameters(), *model.named_buffers()]
    parts += [(name, tuple(t.shape), str(t.dtype), t.device.type) for name, t in tensors]
    parts += source_digests({type(module) for module in model.modules()})
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def source_digests(types: set[type]) -> list[tuple[str, str]]:
    """The code a step traces that the torch and Transformers versions do not pin: this module's (the step's
    cache) and the source files of ``types`` from anywhere else (our quantized layers, bitsandbytes', PEFT's),
    each as (module, digest of its file), so that a step saved before an upgrade of that code is compiled
    again rather than loaded."""
    import inspect
    import sys

    names = {__name__} | {t.__module__ for t in types if t.__module__.split(".")[0] not in ("torch", "transformers")}
    digests = []
    for name in sorted(names):
        try:
            path = inspect.getsourcefile(sys.modules[name])
            digests.append((name, hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else ""))
        except (KeyError, TypeError, OSError):
            digests.append((name, ""))
    return digests


class CompiledDecode:
    """The compiled one-token step of a loaded model over its batch cache, per bucket."""

    def __init__(self, model: Any, device: torch.device, buckets: Sequence[int], saved: Path | None = None,
                 threads: int | None = None) -> None:
        """``saved``: the directory a CPU step is saved in and loaded from (``None``: compiled in memory);
        ``threads``: the intra-op thread count the CPU kernels are compiled for and run with (default: the
        calling thread's torch count)."""
        global _own_attention
        _install_decode_attention()
        if device.type == "cpu" and not _own_attention:
            from .native import decode_attention_available

            _own_attention = decode_attention_available()
        if device.type == "cpu":  # before anything traces or keys the model (fused.py)
            from .fused import fuse_siblings

            fuse_siblings(model)
        self.model = model
        self.device = device
        self.buckets = frozenset(buckets)
        self.saved = saved if device.type == "cpu" else None
        mode = "reduce-overhead" if device.type == "cuda" else "default"
        # Every model's graphs hang off the one ``_forward`` code object (a model of an architecture already
        # compiled reuses its graph: its weights are inputs); leave room for several models' buckets.
        self._jit: Callable[..., torch.Tensor] = torch.compile(  # type: ignore[call-overload]  # (its stubs lack recompile_limit)
            _forward, mode=mode, fullgraph=True, recompile_limit=64)
        self._steps: dict[int, Callable[..., torch.Tensor]] = {}  # rows -> the step that runs them
        self.origins: dict[int, str] = {}  # rows -> how its step was made: "loaded", "compiled" or "in memory"
        self.threads = threads if threads is not None else torch.get_num_threads()
        self._marked: dict[tuple[int, int], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def handles(self, rows: int) -> bool:
        return rows in self.buckets

    def _views(self, cache: BatchKVCache, rows: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Rows ``[0, rows)`` of every layer's buffers, made once per buffer set, the capacity marked dynamic.
        The step narrows them to its window itself: views as wide as the window would have the buffers'
        strides, which a step traced where the two were equal (a fresh cache) takes for the window's and
        rejects once a long request has left the buffers wider than the window."""
        key = (rows, id(cache.keys[0]))
        views = self._marked.get(key)
        if views is None:
            self._marked = {k: v for k, v in self._marked.items() if k[0] != rows}  # not kept alive
            keys = [t[:rows] for t in cache.keys]
            values = [t[:rows] for t in cache.values]
            for t in (*keys, *values):
                torch._dynamo.mark_dynamic(t, 2)
                if t.is_cuda:  # CUDA graphs may then write them in place instead of copying them in and out
                    torch._dynamo.mark_static_address(t)
            views = self._marked[key] = (keys, values)
        return views

    def step(self, cache: BatchKVCache, ids: torch.Tensor) -> torch.Tensor:
        """One decode step of rows ``[0, cache.rows)`` (``ids`` [rows, 1]); advances the cache, returns the
        last position's logits [rows, V]."""
        rows = cache.rows
        if torch.get_num_threads() != self.threads:  # inductor's CPU kernels are compiled for a thread count
            torch.set_num_threads(self.threads)
        inputs = self._inputs(cache, ids)
        try:
            logits = self._step_for(rows, inputs)(*inputs)
        except BaseException:
            cache.end_step(advance=False)  # the eager step that takes over writes the same column
            raise
        cache.end_step(advance=True)
        return logits.clone() if logits.is_cuda else logits  # a CUDA graph's output is overwritten by its next replay

    def _inputs(self, cache: BatchKVCache, ids: torch.Tensor) -> tuple[Any, ...]:
        """The step's arguments for rows ``[0, cache.rows)``; the cache's step has begun (``end_step`` ends it)."""
        positions, column, mask = cache.begin_static_decode()
        torch._dynamo.mark_dynamic(mask, 3)
        keys, values = self._views(cache, cache.rows)
        return (self.model, ids, positions, mask, column, keys, values)

    def _step_for(self, rows: int, inputs: tuple[Any, ...]) -> Callable[..., torch.Tensor]:
        step = self._steps.get(rows)
        if step is None:
            step = self._steps[rows] = self._load_or_save(rows, inputs) if self.saved is not None else self._jit
            self.origins.setdefault(rows, "in memory")
        return step

    def path(self, rows: int) -> Path | None:
        """The file the step for ``rows`` is saved in (``None`` where steps are compiled in memory)."""
        if self.saved is None:
            return None
        return self.saved / f"decode-{artifact_key(self.model, self.device, rows, self.threads)}.pt2"

    def is_saved(self, rows: int) -> bool:
        """The step for ``rows`` has a saved file to load."""
        path = self.path(rows)
        return path is not None and path.exists()

    def all_saved(self) -> bool:
        """Every bucket's step has a saved file to load (which a load then only checks)."""
        return all(self.is_saved(rows) for rows in self.buckets)

    def _load_or_save(self, rows: int, inputs: tuple[Any, ...]) -> Callable[..., torch.Tensor]:
        """The saved step for ``rows``: loaded from its file, or compiled ahead of time (traced on ``inputs``)
        and saved; compiled in memory where it cannot be compiled ahead of time."""
        path = self.path(rows)
        assert path is not None
        if path.exists():
            try:
                with path.open("rb") as f:
                    loaded: Any = torch.compiler.load_compiled_function(f)  # an AOTCompiledFunction
                loaded.disable_guard_check()  # the key is the check (see the module's docstring)
                self.origins[rows] = "loaded"
                return loaded
            except Exception:
                log.warning("the saved decode step %s could not be loaded; compiling it again", path, exc_info=True)
        try:
            ahead: Any = torch.compile(
                _forward, fullgraph=True, options={"guard_filter_fn": _no_guards})
            import torch._inductor.config as inductor_config

            # cpp.threads: the count the key names, whatever thread compiles. size_asserts: the wrapper checks the
            # shape and strides of every input and extern kernel's output at every call (578 checks a step for
            # SmolLM2, about 1 ms of its 21), which the key and the inputs this module builds make redundant
            with inductor_config.patch({"cpp.threads": self.threads, "size_asserts": False}):
                compiled = ahead.aot_compile((inputs, {}))
        except Exception as exc:  # an architecture dynamo cannot package: compile it in memory at every load
            log.warning("the decode step cannot be compiled ahead of time (%s: %s); compiling it in memory",
                        type(exc).__name__, exc)
            return self._jit
        compiled.disable_guard_check()
        self.origins[rows] = "compiled"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            compiled.save_compiled_function(str(path))  # written to a temporary file, then renamed
        except Exception:
            log.warning("the compiled decode step could not be saved to %s; the next load compiles it again", path,
                        exc_info=True)
        return compiled

    def compile_in_child(self, cache: BatchKVCache, token: int, stop: Callable[[], bool], timeout: float = 3600.0) -> bool:
        """Compile and save every CPU bucket whose file is missing in a forked child process, and wait for it;
        whether it succeeded. The child shares the model's memory (copy-on-write) but not this process's GIL:
        traced in a thread, the step's ~45 s of Python held the serving thread to 1-3 tok/s (measured on
        SmolLM2). It runs torch on one thread, as DataLoader workers do after a fork (OpenMP's threads do
        not survive one), and dies with this process; ``stop()`` true (the model was unloaded) kills it."""
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: only this thread exists; it must end in os._exit
            code = 1
            try:
                _detach_child(parent)
                # inductor resets its process pools after a fork, but not its thread pool, whose threads did not
                # come along: a compile in this process before the fork left one that would never run a job
                from torch._inductor.async_compile import AsyncCompile

                AsyncCompile.pool.cache_clear()
                torch.set_num_threads(1)
                with torch.inference_mode():
                    self._save_missing(cache, token)
                code = 0
            except BaseException:
                log.exception("compiling the decode step in a child process failed")
            finally:
                with contextlib.suppress(BaseException):
                    from torch._inductor.async_compile import shutdown_compile_workers

                    shutdown_compile_workers()
                os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else's wait: its files tell
                return self.all_saved()
            if done:
                return os.waitstatus_to_exitcode(status) == 0
            if stop() or time.monotonic() > deadline:
                if not stop():
                    log.warning("compiling the decode step took over %.0f s; stopped", timeout)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return False
            time.sleep(0.2)

    def _save_missing(self, cache: BatchKVCache, token: int) -> None:
        """Compile ahead of time and save each bucket whose file is missing, traced on a scratch prompt in
        ``cache``, without running it."""
        todo = [rows for rows in sorted(self.buckets) if not self.is_saved(rows)]
        for i, rows in enumerate(todo):
            started = time.perf_counter()
            ids = torch.full((rows, 1), token, dtype=torch.long, device=self.device)

            def trace(cache: BatchKVCache, ids: torch.Tensor) -> torch.Tensor:
                inputs = self._inputs(cache, ids)
                try:
                    self._load_or_save(cache.rows, inputs)
                finally:
                    cache.end_step(advance=False)
                return ids

            try:
                self._scratch_step(cache, ids, trace)
            except Exception:  # each bucket fails on its own
                log.warning("compiling the decode step for %d rows failed", rows, exc_info=True)
                while cache.rows:
                    cache.remove_row(cache.rows - 1)
                continue
            log.info("decode step for %d rows: %s in %.1f s (%d of %d)", rows, self.origins.get(rows, "not compiled"),
                     time.perf_counter() - started, i + 1, len(todo))

    def keep_saved(self) -> None:
        """Drop the buckets without a saved file (their batches run eager)."""
        self.buckets = frozenset(rows for rows in self.buckets if self.is_saved(rows))

    def warm_up(self, cache: BatchKVCache, token: int, stop: Callable[[], bool] | None = None) -> float:
        """Compile (or load) every bucket now (a load pays it, not the first request) on ``cache``, a scratch
        cache of the batch's shape made under ``torch.inference_mode`` as the worker's is (dynamo guards on
        it), for ``threads`` intra-op threads; returns the seconds it took. A step loaded from its file must
        give the eager step's logits on the same input, or it is compiled again. ``stop()`` true before a
        bucket ends it there (the model was unloaded). (On CUDA, graphs are recorded per thread: the worker's
        thread records its own at its first steps.)"""
        started = time.perf_counter()
        todo = sorted(self.buckets)
        for i, rows in enumerate(todo):
            if stop is not None and stop():
                break
            ids = torch.full((rows, 1), token, dtype=torch.long, device=self.device)
            bucket_started = time.perf_counter()
            try:
                logits = self._scratch_step(cache, ids, self.step)
                if self.origins.get(rows) == "loaded" and not _agree(logits, self._scratch_step(cache, ids, self._eager)):
                    path = self.path(rows)
                    log.warning("the saved decode step %s disagrees with the eager step; compiling it again", path)
                    if path is not None:
                        path.unlink(missing_ok=True)
                    del self._steps[rows], self.origins[rows]
                    self._scratch_step(cache, ids, self.step)
                log.info("decode step for %d rows: %s in %.1f s (%d of %d)", rows, self.origins.get(rows),
                         time.perf_counter() - bucket_started, i + 1, len(todo))
            except Exception:
                log.warning("compiling the decode step for %d rows failed; batches of %d rows run eager", rows, rows,
                            exc_info=True)
                self.buckets -= {rows}
                self._steps.pop(rows, None)
                self.origins[rows] = "eager (failed)"
                while cache.rows:
                    cache.remove_row(cache.rows - 1)
        self._marked.clear()  # the scratch cache's views: not kept alive
        if not self.buckets:
            raise RuntimeError("the decode step compiled for no batch size (see the warnings above)")
        return time.perf_counter() - started

    def _scratch_step(self, cache: BatchKVCache, ids: torch.Tensor,
                      step: Callable[[BatchKVCache, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``step`` on rows added to ``cache`` for it, each with a prompt of distinct tokens (prefilled eager),
        reading ``ids``; its logits. (After a prompt of one token, or of one token repeated, a low-precision
        model's activations are so large that two roundings of them give logits 10-30% apart.)"""
        rows, prompt = ids.shape[0], 8
        # buffers wider than the window, as a long request leaves them: a step traced here then reads its window
        # with strides of their own (traced where they were equal, it would take them for the window's)
        while cache.static_window() >= cache.capacity:
            cache.make_room(cache.capacity)
        vocab = int(self.model.get_input_embeddings().weight.shape[0])
        tokens = (torch.arange(1, prompt + 1, device=self.device) * 7919) % vocab
        first = cache.reserve_rows([prompt] * rows)
        positions, mask, cache_position = cache.begin_prefill(first, [prompt] * rows)
        try:
            self.model(input_ids=tokens.expand(rows, prompt), position_ids=positions, attention_mask=mask, past_key_values=cache,
                       cache_position=cache_position, use_cache=True, logits_to_keep=1)
        finally:
            cache.end_step(advance=False)
        for _ in range(2 if self.device.type == "cuda" else 1):  # CUDA graphs record on the second call
            logits = step(cache, ids)
        for row in reversed(range(rows)):
            cache.remove_row(row)
        return logits

    def _eager(self, cache: BatchKVCache, ids: torch.Tensor) -> torch.Tensor:
        positions, mask, cache_position = cache.begin_decode()
        try:
            out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=cache,
                             cache_position=cache_position, use_cache=True)
        finally:
            cache.end_step(advance=True)
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits


def _no_guards(entries: Sequence[Any]) -> list[bool]:
    """Dynamo's guard filter for a step compiled ahead of time: keep none. A loaded step's guards are never
    checked (``disable_guard_check``: the key and the inputs this module builds are the check), but each one kept
    is rebuilt when the file loads: about 1,300 for SmolLM2, 0.3 s of a bucket's 0.7 s."""
    return [False] * len(entries)


def _detach_child(parent: int) -> None:
    """In a child forked by ``parent`` (the server): be killed when the thread that forked it ends (Linux's
    ``PR_SET_PDEATHSIG``), so that a compile does not outlive the server; take SIGINT and SIGTERM's default
    actions, not the server's handlers; and close the sockets and pipes it inherited (the server's listening
    socket, its clients' connections, which must close when the server closes them, and its pipes to other
    processes), keeping standard input, output and error."""
    import ctypes
    import stat

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it ended before the signal was set
        os._exit(1)
    with contextlib.suppress(Exception):
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            with contextlib.suppress(OSError):
                if fd > 2 and (stat.S_ISSOCK(mode := os.fstat(fd).st_mode) or stat.S_ISFIFO(mode)):
                    os.close(fd)


def _agree(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Logits of one step computed two ways agree: within 10% (a bfloat16 model's compiled and eager steps are
    1-3% apart on ``_scratch_step``'s prompt, its logits after two different prompts 50-180%)."""
    got, expected = got.float(), expected.float()
    return bool(torch.isfinite(got).all()) and float((got - expected).norm()) <= 0.1 * float(expected.norm()) + 1e-6
