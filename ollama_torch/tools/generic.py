"""Ollama's generic tool-call search (``tools/tools.go``), for tags whose markup we do not know.

After the tag, Ollama does not parse a grammar: it looks for the earliest offered tool *name* anywhere
in the buffered text (the longest name wins at the same position, and it waits while the text ends
with a prefix of a name), then for the first balanced JSON object anywhere in the buffer, and takes the
arguments from it (:func:`extract_arguments`).  That finds calls in markup such as DeepSeek's
``<|tool▁call▁begin|>function<|tool▁sep|>name\\n```json\\n{...}\\n```<|tool▁call▁end|>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .jsonscan import ObjectFinder, loads

__all__ = ["GenericCallFinder", "extract_arguments", "find_arguments", "find_tag", "find_tool"]


def find_tag(buffer: str, tag: str) -> tuple[int, bool]:
    """Ollama's ``findTag``: ``(index, True)`` for a full tag, ``(start of a partial tag suffix, False)``,
    or ``(-1, False)``."""
    i = buffer.find(tag)
    if i >= 0:
        return i, True
    for n in range(min(len(buffer), len(tag)), 0, -1):
        if buffer.endswith(tag[:n]):
            return len(buffer) - n, False
    return -1, False


class GenericCallFinder:
    """Ollama's ``parseToolCall`` over the growing text after a tag, resumable."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = names
        self._finder = ObjectFinder()

    def next_call(self, body: str, *, final: bool) -> tuple[str, dict[str, Any], int] | None:
        """``(name, arguments, end of the call in body)`` for the next call, or None for now.

        After a call the caller must cut ``body`` at the returned end for the next search.
        """
        name, name_end = find_tool(self._names, body, final=final)
        if name is None:
            return None
        hit = self._finder.feed(body)
        if hit is None:
            return None
        args = extract_arguments(hit[0], name)
        if args is None:
            return None
        self._finder = ObjectFinder()
        return name, args, max(name_end, hit[2])


def find_tool(names: Sequence[str], buffer: str, *, final: bool = False) -> tuple[str | None, int]:
    """The earliest tool name in ``buffer`` and the offset just past it, or ``(None, 0)``.

    Unless ``final``, returns nothing while the buffer ends with a proper prefix of some name (``get``
    could still become ``get_weather``), as Ollama's ``findTool`` does.
    """
    if not buffer or not names:
        return None, 0
    if not final:
        longest = max(len(n) for n in names)
        for i in range(1, min(len(buffer), longest) + 1):
            tail = buffer[-i:]
            if any(len(tail) < len(n) and n.startswith(tail) for n in names):
                return None, 0
    found: str | None = None
    start = end = -1
    for name in names:
        pos = buffer.find(name)
        if pos == -1:
            continue
        if found is not None and (pos > start or (pos == start and len(name) <= len(found))):
            continue
        found, start, end = name, pos, pos + len(name)
    return (found, end) if found is not None else (None, 0)


def extract_arguments(data: dict[str, Any], tool_name: str) -> dict[str, Any] | None:
    """Arguments for ``tool_name`` from a decoded object, by Ollama's ``findObject`` rules.

    An object with a ``name`` (or, unlike Ollama, ``tool_name``) key gives its ``arguments`` or
    ``parameters`` (an object, or a JSON string holding one), else ``None``; otherwise a key equal to the tool name; otherwise the first
    nested object (in key order) that matches; otherwise the object itself.
    """
    found, args = _find_object(data, tool_name)
    return args if found else data


def find_arguments(buffer: str, tool_name: str) -> tuple[dict[str, Any] | None, int]:
    """Ollama's ``findArguments``: arguments from the first decodable ``{...}``, and where it ends.

    Returns ``(None, 0)`` when the buffer holds no complete object; ``(None, end)`` when the first
    object names a tool but carries no usable arguments (e.g. ``"arguments": [...]``).
    """
    hit = ObjectFinder().feed(buffer)
    if hit is None:
        return None, 0
    data, _, end = hit
    return extract_arguments(data, tool_name), end


def _find_map(obj: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            decoded = loads(value)
        except (ValueError, RecursionError):
            return None
        if isinstance(decoded, dict):
            return decoded
    return None


def _find_object(obj: dict[str, Any], tool_name: str) -> tuple[bool, dict[str, Any] | None]:
    # "tool_name" is ours: Command-R's template writes {"tool_name": ..., "parameters": ...}, where
    # Ollama's rules would take the whole object as the arguments.
    if "name" in obj or "tool_name" in obj:
        for key in ("arguments", "parameters"):
            args = _find_map(obj, key)
            if args is not None:
                return True, args
        return True, None
    args = _find_map(obj, tool_name)
    if args is not None:
        return True, args
    for value in obj.values():
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, dict):
                found, result = _find_object(child, tool_name)
                if found:
                    return True, result
    return False, None
