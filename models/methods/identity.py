"""`identity`: the zero field, the floor every method must beat."""

import numpy as np

from models.registry import register_method


@register_method("identity")
def make_identity():
    def identity(fixed: np.ndarray, moving: np.ndarray, **_) -> tuple[np.ndarray, np.ndarray]:
        h, w = fixed.shape[-2:]
        return np.zeros((2, h, w), np.float32), np.zeros((h, w), np.float32)

    return identity
