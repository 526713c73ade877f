"""The seam between the HTTP layer and the engine: what routes need from a scheduler.

``ollama_torch.engine.scheduler.Scheduler`` implements it; unit tests may pass a scripted stand-in. Typed
structurally so this module imports nothing from the engine (and so no torch).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from ..names import ModelName
from ..store import StoredModel


class RunnerHandle(Protocol):
    stored: StoredModel
    loaded: Any
    worker: Any
    expires_at: float


class EngineService(Protocol):
    async def acquire(self, stored: StoredModel, keep_alive: float | None) -> tuple[Any, float]: ...

    def release(self, runner: Any) -> None: ...

    def generate(self, runner: Any, stored: StoredModel, job: Any, opts: Any, format_spec: Any = None) -> AsyncIterator[Any]: ...

    async def unload_model(self, stored: StoredModel) -> None: ...

    async def forget(self, name: ModelName) -> None: ...

    def loaded_models(self) -> list[Any]: ...

    def num_ctx_for(self, runner: Any) -> int: ...
