"""The ``ollama-torch`` command line: ``serve`` runs the server, every other command is an API client.

Imports nothing heavy (no torch, transformers or aiohttp) so client commands start fast.
"""
