"""Metrics of fused volumes: the paper's 3D SSIM/PSNR, multi-scale SSIM and the slice-averaged
8-bit metrics of the results tables."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.intensity import require_finite
from .metrics import (METRIC_NAMES, SSIM_SIGMA, check_same_shape, entropy_bits, paper_metrics,
                      unit_float)

# The 3D results table (``volume_table_metrics``): ``volume_metrics`` of the whole
# volume, then the 2D metrics averaged over axial slices.
VOLUME_TABLE_COLUMNS: tuple[str, ...] = ("PSNR", "SSIM", "MS-SSIM", "EN",
                                         *(f"2D {k}" for k in METRIC_NAMES))


# ----------------------------------------------------------------------------- volumes

# Scale weights of multi-scale SSIM (Wang, Simoncelli & Bovik 2003), finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


_SSIM_RADIUS = 5  # the 11-sample Gaussian window of SSIM


def _ssim_and_cs(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term (Gaussian window 11, sigma 1.5), over the
    map without a window-radius border, for 2D or 3D float64 arrays."""
    def blur(v):
        return ndimage.gaussian_filter(v, SSIM_SIGMA, truncate=_SSIM_RADIUS / SSIM_SIGMA)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    cs = (2 * cov + c2) / (vx + vy + c2)
    ssim_map = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1) * cs
    inner = tuple(slice(_SSIM_RADIUS, -_SSIM_RADIUS) for _ in x.shape)
    return float(ssim_map[inner].mean()), float(cs[inner].mean())


def _halve(x: np.ndarray) -> np.ndarray:
    """2x average pooling along every axis (an odd last row/column/slice is dropped)."""
    x = x[tuple(slice(0, n - n % 2) for n in x.shape)]
    for axis in range(x.ndim):
        x = 0.5 * (x.take(np.arange(0, x.shape[axis], 2), axis)
                   + x.take(np.arange(1, x.shape[axis], 2), axis))
    return x


def ms_ssim_scales(shape: tuple[int, ...]) -> int:
    """How many dyadic scales :func:`ms_ssim` uses for an image of ``shape``: up to five, while
    every side still exceeds the 11-sample window plus its border."""
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and min(shape) // 2 ** scales > 4 * _SSIM_RADIUS:
        scales += 1
    return scales


def ms_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """Multi-scale SSIM of two 2D or 3D images: prod_j cs_j^w_j * ssim_M^w_M over up to five
    dyadic scales. Scales stop while every side still exceeds the 11-sample window (plus its
    border), and the weights of the scales used are renormalised to sum to 1, so small
    images and brain-sized volumes (three or four scales) are measured too."""
    check_same_shape(x, y)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D image, got shape {x.shape}")
    require_finite(x), require_finite(y)
    scales = ms_ssim_scales(x.shape)
    if min(x.shape) <= 2 * _SSIM_RADIUS:
        raise ValueError(f"image {x.shape} is smaller than the SSIM window")
    weights = np.array(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    result = 1.0
    for scale, weight in enumerate(weights):
        ssim_value, cs = _ssim_and_cs(x, y, data_range)
        term = ssim_value if scale == scales - 1 else cs
        result *= max(term, 0.0) ** weight
        x, y = _halve(x), _halve(y)
    return float(result)


def volume_metrics(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """Whole-volume quality of a fused volume, float [0, 1] (k, j, i) arrays of one shape:
    the paper's PSNR and SSIM (3D Gaussian window), MS-SSIM (3D) averaged over the two
    sources, and EN of F's 256-bin 8-bit histogram over all its voxels. MS-SSIM is left out
    of volumes too thin for two scales (``ms_ssim_scales``), where it would equal SSIM."""
    paper = paper_metrics(a, b, f)
    xa, xb, xf = unit_float(a), unit_float(b), unit_float(f)
    grey = np.floor(xf * 255.0 + 0.5).astype(np.uint8)
    result = {"PSNR": paper["PSNR"], "SSIM": paper["SSIM"]}
    if ms_ssim_scales(xf.shape) > 1:
        result["MS-SSIM"] = (ms_ssim(xa, xf) + ms_ssim(xb, xf)) / 2.0
    return result | {"EN": entropy_bits(np.bincount(grey.ravel(), minlength=256))}


# --------------------------------------------------------------------------- quality

def volume_fusion_metrics(a01: np.ndarray, b01: np.ndarray, fused01: np.ndarray,
                          slices: int = 5) -> dict[str, float]:
    """Mean of the 2D ``fusion_metrics`` over up to ``slices`` axial slices spread evenly
    through the slices where either input has signal (grey [0, 1] volumes of one shape)."""
    from .metrics import fusion_metrics

    if not a01.shape == b01.shape == fused01.shape or a01.ndim != 3:
        raise ValueError(f"need three (k, j, i) volumes of one shape, got {a01.shape}, "
                         f"{b01.shape}, {fused01.shape}")
    per_slice = [fusion_metrics(a01[k], b01[k], fused01[k])
                 for k in measured_slices(a01, b01, slices)]
    return {name: float(np.mean([m[name] for m in per_slice])) for name in per_slice[0]}


def volume_table_metrics(a01: np.ndarray, b01: np.ndarray, fused01: np.ndarray,
                         box: tuple[slice, ...], slices: int = 30) -> dict[str, float]:
    """The 3D results table's columns (``VOLUME_TABLE_COLUMNS``): PSNR, SSIM, MS-SSIM
    and EN of the volume inside ``box`` (``volume_metrics``), and the 2D metrics
    averaged over ``slices`` axial slices (``volume_fusion_metrics``), prefixed "2D "."""

    per_slice = volume_fusion_metrics(a01, b01, fused01, slices=slices)
    return {**volume_metrics(a01[box], b01[box], fused01[box]),
            **{f"2D {k}": v for k, v in per_slice.items()}}


def measured_slices(a01: np.ndarray, b01: np.ndarray, slices: int) -> np.ndarray:
    """Indices of up to ``slices`` axial slices spread evenly through the slices where either
    input has signal: the slices ``volume_fusion_metrics`` scores."""
    filled = np.flatnonzero(a01.any(axis=(1, 2)) | b01.any(axis=(1, 2)))
    if len(filled) == 0:
        raise ValueError("both volumes are empty; no slice to measure")
    chosen = filled[np.linspace(0, len(filled) - 1, min(slices, len(filled))).round().astype(int)]
    return np.unique(chosen)
