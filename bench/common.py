"""What several benchmarks share: the machine's name in their reports, SmolLM2 as float32 Safetensors, and how a
script hands its section over."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name and the vector extensions that decide which kernels run (AMD and Intel differ)."""
    from ollama_torch.engine.cpuinfo import cpu_field, cpu_flags, cpuinfo

    info = cpuinfo()
    if info is None:
        return platform.processor() or "unknown CPU"
    name, flags = cpu_field("model name"), cpu_flags()
    vendor = "AMD" if "AuthenticAMD" in info else "Intel" if "GenuineIntel" in info else ""
    have = [label for flag, label in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("amx_tile", "AMX")) if flag in flags]
    # a VM's model name is often just "AMD EPYC": the family tells its cores (19h: Zen 3 without AVX-512, Zen 4 with)
    core = {"23": "Zen 1/2", "25": "Zen 4" if "avx512f" in flags else "Zen 3", "26": "Zen 5"}.get(cpu_field("cpu family"), "")
    extras = ", ".join(([vendor] if vendor and vendor not in name else []) + ([core] if vendor == "AMD" and core else []) + have)
    return f"{name or platform.processor() or 'unknown CPU'}" + (f" ({extras})" if extras else "")


def smollm2_f32(workdir: Path) -> Path:
    """SmolLM2-135M-Instruct as float32 Safetensors: the demo GGUF converted as the store converts it."""
    from converters.gguf_to_hf import convert_gguf_to_hf
    from ollama_torch.demo import demo_gguf

    out = workdir / "smollm2-f32"
    convert_gguf_to_hf(demo_gguf(), out)
    return out


def publish(text: str, out: Path | None) -> int:
    """A script's markdown section: printed, and written to ``out`` (``--out``) for ``bench/run.py``; the exit code."""
    print(text)
    if out:
        out.write_text(text)
    return 0
