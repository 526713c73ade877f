"""Modelfiles: parsing, rendering and turning one into an ``/api/create`` request, as Ollama does.

The parser is a port of the rune-by-rune state machine in Ollama's ``parser/parser.go`` (same quoting,
comments, case-insensitive instructions and error texts), ``str(Modelfile)`` renders exactly as Ollama's
``Modelfile.String()`` (which ``/api/show`` returns as ``modelfile``), and ``to_create_request`` builds
the JSON body of ``POST /api/create`` like the CLI's ``CreateRequest``: local paths become
``files``/``adapters`` maps of relative name -> ``sha256:<hex>``, anything else is a model name in ``from``.

Imports neither torch nor aiohttp: the CLI uses it and must start fast.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options_schema import DEPRECATED_PARAMETERS, parse_option_text


class ModelfileError(ValueError):
    """A Modelfile that cannot be parsed or turned into a create request, with Ollama's message."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"(line {line}): {message}" if line else message)
        self.message = message
        self.line = line


ERR_MISSING_FROM = "no FROM line"
ERR_INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
ERR_INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", "renderer", '
    '"parser", "parameter", "message", or "requires"'
)
ERR_UNEXPECTED_EOF = "unexpected EOF"
ERR_NO_MODEL_FILES = "no Modelfile or safetensors files found"

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter", "message", "requires")  # fmt: skip
_QUOTED_COMMANDS = ("license", "template", "system", "adapter", "renderer", "parser", "requires", "draft")
MESSAGE_ROLES = ("system", "user", "assistant")


def quote(s: str) -> str:
    """Ollama's ``quote``: only values with a newline or an edge space are quoted."""
    if "\n" in s or s.startswith(" ") or s.endswith(" "):
        return f'"""{s}"""' if '"' in s else f'"{s}"'
    return s


def unquote(s: str) -> tuple[str, bool]:
    """Ollama's ``unquote``: ``(value, complete)``; an opened quote that is not closed is incomplete."""
    if s.startswith('"""'):
        if len(s) >= 6 and s.endswith('"""'):
            return s[3:-3], True
        return "", False
    if s.startswith('"'):
        if len(s) >= 2 and s.endswith('"'):
            return s[1:-1], True
        return "", False
    return s, True


@dataclass
class Command:
    """One instruction. ``name`` is ``model`` for FROM, the parameter name for PARAMETER, else the
    lower-cased instruction; MESSAGE args are ``"<role>: <content>"``, as in Ollama."""

    name: str
    args: str

    def __str__(self) -> str:
        if self.name == "model":
            return f"FROM {self.args}"
        if self.name in _QUOTED_COMMANDS:
            return f"{self.name.upper()} {quote(self.args)}"
        if self.name == "message":
            role, _, content = self.args.partition(": ")
            return f"MESSAGE {role} {quote(content)}"
        return f"PARAMETER {self.name} {quote(self.args)}"


@dataclass
class Modelfile:
    commands: list[Command] = field(default_factory=list)

    def __str__(self) -> str:
        return "".join(f"{command}\n" for command in self.commands)


# -- parsing ----------------------------------------------------------------------------------------

_NIL, _NAME, _VALUE, _PARAMETER, _MESSAGE, _COMMENT = range(6)
_EOF = object()  # parse_rune's "unexpected EOF" signal (Go's io.ErrUnexpectedEOF)


