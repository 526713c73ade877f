"""The ollama-torch CLI against the real server process: create from a Modelfile, list, show, run, cp, rm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow


def cli(server: ServerProcess, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{server.port}"}
    return subprocess.run([sys.executable, "-m", "ollama_torch", *args], env=env, input=stdin, capture_output=True, text=True, timeout=300)


def test_cli_round_trip(server: ServerProcess, smollm2: str, smollm2_gguf: Path, tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f'FROM {smollm2}\nSYSTEM """You answer in French."""\nPARAMETER temperature 0\nPARAMETER num_predict 6\n')
    out = cli(server, "create", "french", "-f", str(modelfile))
    assert out.returncode == 0, out.stderr
    assert "success" in out.stderr or "success" in out.stdout
    listed = cli(server, "list")
    assert listed.returncode == 0 and "french:latest" in listed.stdout and "smollm2:135m" in listed.stdout
    shown = cli(server, "show", "french", "--modelfile")
    assert "You answer in French." in shown.stdout and "PARAMETER temperature 0" in shown.stdout
    run = cli(server, "run", "french", "Say hello.")
    assert run.returncode == 0 and run.stdout.strip(), run.stderr
    assert cli(server, "cp", "french", "french2").returncode == 0
    assert cli(server, "rm", "french", "french2").returncode == 0
    assert "french" not in cli(server, "list").stdout
    missing = cli(server, "show", "nope")
    assert missing.returncode == 1 and "Error: model 'nope:latest' not found" in missing.stderr
    # A GGUF file as FROM: the CLI uploads it as a blob (already present: HEAD answers 200) and creates.
    gguf_mf = tmp_path / "Modelfile.gguf"
    gguf_mf.write_text(f"FROM {smollm2_gguf}\n")
    out = cli(server, "create", "from-gguf", "-f", str(gguf_mf))
    assert out.returncode == 0, out.stderr
    assert cli(server, "rm", "from-gguf").returncode == 0
