"""dsmar: co-register multimodal satellite archives with DS-MAR and write aligned Zarr cubes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dsmar")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
