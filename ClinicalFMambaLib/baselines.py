"""Classical fusion baselines for co-registered images or volumes.

All functions take two arrays of one shape (any ndim: 2D slices, 3D volumes), meant as
float intensities in [0, 1], and return an array of that shape whose dtype is numpy's
promotion of the inputs with float32 (float32 in, float32 out; float64 in, float64 out).
NaN or infinite values raise ValueError.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage
from skimage.transform import pyramid_reduce, resize

# skimage's pyramid default: sigma = 2 * factor / 6 covers >99 % of the Gaussian for factor 2.
_PYRAMID_SIGMA = 2.0 * 2.0 / 6.0


def _float_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"inputs must have one shape, got {a.shape} and {b.shape}")
    if a.ndim == 0:
        raise ValueError("inputs must be arrays, not scalars")
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("inputs contain NaN or infinite values")
    return a, b, dtype


def mean_fusion(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Voxel-wise average ``(a + b) / 2``."""
    a, b, _ = _float_pair(a, b)
    return (a + b) / 2


def max_fusion(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Voxel-wise maximum."""
    a, b, _ = _float_pair(a, b)
    return np.maximum(a, b)


def _expand(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # Resize to the exact finer shape (odd sizes included), then smooth like pyramid_expand.
    up = resize(x, shape, order=1, mode="reflect", anti_aliasing=False)
    return ndimage.gaussian_filter(up, sigma=_PYRAMID_SIGMA, mode="reflect")


def _laplacian_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """Detail levels (finest first) followed by the coarsest Gaussian level."""
    pyramid = []
    for _ in range(levels):
        if min(x.shape) < 2:  # nothing left to halve along some axis
            break
        coarse = pyramid_reduce(x, downscale=2, sigma=_PYRAMID_SIGMA, channel_axis=None)
        pyramid.append(x - _expand(coarse, x.shape))
        x = coarse
    pyramid.append(x)
    return pyramid


def laplacian_pyramid_fusion(a: np.ndarray, b: np.ndarray, levels: int = 4) -> np.ndarray:
    """Burt-Adelson Laplacian-pyramid fusion.

    Both inputs are decomposed into ``levels`` band-pass levels (Gaussian reduce by 2 per
    level, ceil for odd sizes; fewer levels once an axis is down to one voxel) plus a
    low-pass base. Each band-pass coefficient is taken from the input with the larger
    absolute value; the bases are averaged; the pyramid is collapsed. The result is clipped
    to the joint intensity range of the inputs (coefficient selection can overshoot).
    Identical inputs are reproduced exactly up to float rounding.
    """
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    a, b, dtype = _float_pair(a, b)
    pa = _laplacian_pyramid(a.astype(np.float64), levels)
    pb = _laplacian_pyramid(b.astype(np.float64), levels)
    fused = (pa[-1] + pb[-1]) / 2
    for da, db in zip(reversed(pa[:-1]), reversed(pb[:-1])):
        detail = np.where(np.abs(da) >= np.abs(db), da, db)
        fused = _expand(fused, detail.shape) + detail
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    return np.clip(fused, lo, hi).astype(dtype)


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mean": mean_fusion,
    "max": max_fusion,
    "laplacian": laplacian_pyramid_fusion,
}
