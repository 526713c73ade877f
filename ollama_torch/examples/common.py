"""What both examples share: the client, argument parsing, and the demo-model fallback."""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEMO_MODEL = "smollm2:135m"


def client() -> Any:
    try:
        import ollama
    except ImportError:  # pragma: no cover - the dev/demo extras install it
        sys.exit("the examples need the official client: pip install ollama")
    from ..settings import Settings

    return ollama.Client(host=Settings.from_env().host.base_url)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--prompt", required=True, help="what to ask")
    p.add_argument("--model", default=DEMO_MODEL, help=f"model name (default {DEMO_MODEL})")
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (0 = greedy)")
    p.add_argument("--num-predict", type=int, default=None, help="at most this many tokens")
    p.add_argument("--no-fallback", action="store_true", help=f"fail instead of falling back to {DEMO_MODEL}")
    return p


def resolve_model(c: Any, model: str, no_fallback: bool) -> str:
    """The model to use: ``model`` if the server has it, else the demo model (saying so) unless
    ``--no-fallback``."""
    import ollama

    try:
        c.show(model)
        return model
    except ollama.ResponseError as exc:
        if exc.status_code != 404:
            raise
    if no_fallback or model == DEMO_MODEL:
        sys.exit(f"model {model!r} not found on the server (create or pull it first)")
    print(f"model {model!r} not found; falling back to the demo model {DEMO_MODEL}", file=sys.stderr)
    return DEMO_MODEL


def options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if args.temperature is not None:
        opts["temperature"] = args.temperature
    if args.num_predict is not None:
        opts["num_predict"] = args.num_predict
    return opts
