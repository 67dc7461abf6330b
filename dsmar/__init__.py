"""dsmar: co-register multimodal satellite archives with DS-MAR and write aligned Zarr cubes.

This package is the top layer: the command line (`dsmar.cli`) and the Python API (`dsmar.api`:
`open_cube`, `register_region`) over the engine packages; `import dsmar` stays light.
"""

from kernel.version import __version__

__all__ = ["__version__", "open_cube", "register_region", "split_by_band"]


def __getattr__(name: str):
    if name in ("open_cube", "register_region", "split_by_band"):
        from dsmar import api

        return getattr(api, name)
    raise AttributeError(f"module 'dsmar' has no attribute {name!r}")
