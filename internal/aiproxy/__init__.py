"""aiproxy: a self-hosted, OpenAI-compatible LLM gateway."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("aiproxy")
except _metadata.PackageNotFoundError:  # running from a checkout without install
    __version__ = "0.0.0+local"
