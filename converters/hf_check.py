"""Whether Transformers can build a Hugging Face directory's architecture, checked before anything is
stored (the one part of inspecting a directory that needs Transformers; ``hf_inspect`` reads files only)."""

from __future__ import annotations

from pathlib import Path

from .hf_inspect import HFModelInfo, UnsupportedModel


def check_architecture(model_dir: Path, info: HFModelInfo) -> None:
    """Build the config with Transformers and check it provides the architecture's class."""
    import transformers

    if info.config.get("auto_map"):
        raise UnsupportedModel(
            f'unsupported architecture "{info.architecture or info.family}": it needs trust_remote_code, '
            "which ollama-torch does not run"
        )
    try:
        transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    except (ValueError, KeyError, OSError) as exc:
        label = info.architecture or info.config.get("model_type") or "unknown"
        raise UnsupportedModel(f'unsupported architecture "{label}": {exc}') from None
    if not info.architecture:
        raise UnsupportedModel("config.json does not name its architecture (\"architectures\" is empty)")
    if not hasattr(transformers, info.architecture):
        raise UnsupportedModel(f'unsupported architecture "{info.architecture}"')
