"""The `tgi` backend: a remote text-generation-inference server (or any server speaking TGI's API)."""

from backends.tgi.backend import TGIBackend
from backends.tgi.config import TGIBackendConfig

__all__ = ["TGIBackend", "TGIBackendConfig"]
