"""The installed dsmar version: recorded in every cube, compared across Dask workers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dsmar")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
