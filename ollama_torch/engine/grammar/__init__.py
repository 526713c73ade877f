"""Structured outputs and constrained tool calls: JSON-Schema and Lark grammars as token masks (llguidance).

``format`` (the request's ``format`` value, validated torch-free), ``schema``/``closed``/``regex``/``limits``
(what the schema is turned into before llguidance sees it, and what it refuses), ``lark`` and ``tools``
(grammars for reasoning-then-JSON and for tool calls), ``request`` (which grammar a request gets), and
``compiler`` (the per-model compiler, per-request states and the batched masks; the one module here that
needs torch). This package's ``__init__`` imports nothing, so the HTTP layer can use ``format`` alone.
"""
