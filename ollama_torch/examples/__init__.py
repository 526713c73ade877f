"""Runnable examples that drive a running server with the official ``ollama`` Python client:
``python -m ollama_torch.examples.generate_example --prompt "..."`` and ``...chat_example``."""
