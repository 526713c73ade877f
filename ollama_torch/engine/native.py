"""Operators of our own, in C++ (``kernels/``), built at run time for the CPU they run on and loaded into torch.

``ollama_torch::int8_mm`` (``kernels/int8_mm.cpp``) multiplies a few rows of float32 activations by int8 weights
with one scale per output column: the decode steps of an 8-bit model (``Int8WeightLinear``), eager or compiled
(inductor calls it as an extern kernel: its shapes come from a Meta kernel of its own). PyTorch's own weight-only
int8 kernel (``aten._weight_int8pack_mm``) and inductor's loops both read SmolLM2's weights at 5-11 GB/s on a
2-core AMD EPYC (AVX2), where memory gives 30: this one reads them in memory order, widens each weight once for
every row and runs at 24 GB/s (SmolLM2's 210 int8 layers: 5.6 ms against 10-13 at one row; 11 against 15 at
four).

``ollama_torch::int4_mm`` (``kernels/int4_mm.cpp``) does the same for 4-bit layers (``Int4WeightLinear``: float16
scales and mins per group of columns), where PyTorch's int4 kernel takes only bfloat16 rows: as llama.cpp does, it
quantizes the rows to int8 per group and multiplies the codes by them in integers (SmolLM2's compiled step on an
AMD EPYC with AVX-512, one row: 3.7 ms against 5.5 with PyTorch's kernel in bfloat16). ``ollama_torch::f32_mm`` (``kernels/f32_mm.cpp``) multiplies the rows of
the compiled steps of float32 models (``packed.PackedLinear``), where MKL's sgemm of a few rows read the weights at a
third of the memory's speed: each column read once in memory order for a tile of up to 8 rows (SmolLM2's compiled
step at 8 rows: 47-52 -> 36-37 ms against the int8 kernel's loop of two rows at a time). ``ollama_torch::decode_attention``
(``kernels/decode_attention.cpp``) is a float32 compiled step's attention of one token over the cache's window,
where PyTorch's CPU attention took about 60 us a layer for a window of a few hundred columns.

Each is built with the C++ compiler inductor uses (``cpp_compiler``), against torch's own headers and
libraries (8-12 s), once per source (with ``kernels/common.h``), torch version, compiler and CPU (``-march=native``), into
``$XDG_CACHE_HOME/ollama-torch/kernels`` (default ``~/.cache``); later processes load the file. Only on x86-64
CPUs with AVX2, FMA and F16C; elsewhere, with no compiler, or when the build fails (logged once), the callers keep
PyTorch's kernels.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from .cpuinfo import cpu_flags

log = logging.getLogger(__name__)

KERNELS = Path(__file__).parent / "kernels"
_lock = threading.Lock()
_loaded: dict[str, bool] = {}  # source file name -> whether its operators are usable in this process


def cpp_compiler() -> str | None:
    """The C++ compiler inductor builds CPU kernels with (``CXX``, else g++), or ``None`` where there is none."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        return get_cpp_compiler()
    except Exception:
        return None


def kernels_dir() -> Path:
    """Where built operators are kept between processes."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ollama-torch" / "kernels"


def int8_mm_available() -> bool:
    """Whether ``torch.ops.ollama_torch.int8_mm`` can run here (built and loaded on the first call)."""
    return _available("int8_mm.cpp")


def int4_mm_available() -> bool:
    """Whether ``torch.ops.ollama_torch.int4_mm`` can run here (built and loaded on the first call)."""
    return _available("int4_mm.cpp")


def f32_mm_available() -> bool:
    """Whether ``torch.ops.ollama_torch.f32_mm`` can run here (built and loaded on the first call)."""
    return _available("f32_mm.cpp")


def decode_attention_available() -> bool:
    """Whether ``torch.ops.ollama_torch.decode_attention`` can run here (built and loaded on the first call)."""
    return _available("decode_attention.cpp")


def _available(source: str) -> bool:
    with _lock:
        if source not in _loaded:
            _loaded[source] = _load(KERNELS / source)
        return _loaded[source]


def _load(source: Path) -> bool:
    if platform.machine() not in ("x86_64", "AMD64") or not {"avx2", "fma", "f16c"} <= cpu_flags():
        return False
    cxx = cpp_compiler()
    if cxx is None:
        log.info("no C++ compiler: %s is not built and PyTorch's kernels run instead", source.name)
        return False
    try:
        path = _build(source, cxx)
        torch.ops.load_library(str(path))
    except Exception:
        log.warning("building %s failed; PyTorch's kernels run instead", source.name, exc_info=True)
        return False
    return True


@functools.cache
def _compiler_version(cxx: str) -> str:
    """What ``cxx --version`` prints: part of every kernel's build key, asked once per process."""
    return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout


def _build(source: Path, cxx: str, march: str = "native") -> Path:
    """The shared library of ``source`` for this torch, compiler and CPU, built unless it exists. ``march`` is the
    instruction set the compiler may use: this CPU's, or an older one's (the tests build ``x86-64-v3``, AVX2 without
    AVX-512, to run the kernels' AVX2 code on a CPU that has AVX-512)."""
    torch_dir = Path(torch.__file__).parent
    include, lib = torch_dir / "include", torch_dir / "lib"
    flags = [
        "-O3", f"-march={march}", "-fopenmp", "-shared", "-fPIC", "-std=c++20", "-w",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
    ]
    version = _compiler_version(cxx)
    headers = [h.read_bytes() for h in sorted(source.parent.glob("*.h"))]
    key = hashlib.sha256(repr((source.read_bytes(), headers, torch.__version__, str(torch_dir), cxx, version, flags,
                               sorted(cpu_flags()))).encode()).hexdigest()[:24]
    path = kernels_dir() / f"{source.stem}-{key}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("building %s for this CPU (once; kept in %s)", source.name, path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        command = [cxx, *flags, "-I", str(source.parent), "-I", str(include), "-I", str(include / "torch" / "csrc" / "api" / "include"), str(source),
                   "-o", tmp, "-L", str(lib), "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{lib}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{cxx} exited with {done.returncode}:\n{done.stderr[-4000:]}")
        os.replace(tmp, path)  # whole or not at all, whoever else builds it at the same time
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
