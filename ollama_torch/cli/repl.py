"""The interactive session of ``ollama-torch run``: Ollama's ``generateInteractive`` on ``input()``.

Keeps the chat history, understands Ollama's slash commands (``/set``, ``/show``, ``/load``, ``/save``,
``/clear``, ``/bye``, ``/?``) and ``\"\"\"`` multi-line messages. Line editing and history come from the
standard ``readline`` module where the platform has it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..modelfile import ModelfileError, format_params
from .client import Client, ClientError
from .commands import list_command, show_info
from .run import RunOptions, chat, load

USAGE = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""
USAGE_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking
"""
USAGE_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""
USAGE_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit ollama-torch (/bye)
"""
USAGE_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters
"""


def _help(text: str) -> None:
    sys.stderr.write(text + "\n")


def _set_system(opts: RunOptions, text: str) -> None:
    opts.system = text
    message = {"role": "system", "content": text}
    if opts.messages and opts.messages[-1].get("role") == "system":
        opts.messages[-1] = message
    else:
        opts.messages.append(message)
    print("Set system message.")


def _set(client: Client, opts: RunOptions, args: list[str]) -> str | None:
    """``/set ...``; returns the start of a multi-line system message when one was opened."""
    if len(args) < 2:
        _help(USAGE_SET)
        return None
    what = args[1]
    if what in ("history", "nohistory"):
        pass
    elif what in ("wordwrap", "nowordwrap"):
        print(f"Set '{what}' mode.")
    elif what in ("verbose", "quiet"):
        opts.verbose = what == "verbose"
        print(f"Set '{what}' mode.")
    elif what in ("think", "nothink"):
        level = args[2] if what == "think" and len(args) > 2 else ""
        opts.think = level or what == "think"
        caps = _capabilities(client, opts.model)
        if caps is not None and "thinking" not in caps:
            print(f'warning: model "{opts.model}" does not support thinking output', file=sys.stderr)
        print(f"Set 'think' mode to '{level}'." if level else f"Set '{what}' mode.")
    elif what == "format":
        if len(args) < 3 or args[2] != "json":
            print("Invalid or missing format. For 'json' mode use '/set format json'")
        else:
            opts.format = "json"
            print("Set format to 'json' mode.")
    elif what == "noformat":
        opts.format = ""
        print("Disabled format.")
    elif what == "parameter":
        if len(args) < 4:
            _help(USAGE_PARAMETERS)
            return None
        try:
            opts.options[args[2]] = format_params(args[2], args[3:])
        except ModelfileError as exc:
            print(f"Couldn't set parameter: {json.dumps(str(exc))}")
            return None
        print(f"Set parameter '{args[2]}' to '{', '.join(args[3:])}'")
    elif what == "system":
        if len(args) < 3:
            _help(USAGE_SET)
            return None
        text = " ".join(args[2:])
        if text.startswith('"""'):
            text = text[3:]
            if not text.endswith('"""'):
                return text + "\n"
            text = text[:-3]
        _set_system(opts, text)
    else:
        print(f"Unknown command '/set {what}'. Type /? for help")
    return None


def _capabilities(client: Client, model: str) -> list[str] | None:
    try:
        return list(client.show(model).get("capabilities") or [])
    except ClientError:
        return None


def _show(client: Client, opts: RunOptions, args: list[str]) -> None:
    if len(args) < 2:
        _help(USAGE_SHOW)
        return
    extra: dict[str, Any] = {}
    if opts.system:
        extra["system"] = opts.system
    if opts.options:
        extra["options"] = opts.options
    resp = client.show(opts.model, **extra)
    what = args[1]
    if what == "info":
        show_info(resp, False, sys.stderr)
    elif what == "license":
        print(resp.get("license") or "No license was specified for this model.")
    elif what == "modelfile":
        print(resp.get("modelfile") or "")
    elif what == "parameters":
        print("Model defined parameters:")
        params = str(resp.get("parameters") or "")
        print(
            "".join(f"  {line}\n" for line in params.split("\n"))
            if params
            else "  No additional parameters were specified for this model."
        )
        if opts.options:
            print("User defined parameters:")
            for key, value in opts.options.items():
                print(f"  {key:<30} {value}")
            print()
    elif what == "system":
        system = opts.system or str(resp.get("system") or "")
        print(system + "\n" if system else "No system message was specified for this model.")
    elif what == "template":
        print(resp.get("template") or "No prompt template was specified for this model.")
    else:
        print(f"Unknown command '/show {what}'. Type /? for help")


