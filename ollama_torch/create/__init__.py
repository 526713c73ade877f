"""Model creation (``/api/create``): from uploaded files (Safetensors directory or GGUF) or from a model.

``request`` (the request as a value, and the ``CreateModel`` signature) imports no torch; ``service`` runs a
create, with the converters; ``export`` writes a stored model as a GGUF (``gguf``). Importing this package loads only ``request``.
"""

from .request import CreateModel, CreateRequest, ExportModel, ExportRequest, validate_file_path

__all__ = ["CreateModel", "CreateRequest", "ExportModel", "ExportRequest", "validate_file_path"]
