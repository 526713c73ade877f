"""Tool calling: find the calls a model writes in its output and return them in Ollama's wire form.

``detect_tool_format(template, go_template=...)`` says which markup a model uses (from its Ollama Go
template or its Hugging Face Jinja chat template); a ``ToolCallParser`` per response turns the streamed
text into content and ``{"id", "function": {"index", "name", "arguments"}}`` calls::

    fmt = detect_tool_format(chat_template, go_template=False)
    parser = ToolCallParser(fmt, [t["function"]["name"] for t in request_tools])
    for piece in detokenized_pieces:
        content, calls = parser.add(piece)
        ...
    content, calls = parser.finish()

This package imports neither torch nor aiohttp.
"""

from .calls import ToolCall, ToolCallFunction, ToolCallParseError, make_tool_call, new_call_id, resolve_call
from .formats import BARE_JSON, HERMES, LLAMA3, MISTRAL, FormatKind, ToolFormat, detect_tool_format
from .generic import find_tag
from .parser import ToolCallParser, parse_tool_calls

__all__ = [
    "BARE_JSON",
    "HERMES",
    "LLAMA3",
    "MISTRAL",
    "FormatKind",
    "ToolCall",
    "ToolCallFunction",
    "ToolCallParseError",
    "ToolCallParser",
    "ToolFormat",
    "detect_tool_format",
    "find_tag",
    "make_tool_call",
    "new_call_id",
    "parse_tool_calls",
    "resolve_call",
]