def _load(client: Client, opts: RunOptions, model: str) -> None:
    print(f"Loading model '{model}'")
    previous = (opts.model, opts.messages, opts.loaded_messages)
    try:
        info = client.show(model)
        opts.model, opts.messages = model, []
        opts.loaded_messages = list(info.get("messages") or [])
        opts.parent_model = str((info.get("details") or {}).get("parent_model") or "")
        load(client, opts)
    except ClientError as exc:
        opts.model, opts.messages, opts.loaded_messages = previous
        if "not found" not in str(exc):
            raise
        print(f"Couldn't find model '{model}'")


def _save(client: Client, opts: RunOptions, name: str) -> None:
    request: dict[str, Any] = {"model": name, "from": opts.parent_model or opts.model}
    if opts.system:
        request["system"] = opts.system
    if opts.options:
        request["parameters"] = opts.options
    if messages := opts.loaded_messages + opts.messages:
        request["messages"] = messages
    try:
        for _ in client.create(request):
            pass
    except ClientError as exc:
        if "invalid model name" in str(exc):
            print(f"error: The model name '{name}' is invalid")
            return
        raise
    print(f"Created new model '{name}'")


def repl(client: Client, opts: RunOptions) -> None:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    buffer: list[str] = []
    multiline = ""  # "", "prompt" or "system"
    while True:
        try:
            line = input("... " if multiline else ">>> ")
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            if not multiline:
                print("\nUse Ctrl + d or /bye to exit.")
            buffer, multiline = [], ""
            continue

        if multiline:
            done = line.endswith('"""')
            buffer.append(line[:-3] if done else line + "\n")
            if not done:
                continue
            if multiline == "system":
                _set_system(opts, "".join(buffer))
                buffer = []
            multiline = ""
        elif line.startswith('"""'):
            rest = line[3:]
            if rest.endswith('"""') and len(rest) >= 3:
                buffer.append(rest[:-3])
            else:
                buffer.append(rest + "\n")
                multiline = "prompt"
                continue
        elif line.startswith(("/exit", "/bye")):
            return
        elif line.startswith("/clear"):
            opts.messages = [{"role": "system", "content": opts.system}] if opts.system else []
            print("Cleared session context")
            continue
        elif line.startswith("/list"):
            words = line.split()
            list_command(client, words[1] if len(words) > 1 else None)
            continue
        elif line.startswith("/load"):
            args = line.split()
            if len(args) != 2:
                print("Usage:\n  /load <modelname>")
            else:
                _load(client, opts, args[1])
            continue
        elif line.startswith("/save"):
            args = line.split()
            if len(args) != 2:
                print("Usage:\n  /save <modelname>")
            else:
                _save(client, opts, args[1])
            continue
        elif line.startswith("/set"):
            opened = _set(client, opts, line.split())
            if opened is not None:
                buffer, multiline = [opened], "system"
            continue
        elif line.startswith("/show"):
            _show(client, opts, line.split())
            continue
        elif line.startswith(("/help", "/?")):
            args = line.split()
            topic = args[1].lstrip("/") if len(args) > 1 else ""
            _help(
                {
                    "set": USAGE_SET,
                    "show": USAGE_SHOW,
                    "shortcut": USAGE_SHORTCUTS,
                    "shortcuts": USAGE_SHORTCUTS,
                }.get(topic, USAGE)
            )
            continue
        elif line.startswith("/"):
            print(f"Unknown command '{line.split()[0]}'. Type /? for help")
            continue
        else:
            buffer.append(line)

        text = "".join(buffer)
        buffer = []
        if not text:
            continue
        opts.messages.append({"role": "user", "content": text})
        try:
            reply = chat(client, opts)
        except ClientError as exc:
            if "does not support thinking" in str(exc) or "invalid think value" in str(exc):
                print(f"error: {exc}")
                opts.messages.pop()
                continue
            raise
        if reply is not None:
            opts.messages.append(reply)
