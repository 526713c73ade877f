"""The short commands: ``list``, ``ps``, ``show``, ``cp``, ``rm``, ``stop``, ``pull``, ``push``, ``version``.

Each mirrors its handler in Ollama's ``cmd/cmd.go``: same requests, same tables and messages, so scripts
written against ``ollama`` read ``ollama-torch`` output the same way.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, TextIO

from .. import OLLAMA_API_VERSION, __version__
from .client import Client, ClientError, ConnectError
from .format import display_width, human_bytes, human_number, human_time, parse_time, render_table


def list_command(client: Client, prefix: str | None = None) -> None:
    rows = []
    for m in client.list_models():
        name = str(m.get("name") or m.get("model") or "")
        if prefix and not name.lower().startswith(prefix.lower()):
            continue
        size = "-" if m.get("remote_model") else human_bytes(int(m.get("size") or 0))
        modified = human_time(parse_time(m.get("modified_at")), "Never")
        rows.append([name, str(m.get("digest") or "")[:12], size, modified])
    sys.stdout.write(render_table(rows, header=["NAME", "ID", "SIZE", "MODIFIED"]))


def processor(size: int, size_vram: int) -> str:
    """``ollama ps``'s PROCESSOR column."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def ps_command(client: Client, prefix: str | None = None) -> None:
    rows = []
    now = datetime.now(timezone.utc)
    for m in client.list_running():
        name = str(m.get("name") or "")
        if prefix and not name.startswith(prefix):
            continue
        size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        expires = parse_time(m.get("expires_at"))
        until = "Stopping..." if expires is not None and expires < now else human_time(expires, "Never", now)
        rows.append(
            [name, str(m.get("digest") or "")[:12], human_bytes(size), processor(size, vram),
             str(m.get("context_length") or 0), until]
        )  # fmt: skip
    sys.stdout.write(render_table(rows, header=["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]))


# -- show -------------------------------------------------------------------------------------------

SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


def show_command(client: Client, model: str, field: str | None = None, verbose: bool = False) -> None:
    resp = client.show(model, verbose=verbose)
    if "image" in (resp.get("capabilities") or []):
        raise ClientError("image generation models are not currently supported")
    if field in ("license", "modelfile", "parameters"):
        sys.stdout.write(str(resp.get(field) or "") + "\n")
    elif field in ("system", "template"):
        sys.stdout.write(str(resp.get(field) or ""))
    else:
        show_info(resp, verbose, sys.stdout)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def go_float(value: float) -> str:
    """``strconv.FormatFloat(v, 'f', -1, 64)``: plain decimal, no exponent, shortest digits."""
    return str(int(value)) if value.is_integer() else format(Decimal(repr(value)), "f")


def go_g(value: float) -> str:
    """Go's ``%g`` / ``%v`` for a float64: shortest digits, exponent form when the decimal exponent is
    < -4 or >= 6 (``8192``, ``500000``, ``1e+06``, ``8.030261248e+09``, ``1e-05``)."""
    if value == 0 or not math.isfinite(value):
        return {math.inf: "+Inf", -math.inf: "-Inf"}.get(value, "NaN" if value != value else "0")
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    exp = len(digits) + exponent - 1
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        out = f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    else:
        out = format(Decimal(repr(abs(value))), "f")
        if "." in out:
            out = out.rstrip("0").rstrip(".")
    return ("-" if sign else "") + out


def go_v(value: Any) -> str:
    """Go's ``%v`` of a decoded JSON value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return go_g(float(value))
    if value is None:
        return "<nil>"
    if isinstance(value, list):
        return "[" + " ".join(go_v(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_v(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _metadata_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return go_g(float(value))
    if isinstance(value, list):
        shown, width = 0, 1
        for i, item in enumerate(value):
            w = display_width(go_v(item)) + (2 if i else 0)
            if width + w > 10 and i > 0:
                break
            width += w
            shown += 1
        if shown < len(value):
            return go_v(value[:shown])[:-1] + f" ...+{len(value) - shown} more]"
        return go_v(value)
    return "map[string]interface {}" if isinstance(value, dict) else "<nil>"


def _head(text: str, n: int) -> list[list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    rows = [["", line] for line in lines[:n]]
    if len(lines) > n:
        rows.append(["", "..."])
    return rows


def show_info(resp: dict[str, Any], verbose: bool, out: TextIO) -> None:
    """``ollama show``'s default view: Model, Capabilities, Projector, Parameters, [Metadata, Tensors],
    System, License sections."""

    def section(header: str, rows: list[list[str]], col_width: int = 30) -> None:
        out.write(f"  {header}\n")
        out.write(render_table(rows, col_width=col_width))
        out.write("\n")

    details = resp.get("details") or {}
    info = resp.get("model_info")
    rows: list[list[str]] = []
    if resp.get("remote_host"):
        rows += [
            ["", "Remote model", str(resp.get("remote_model") or "")],
            ["", "Remote URL", str(resp["remote_host"])],
        ]
    if isinstance(info, dict):
        arch = info.get("general.architecture")
        arch = arch if isinstance(arch, str) else ""
        if arch:
            rows.append(["", "architecture", arch])
        params = str(details.get("parameter_size") or "")
        if not params and (count := _number(info.get("general.parameter_count"))) is not None:
            params = human_number(int(count))
        if params:
            rows.append(["", "parameters", params])
        for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
            if (value := _number(info.get(f"{arch}.{key}"))) is not None:
                rows.append(["", label, go_float(value)])
    else:
        rows += [
            ["", "architecture", str(details.get("family") or "")],
            ["", "parameters", str(details.get("parameter_size") or "")],
        ]
    rows.append(["", "quantization", str(details.get("quantization_level") or "")])
    if resp.get("requires"):
        rows.append(["", "requires", str(resp["requires"])])
    section("Model", rows)

    if caps := resp.get("capabilities"):
        section("Capabilities", [["", str(c)] for c in caps])
    if isinstance(projector := resp.get("projector_info"), dict):
        arch = str(projector.get("general.architecture") or "")
        rows = [["", "architecture", arch]] if arch else []
        if (count := _number(projector.get("general.parameter_count"))) is not None:
            rows.append(["", "parameters", human_number(int(count))])
        for suffix, label in (("embedding_length", "embedding length"), ("projection_dim", "dimensions")):
            for modality in ("vision", "audio"):
                if (value := _number(projector.get(f"{arch}.{modality}.{suffix}"))) is not None:
                    rows.append(["", label, go_float(value)])
                    break
        section("Projector", rows)
    if parameters := resp.get("parameters"):
        section("Parameters", [["", *line.split()] for line in str(parameters).splitlines() if line])
    if verbose and isinstance(info, dict):
        section("Metadata", [["", k, _metadata_value(info[k])] for k in sorted(info)])
    if verbose and (tensors := resp.get("tensors")):
        rows = [["", str(t.get("name")), str(t.get("type")), go_v(t.get("shape") or [])] for t in tensors]
        section("Tensors", rows)
    if system := resp.get("system"):
        section("System", _head(str(system), 2), col_width=100)
    if license_text := resp.get("license"):
        section("License", _head(str(license_text), 2), col_width=100)


# -- the rest ---------------------------------------------------------------------------------------


def copy_command(client: Client, source: str, destination: str) -> None:
    client.copy(source, destination)
    print(f"copied '{source}' to '{destination}'")


def unload(client: Client, model: str) -> None:
    """``loadOrUnloadModel`` with ``keep_alive`` 0: check the model exists, then ask for an unload."""
    client.show(model)
    for _ in client.generate({"model": model, "keep_alive": "0s"}):
        pass


def stop_command(client: Client, model: str) -> None:
    try:
        unload(client, model)
    except ClientError as exc:
        if "not found" in str(exc):
            raise ClientError(f'couldn\'t find model "{model}" to stop') from None
        raise


def remove_command(client: Client, models: list[str]) -> None:
    for model in models:
        try:
            unload(client, model)
        except ConnectError:
            raise
        except ClientError as exc:
            if "not found" not in str(exc).lower():
                print(f"Warning: unable to stop model '{model}'", file=sys.stderr)
        client.delete(model)
        print(f"deleted '{model}'")


def version_command(client: Client) -> None:
    try:
        server = client.version()
    except ClientError:
        server = ""
        print("Warning: could not connect to a running Ollama instance")
    if server:
        print(f"ollama version is {server}")
    if server != OLLAMA_API_VERSION:
        print(f"Warning: client version is {OLLAMA_API_VERSION} (ollama-torch {__version__})")


def dumps(value: Any) -> str:
    """JSON the way Go's ``json.Marshal`` prints it: compact, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
