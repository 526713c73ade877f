"""HF checkpoint / GGUF <-> store conversions, pure library.

Nothing here touches the HTTP layer or the store's layout: functions take paths and return data or write
directories, so ``/api/create`` (on a worker thread) and the CLI can both call them.
"""
