"""Progress lines for blob transfers: ``{"status":"pulling <hex12>","digest","total","completed"}``.

A transfer runs as a task; ``watch`` polls it every ``interval`` seconds (Ollama: 60 ms) and yields a
line whenever the count moved, then one line with ``completed == total`` when it is done, so clients'
progress bars always reach the end. ``completed`` is omitted while it is 0, as Go's ``omitempty`` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any


def progress_line(verb: str, digest: str, total: int, completed: int) -> dict[str, Any]:
    line: dict[str, Any] = {"status": f"{verb} {digest[7:19]}", "digest": digest, "total": total}
    if completed:
        line["completed"] = completed
    return line


async def watch(
    task: asyncio.Future[Any],
    counts: Callable[[], tuple[int, int] | None],
    line: Callable[[int, int], dict[str, Any]],
    interval: float,
) -> AsyncIterator[dict[str, Any]]:
    """Yield progress lines for ``task`` until it finishes; re-raise its error.

    ``counts`` returns ``(total, completed)``, or ``None`` while the total is not known yet.
    """
    last: tuple[int, int] | None = None
    while True:
        done, _ = await asyncio.wait({task}, timeout=interval)
        if done:
            task.result()
            current = counts()
            if current is not None and (last is None or last[1] != current[0]):
                yield line(current[0], current[0])
            return
        current = counts()
        if current is not None and current != last:
            last = current
            yield line(*current)
