"""`mind`: MIND-SSC self-similarity descriptors (Heinrich et al. 2013) with the same coarse-to-fine window
matching, outlier rejection and dense interpolation as `cfog` (models.classical)."""

from __future__ import annotations

from functools import partial

from models.classical.features import mind_ssc
from models.classical.register import window_method
from models.methods.windows import WINDOW_OPTIONS
from models.registry import register_method

RADIUS = 1
DILATION = 1
describe = partial(mind_ssc, radius=RADIUS, dilation=DILATION)


@register_method("mind", options=WINDOW_OPTIONS)
def make_mind():
    return window_method(describe)
