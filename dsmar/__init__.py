"""dsmar: co-register multimodal satellite archives with DS-MAR and write aligned Zarr cubes.

This package is the top layer: the command line (`dsmar.cli`) over the engine packages.
"""

from kernel.version import __version__

__all__ = ["__version__"]
