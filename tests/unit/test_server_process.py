"""The end-to-end helper that reads a compiled server's log for an eager fallback (tests/server_process.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.server_process import ServerProcess

COMPILED = "msg=tiny: decode step compiled in 4.3 s (1 rows: compiled, 2 rows: compiled)"


@pytest.mark.parametrize(("lines", "fallback"), [
    ([COMPILED], ""),
    (["msg=tiny: compiling the decode step for batches of [1, 2] rows in the background, serving uncompiled until then",
      COMPILED], ""),
    (["msg=tiny: loaded"], "no decode step was compiled"),
    (["msg=tiny: compiling the decode step failed; it runs eager"], "no decode step was compiled"),
    (["msg=compiling the decode step for 2 rows failed; batches of 2 rows run eager",
      "msg=tiny: decode step compiled in 4.3 s (1 rows: compiled, 2 rows: eager (failed))"], "batches of 2 rows run eager"),
    ([COMPILED, "msg=tiny: the compiled decode step failed; decoding eager from now on"], "decoding eager"),
    ([COMPILED, "msg=other: compiling the decode step failed; it runs eager"], "it runs eager"),
    (["msg=the saved decode step /m/decode-1.pt2 disagrees with the eager step; compiling it again", COMPILED], "disagrees"),
])
def test_compiled_decode_fallback(tmp_path: Path, lines: list[str], fallback: str) -> None:
    log = tmp_path / "server.log"
    log.write_text("\n".join(lines) + "\n")
    server = ServerProcess(proc=subprocess.Popen(["true"]), port=0, models=tmp_path, log_path=log)
    server.proc.wait()
    found = server.compiled_decode_fallback()
    assert (fallback in found and found != "") if fallback else found == ""
