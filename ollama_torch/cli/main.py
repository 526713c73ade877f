"""``ollama-torch``: the command line, mirroring Ollama's (``serve``, ``create``, ``run``, ``list``, ...).

Every command but ``serve`` is a client of the REST API at ``OLLAMA_HOST``, so it works against
ollama-torch and a real Ollama alike. Nothing here imports torch, transformers or the aiohttp server
(``serve`` imports it when run), so ``ollama-torch list`` starts fast. Errors print ``Error: <message>``
on stderr and exit 1, as Ollama's CLI does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ..modelfile import ModelfileError
from ..settings import Settings, SettingsError
from .client import Client, ClientError

Handler = Callable[[argparse.Namespace, Client, Settings], None]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"Error: {message}\n")


def _serve(args: argparse.Namespace, client: Client, settings: Settings) -> None:
    from ..serve import serve  # the server (aiohttp, torch) loads only here

    serve(settings, demo=args.demo)


def _create(args: argparse.Namespace, client: Client, settings: Settings) -> None:
    from .create import create_command

    create_command(client, args.model, args.file, args.quantize, gguf=args.gguf)


def _export(args: argparse.Namespace, client: Client, settings: Settings) -> None:
    from .export import export_command

    export_command(client, args.model, args.output, args.quantize)


def _show(args: argparse.Namespace, client: Client, settings: Settings) -> None:
    from .commands import SHOW_FIELDS, show_command

    chosen = [name for name in SHOW_FIELDS if getattr(args, name)]
    if len(chosen) > 1:
        raise ClientError(
            "only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be specified"
        )
    show_command(client, args.model, chosen[0] if chosen else None, args.verbose)


def _run(args: argparse.Namespace, client: Client, settings: Settings) -> None:
    from .repl import repl
    from .run import run_command

    truncate = None if args.truncate is None else args.truncate.lower() in ("true", "1", "t", "yes")
    run_command(
        client,
        args.model,
        args.prompt,
        format=args.format,
        think=args.think,
        hide_thinking=args.hidethinking,
        keep_alive=args.keepalive,
        verbose=args.verbose,
        insecure=args.insecure,
        truncate=truncate,
        dimensions=args.dimensions,
        session=repl,
    )


def _simple(name: str) -> Handler:
    def handler(args: argparse.Namespace, client: Client, settings: Settings) -> None:
        from . import commands, create

        if name == "list":
            commands.list_command(client, args.prefix)
        elif name == "ps":
            commands.ps_command(client, args.prefix)
        elif name == "cp":
            commands.copy_command(client, args.source, args.destination)
        elif name == "rm":
            commands.remove_command(client, args.models)
        elif name == "stop":
            commands.stop_command(client, args.model)
        elif name == "pull":
            create.pull_with_progress(client, args.model, args.insecure)
        elif name == "push":
            create.push_with_progress(client, args.model, args.insecure)
        else:
            commands.version_command(client)

    return handler


COMMANDS: dict[str, tuple[Handler, str]] = {
    "serve": (_serve, "Start ollama-torch"),
    "create": (_create, "Create a model"),
    "export": (_export, "Write a model as a GGUF file"),
    "show": (_show, "Show information for a model"),
    "run": (_run, "Run a model"),
    "stop": (_simple("stop"), "Stop a running model"),
    "pull": (_simple("pull"), "Pull a model from a registry"),
    "push": (_simple("push"), "Push a model to a registry"),
    "list": (_simple("list"), "List models"),
    "ps": (_simple("ps"), "List running models"),
    "cp": (_simple("cp"), "Copy a model"),
    "rm": (_simple("rm"), "Remove a model"),
    "version": (_simple("version"), "Show version information"),
}
ALIASES = {"start": "serve", "ls": "list"}

USAGE = "Large language model runner (PyTorch + Transformers)\n\nUsage:\n  ollama-torch [flags]\n  ollama-torch [command]\n\nAvailable Commands:\n"
USAGE += "".join(f"  {name:<11} {text}\n" for name, (_, text) in COMMANDS.items())
USAGE += (
    "\nFlags:\n  -h, --help      help for ollama-torch\n  -v, --version   Show version information\n"
    '\nUse "ollama-torch [command] --help" for more information about a command.\n'
)


def build_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one command (each parses with intermixed flags and positionals, as cobra does)."""
    p = _Parser(prog=f"ollama-torch {name}", description=COMMANDS[name][1])
    if name == "create":
        p.add_argument("model")
        p.add_argument("-f", "--file", help='Name of the Modelfile (default "Modelfile")')
        p.add_argument("-q", "--quantize", help="Quantize model to this level (e.g. q4_K_M)")
        p.add_argument(
            "--gguf", action="store_true", help="Store the weights as one GGUF file, as Ollama does (runs in stock Ollama)"
        )
    elif name == "export":
        p.add_argument("model")
        p.add_argument("-o", "--output", required=True, help="The GGUF file to write")
        p.add_argument("-q", "--quantize", help="GGUF type (f32, f16, bf16, q8_0, q4_0, q4_K_M, ...)")
    elif name == "show":
        p.add_argument("model")
        for field in ("license", "modelfile", "parameters", "template", "system"):
            p.add_argument(f"--{field}", action="store_true", help=f"Show {field} of a model")
        p.add_argument("-v", "--verbose", action="store_true", help="Show detailed model information")
    elif name == "run":
        p.add_argument("model")
        p.add_argument("prompt", nargs="*")
        p.add_argument("--keepalive", help="Duration to keep a model loaded (e.g. 5m)")
        p.add_argument("--verbose", action="store_true", help="Show timings for response")
        p.add_argument("--insecure", action="store_true", help="Use an insecure registry")
        p.add_argument(
            "--nowordwrap", action="store_true", help="Don't wrap words to the next line automatically"
        )
        p.add_argument("--format", default="", help="Response format (e.g. json)")
        p.add_argument(
            "--think", help="Enable thinking mode: true/false or high/medium/low for supported models"
        )
        p.add_argument("--hidethinking", action="store_true", help="Hide thinking output (if provided)")
        p.add_argument("--truncate", help="For embedding models: truncate inputs exceeding context length")
        p.add_argument(
            "--dimensions", type=int, default=0, help="Truncate output embeddings to this dimension"
        )
    elif name == "serve":
        p.add_argument(
            "--demo", action="store_true", help="Create the demo model smollm2:135m first if it is missing"
        )
    elif name in ("stop",):
        p.add_argument("model")
    elif name in ("pull", "push"):
        p.add_argument("model")
        p.add_argument("--insecure", action="store_true", help="Use an insecure registry")
    elif name in ("list", "ps"):
        p.add_argument("prefix", nargs="?")
    elif name == "cp":
        p.add_argument("source")
        p.add_argument("destination")
    elif name == "rm":
        p.add_argument("models", nargs="+", metavar="model")
    return p


def _normalize(argv: list[str]) -> list[str]:
    """Cobra's optional flag values: a bare ``--think`` / ``--truncate`` means true and never eats the
    next word (``run m --think "why?"`` keeps the prompt)."""
    bare = {"--think": "--think=true", "--truncate": "--truncate=true"}
    return [bare.get(arg, arg) for arg in argv]


def main(argv: Sequence[str] | None = None) -> int:
    args_in = _normalize(list(sys.argv[1:] if argv is None else argv))
    if not args_in or args_in[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    if args_in[0] in ("-v", "--version"):
        name, args = "version", argparse.Namespace()
    else:
        name = ALIASES.get(args_in[0], args_in[0])
        if name not in COMMANDS:
            print(f'Error: unknown command "{args_in[0]}" for "ollama-torch"', file=sys.stderr)
            return 1
        args = build_parser(name).parse_intermixed_args(args_in[1:])
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    client = Client(settings.host.base_url, api_key=settings.api_key)
    try:
        COMMANDS[name][0](args, client, settings)
    except (ClientError, ModelfileError, OSError) as exc:
        sys.stdout.flush()
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