def _is_alpha(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z")


def _is_space(c: str) -> bool:
    return c in " \t"


def _is_newline(c: str) -> bool:
    return c in "\r\n"


def _parse_rune(c: str, state: int) -> tuple[int, str, object]:
    """``parseRuneForState``: (next state, rune to buffer or "", error or None)."""
    if state == _NIL:
        if c == "#":
            return _COMMENT, "", None
        if _is_space(c) or _is_newline(c):
            return _NIL, "", None
        return _NAME, c, None
    if state == _NAME:
        if _is_alpha(c):
            return _NAME, c, None
        if _is_space(c):
            return _VALUE, "", None
        return _NIL, "", ERR_INVALID_COMMAND
    if state == _VALUE:
        if _is_newline(c) or _is_space(c):
            return _NIL, c, None
        return _VALUE, c, None
    if state == _PARAMETER:
        if _is_alpha(c) or ("0" <= c <= "9") or c == "_":
            return _PARAMETER, c, None
        if _is_space(c):
            return _VALUE, "", None
        return _NIL, "", _EOF
    if state == _MESSAGE:
        if _is_alpha(c):
            return _MESSAGE, c, None
        if _is_space(c):
            return _VALUE, "", None
        return _NIL, "", _EOF
    # _COMMENT
    return (_NIL if _is_newline(c) else _COMMENT), "", None


def _is_print(c: str) -> bool:
    """Go's ``strconv.IsPrint``: graphic characters and the ASCII space, no other spaces or controls."""
    return c == " " or (c.isprintable() and not c.isspace())


def decode_modelfile(data: bytes) -> str:
    """Bytes to text as Ollama reads them: a UTF-16 (LE/BE) or UTF-8 BOM wins, else UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8-sig", errors="replace")


def parse_modelfile(text: str) -> Modelfile:
    """Parse a Modelfile as Ollama's ``ParseFile`` does; raise ``ModelfileError`` with its messages.

    PARAMETER names and values are not checked here (Ollama checks them in ``CreateRequest``)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    commands: list[Command] = []
    state, line, role, name = _NIL, 1, "", ""
    buf: list[str] = []
    for c in text:
        if _is_newline(c):
            line += 1
        nxt, r, err = _parse_rune(c, state)
        if err is _EOF:
            raise ModelfileError(f"{ERR_UNEXPECTED_EOF}: {''.join(buf)}")
        if err is not None:
            raise ModelfileError(str(err), line)
        if nxt != state:
            if state == _NAME:
                word = "".join(buf)
                if word.lower() not in COMMANDS:
                    raise ModelfileError(ERR_INVALID_COMMAND, line)
                word = word.lower()
                if word == "from":
                    name = "model"
                elif word == "parameter":
                    nxt = _PARAMETER  # the parameter's own name comes next
                elif word == "message":
                    nxt, name = _MESSAGE, word  # the role comes next
                else:
                    name = word
            elif state == _PARAMETER:
                name = "".join(buf)
            elif state == _MESSAGE:
                if "".join(buf) not in MESSAGE_ROLES:
                    raise ModelfileError(ERR_INVALID_ROLE, line)
                role = "".join(buf)
            elif state == _VALUE:
                value, complete = unquote("".join(buf).strip())
                if not complete or _is_space(r):
                    # Spaces inside a value, and newlines inside an open quote, belong to the value.
                    buf.append(r)
                    continue
                if role:
                    value, role = f"{role}: {value}", ""
                commands.append(Command(name, value))
            buf.clear()
            state = nxt
        if r and _is_print(r):
            buf.append(r)

    if state == _VALUE:
        value, complete = unquote("".join(buf).strip())
        if not complete:
            raise ModelfileError(ERR_UNEXPECTED_EOF)
        commands.append(Command(name, f"{role}: {value}" if role else value))
    elif state not in (_NIL, _COMMENT):
        raise ModelfileError(ERR_UNEXPECTED_EOF)

    if not any(command.name == "model" for command in commands):
        raise ModelfileError(ERR_MISSING_FROM)
    return Modelfile(commands)


def parameter_value(name: str, text: str) -> Any:
    """A PARAMETER's text as the typed value Ollama stores (``api.FormatParams``): int, float, bool, or a
    one-element list for ``stop``. Raises ``ModelfileError``: ``unknown parameter 'x'``, ``invalid int
    value [x]``, ... Deprecated names are unknown here; ``to_create_request`` warns and drops them."""
    return format_params(name, [text])


def format_params(name: str, values: list[str]) -> Any:
    """``parameter_value`` for several words at once (``/set parameter stop a b``)."""
    try:
        return parse_option_text(name, values)
    except ValueError as exc:
        raise ModelfileError(str(exc)) from None


# -- the create request -----------------------------------------------------------------------------

_SEMVER = re.compile(
    r"^v(0|[1-9]\d*)(\.(0|[1-9]\d*)(\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?)?)?$"
)


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def expand_path(path: str, base_dir: Path) -> Path:
    """Ollama's ``expandPath``: absolute stays, ``~``/``~user`` expand, anything else joins ``base_dir``."""
    if path.startswith(("/", "\\")) or os.path.isabs(path):
        return Path(os.path.abspath(path))
    if path.startswith("~"):
        expanded = os.path.expanduser(path)
        if expanded == path:
            user = path[1:].split("/", 1)[0]
            raise ModelfileError(f"failed to find user '{user}'")
        return Path(os.path.abspath(expanded))
    return Path(os.path.abspath(os.path.join(base_dir, path)))


def _content_type(path: Path) -> str:
    """The three answers of Go's ``http.DetectContentType`` that ``filesForModel`` cares about."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    return "application/octet-stream" if any(b in _BINARY_BYTES for b in head) else "text/plain"


_BINARY_BYTES = frozenset((*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)))


def _glob(directory: Path, pattern: str, content_type: str = "") -> list[Path]:
    """Go's ``filepath.Glob`` (``*`` matches within one path part; sorted) with ``filesForModel``'s
    content check: a file of the wrong type makes the whole glob fail (``ModelfileError``)."""
    matches = sorted(p for p in directory.glob(pattern) if p.is_file() and not _hidden(p, directory))
    for match in matches:
        actual = _content_type(match)
        if content_type and actual != content_type:
            raise ModelfileError(f"invalid content type: expected {actual} for {match}")
    return matches


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _first_glob(directory: Path, pattern: str, content_type: str = "") -> list[Path]:
    """A glob whose content-type failure means "no match" (Ollama discards those errors)."""
    try:
        return _glob(directory, pattern, content_type)
    except ModelfileError:
        return []


# Tokenizer and pooling files Transformers / sentence-transformers read that Ollama's rules skip (its
# converter only reads tokenizer.json / tokenizer.model); we serve the directory as is, so they go too.
TOKENIZER_EXTRAS = ("vocab.txt", "merges.txt", "*.tiktoken", "spiece.model", "sentencepiece*.model", "*.jinja")  # fmt: skip


def files_for_model(directory: Path) -> list[Path]:
    """The files of a model directory that ``FROM <dir>`` uploads: Ollama's ``filesForModel`` (weights by
    the first matching rule, every ``*.json`` and ``*/*.json``, ``chat_template.jinja``,
    ``tokenizer.model``) plus ``TOKENIZER_EXTRAS``. Raises ``ModelfileError`` when there are no weights."""
    directory = Path(directory)
    files = _first_glob(directory, "model*.safetensors")
    if files:
        files += _glob(directory, "*/model*.safetensors")
    else:
        files = (
            _first_glob(directory, "consolidated*.safetensors")
            or _first_glob(directory, "pytorch_model*.bin", "application/zip")
            or _first_glob(directory, "consolidated*.pth", "application/zip")
            or _first_glob(directory, "*.gguf", "application/octet-stream")
            or _first_glob(directory, "*.bin", "application/octet-stream")
        )
    if not files:
        raise ModelfileError(ERR_NO_MODEL_FILES)
    files += _glob(directory, "*.json", "text/plain")
    files += _glob(directory, "*/*.json", "text/plain")
    files += _glob(directory, "chat_template.jinja", "text/plain")
    files += _first_glob(directory, "tokenizer.model", "application/octet-stream") or _first_glob(
        directory, "*/tokenizer.model", "text/plain"
    )
    for pattern in TOKENIZER_EXTRAS:
        files += _glob(directory, pattern)
    return list(dict.fromkeys(files))


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def files_for_adapter(directory: Path) -> list[Path]:
    """The files of a PEFT adapter directory that ``ADAPTER <dir>`` uploads (its config and Safetensors
    weights; a tokenizer or training state saved beside them is not part of the adapter)."""
    files = [directory / name for name in ADAPTER_FILES if (directory / name).is_file()]
    if len(files) < len(ADAPTER_FILES):
        missing = [name for name in ADAPTER_FILES if not (directory / name).is_file()]
        raise ModelfileError(f"{directory} is not a PEFT adapter directory: no {', '.join(missing)}")
    return files


def _local_files(path: Path, adapter: bool = False) -> list[Path]:
    """The files a local FROM/ADAPTER path stands for; ``FileNotFoundError`` when it does not exist."""
    if path.is_dir():
        # Unlike Ollama we follow symlinks out of the directory (a Hugging Face cache snapshot links
        # into ../../blobs) and name each file by its path inside the directory.
        return files_for_adapter(path) if adapter else files_for_model(path)
    if not path.exists():
        raise FileNotFoundError(path)
    return [path]


def request_file_names(paths: list[Path]) -> dict[Path, str]:
    """The CLI's ``createRequestFileNames``: names relative to the files' common directory, or the base
    name of a single file, with ``/`` separators."""
    names = {p: p.name for p in paths}
    if len(paths) < 2:
        return names
    root = os.path.commonpath([str(p.parent) for p in paths])
    for p in paths:
        rel = os.path.relpath(p, root)
        if rel not in (".", "..") and not rel.startswith(".." + os.sep):
            names[p] = Path(rel).as_posix()
    return names


def _warn_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def to_create_request(
    mf: Modelfile,
    base_dir: Path | str,
    *,
    digest: Callable[[Path], str] = sha256_file,
    warn: Callable[[str], None] = _warn_stderr,
) -> tuple[dict[str, Any], list[Path]]:
    """The ``/api/create`` body for ``mf`` (without ``model``/``quantize``) and the local files it names.

    Relative paths resolve against ``base_dir`` (the Modelfile's directory); ``~`` expands. A FROM that is
    not an existing path is a model name (``from``). ``digest`` hashes each local file (the CLI passes one
    that shows progress and remembers the results); ``warn`` receives deprecation warnings."""
    base = Path(base_dir)
    request: dict[str, Any] = {}
    groups: dict[str, list[Path]] = {"files": [], "adapters": [], "draft_files": []}
    params: dict[str, Any] = {}
    messages: list[dict[str, str]] = []
    licenses: list[str] = []
    for command in mf.commands:
        name, args = command.name, command.args
        if name in ("model", "adapter", "draft"):
            path = expand_path(args, base)
            try:
                files = _local_files(path, adapter=name == "adapter")
            except FileNotFoundError:
                if name != "model":
                    raise ModelfileError(f"stat {path}: no such file or directory") from None
                request["from"] = args
                continue
            if name == "adapter":
                # ADAPTER lines stack (applied together); Ollama keeps only the last one
                groups["adapters"].extend(f for f in files if f not in groups["adapters"])
            else:
                other = groups["draft_files" if name == "model" else "files"]
                if any(f.resolve() == g.resolve() for f in files for g in other):
                    raise ModelfileError(f"DRAFT must not reference the same local path as FROM: {path}")
                group = groups["files" if name == "model" else "draft_files"]
                group.extend(f for f in files if f not in group)
        elif name in ("template", "system", "renderer", "parser"):
            request[name] = args
        elif name == "license":
            licenses.append(args)
        elif name == "requires":
            version = args if args.startswith("v") else "v" + args
            if not _SEMVER.match(version):
                raise ModelfileError("requires must be a valid semver (e.g. 0.14.0)")
            request["requires"] = version[1:]
        elif name == "message":
            role, _, content = args.partition(": ")
            messages.append({"role": role, "content": content})
        elif name in DEPRECATED_PARAMETERS:
            warn(f"warning: parameter {name} is deprecated")
        else:
            value = parameter_value(name, args)
            if isinstance(value, list) and isinstance(params.get(name), list):
                params[name] = params[name] + value
            else:
                params[name] = value

    uploads: list[Path] = []
    for key, paths in groups.items():
        if not paths:
            continue
        names = request_file_names(paths)
        request[key] = {names[p]: digest(p) for p in paths}
        uploads.extend(p for p in paths if p not in uploads)
    # Go's omitempty: empty strings, maps and lists are not sent.
    request = {k: v for k, v in request.items() if v != ""}
    if params:
        request["parameters"] = params
    if messages:
        request["messages"] = messages
    if licenses:
        request["license"] = licenses
    return request, uploads
