"""``python -m ollama_torch``: the same CLI as the ``ollama-torch`` console script."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
