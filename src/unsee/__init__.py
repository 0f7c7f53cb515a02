"""unsee: make text-to-image diffusion models stop producing what people flag."""

__version__ = "0.1.0"

from unsee.errors import UnseeError

__all__ = ["UnseeError", "__version__"]
