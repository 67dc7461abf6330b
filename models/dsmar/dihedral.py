"""The eight symmetries of the pixel grid (90-degree rotations, with and without a mirror) on images and fields.

Test-time augmentation registers the pair in a rotated or mirrored frame and maps the field back;
averaging over frames cancels the network's orientation-dependent bias. A symmetry `(k, flip)`
mirrors columns first (if `flip`), then rotates by `k` quarter turns counter-clockwise (`np.rot90`).
Fields follow Contract 1: (dy, dx) in pixels on the last two axes.
"""

from __future__ import annotations

import numpy as np

Symmetry = tuple[int, bool]


def symmetries(count: int) -> list[Symmetry]:
    """The first `count` symmetries: 1 (none), 2 (half turn), 4 (rotations) or 8 (rotations and mirrors)."""
    table = {
        1: [(0, False)],
        2: [(0, False), (2, False)],
        4: [(k, False) for k in range(4)],
        8: [(k, f) for f in (False, True) for k in range(4)],
    }
    if count not in table:
        raise ValueError(f"test-time augmentation takes 1, 2, 4 or 8 symmetries, got {count}")
    return table[count]


def apply(array: np.ndarray, sym: Symmetry) -> np.ndarray:
    """Move an image (..., H, W) into the frame of `sym`."""
    k, flip = sym
    if flip:
        array = array[..., ::-1]
    return np.ascontiguousarray(np.rot90(array, k, axes=(-2, -1)))


def undo(array: np.ndarray, sym: Symmetry) -> np.ndarray:
    """Move an image (..., H, W) back from the frame of `sym`."""
    k, flip = sym
    array = np.rot90(array, -k, axes=(-2, -1))
    if flip:
        array = array[..., ::-1]
    return np.ascontiguousarray(array)


def _quarter_turns(dy: np.ndarray, dx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    # A counter-clockwise quarter turn maps (y, x) -> (W - 1 - x, y), so vectors map (dy, dx) -> (-dx, dy).
    for _ in range(k % 4):
        dy, dx = -dx, dy
    return dy, dx


def apply_field(field: np.ndarray, sym: Symmetry) -> np.ndarray:
    """The field (2, H, W) that relates the pair once both images are moved into the frame of `sym`."""
    k, flip = sym
    dy, dx = field[0], field[1]
    if flip:
        dx = -dx[..., ::-1]
        dy = dy[..., ::-1]
    dy, dx = _quarter_turns(np.rot90(dy, k), np.rot90(dx, k), k)
    return np.ascontiguousarray(np.stack([dy, dx]))


def undo_field(field: np.ndarray, sym: Symmetry) -> np.ndarray:
    """The field (2, H, W) in the original frame of a field found in the frame of `sym`."""
    k, flip = sym
    dy, dx = _quarter_turns(np.rot90(field[0], -k), np.rot90(field[1], -k), -k)
    if flip:
        dx = -dx[..., ::-1]
        dy = dy[..., ::-1]
    return np.ascontiguousarray(np.stack([dy, dx]))
