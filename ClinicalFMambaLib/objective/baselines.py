"""Classical fusion baselines for co-registered images or volumes: the references of the
metric objective and of every comparison (evaluation).

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


def _max_abs(da: np.ndarray, db: np.ndarray) -> np.ndarray:
    return np.where(np.abs(da) >= np.abs(db), da, db)


def _collapse(base: np.ndarray, details: list[np.ndarray]) -> np.ndarray:
    for detail in reversed(details):
        base = _expand(base, detail.shape) + detail
    return base


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
    details = [_max_abs(da, db) for da, db in zip(pa[:-1], pb[:-1])]
    fused = _collapse((pa[-1] + pb[-1]) / 2, details)
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    return np.clip(fused, lo, hi).astype(dtype)


def detail_transfer(a: np.ndarray, b: np.ndarray, fused: np.ndarray, strength: float = 1.0,
                    finest_levels: int = 2, levels: int = 4) -> np.ndarray:
    """``fused`` with its ``finest_levels`` finest band-pass levels moved by ``strength``
    (0: unchanged, 1: replaced) towards the Laplacian pyramid fusion's choice of the sources'
    coefficients (larger absolute value); its coarser levels and base are kept. Clipped to
    the joint intensity range of the sources.

    A way to put the sources' own fine detail into another fusion (e.g. a network's) without
    averaging its contrast away, as the pyramid's averaged base does.
    """
    if not 0 <= finest_levels <= levels:
        raise ValueError(f"finest_levels must be in [0, levels={levels}], got {finest_levels}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    a, b, dtype = _float_pair(a, b)
    _, fused, _ = _float_pair(a, fused)  # same shape, finite
    pa, pb, pf = (_laplacian_pyramid(x.astype(np.float64), levels) for x in (a, b, fused))
    details = [df + strength * (_max_abs(da, db) - df) if k < finest_levels else df
               for k, (da, db, df) in enumerate(zip(pa, pb, pf[:-1]))]
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    return np.clip(_collapse(pf[-1], details), lo, hi).astype(dtype)


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mean": mean_fusion,
    "max": max_fusion,
    "laplacian": laplacian_pyramid_fusion,
}
