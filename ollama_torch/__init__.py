"""ollama-torch: an Ollama-compatible server whose engine is PyTorch + Hugging Face Transformers."""

__version__ = "0.1.0"

# The Ollama API version this server speaks. Clients gate features on /api/version
# (think >= 0.12, logprobs >= 0.12.11), so report the API level we implement, not our own version.
OLLAMA_API_VERSION = "0.12.11"
