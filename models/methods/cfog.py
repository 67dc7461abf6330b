"""`cfog`: channel features of oriented gradients (Ye et al. 2019) matched on a grid of windows by FFT,
coarse to fine, with outlier rejection and a smooth dense field (models.classical)."""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np

from dsmar.errors import InputError
from models.api import register_method
from models.classical.features import cfog
from models.classical.register import WindowConfig, register_windows
from models.preprocess import to_gray

ORIENTATIONS = 9
SIGMA = 0.8


def window_config(options: dict) -> WindowConfig:
    """A WindowConfig with the caller's overrides; unknown option names are an InputError."""
    names = {f.name for f in dataclasses.fields(WindowConfig)}
    unknown = set(options) - names
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
    return WindowConfig(**options)


@register_method("cfog")
def make_cfog():
    def run(fixed, moving, *, fixed_modality, moving_modality, **options):
        describe = partial(cfog, orientations=ORIENTATIONS, sigma=SIGMA)
        return register_windows(
            to_gray(fixed, fixed_modality), to_gray(moving, moving_modality), describe, window_config(options)
        )

    return run
