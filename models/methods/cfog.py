"""`cfog`: channel features of oriented gradients (Ye et al. 2019) matched on a grid of windows by FFT,
coarse to fine, with outlier rejection and a smooth dense field (models.classical)."""

from __future__ import annotations

from functools import partial

from models.api import register_method
from models.classical.features import cfog
from models.classical.register import window_method

ORIENTATIONS = 9
SIGMA = 0.8


@register_method("cfog")
def make_cfog():
    return window_method(partial(cfog, orientations=ORIENTATIONS, sigma=SIGMA))
