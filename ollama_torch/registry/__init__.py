"""Pull and push over Ollama's registry protocol (OCI distribution v2), and pulls from the Hugging Face Hub.

Imports no torch: ``client`` speaks HTTP (aiohttp), ``download`` keeps Ollama's resumable partial files,
``pull``/``push`` produce the status lines ``/api/pull`` and ``/api/push`` stream, ``hf`` maps
``hf.co/<org>/<repo>:<tag>`` onto repository files and the create service.
"""

from .client import (
    InsecureProtocol,
    RegistryClient,
    RegistryError,
    RegistryNotFound,
    TransferOptions,
    Unauthorized,
)
from .download import DigestMismatch, Transfers
from .hf import HfRef, HfSelection, HfSelectionError, parse_hf_name, pull_hf, select_hf_files
from .pull import blocking_pull, pull_model
from .push import push_model

__all__ = [
    "DigestMismatch",
    "HfRef",
    "HfSelection",
    "HfSelectionError",
    "InsecureProtocol",
    "RegistryClient",
    "RegistryError",
    "RegistryNotFound",
    "TransferOptions",
    "Transfers",
    "Unauthorized",
    "blocking_pull",
    "parse_hf_name",
    "pull_hf",
    "pull_model",
    "push_model",
    "select_hf_files",
]
