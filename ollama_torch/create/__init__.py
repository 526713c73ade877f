"""Model creation (``/api/create``): from uploaded files (Safetensors directory or GGUF) or from a model."""

from .request import CreateRequest, validate_file_path
from .service import create_model

__all__ = ["CreateRequest", "create_model", "validate_file_path"]
