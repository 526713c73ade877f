"""The HTTP layer (aiohttp): parse and validate, call a service, stream NDJSON. Imports no torch."""

from .app import make_app

__all__ = ["make_app"]
