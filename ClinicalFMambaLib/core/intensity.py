"""Intensity normalisation and colour handling shared by training and inference."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image


def normalize_intensity(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Map an image or volume to float32 [0, 1].

    8-bit data (PNG/JPEG) is already display-scaled: divided by 255. Anything else (CT in
    Hounsfield units, MRI in scanner units) is clipped to the [low, high] percentiles of its
    foreground, the voxels above the background, so that a zero background (skull-stripped
    MRI, air around the head) does not pull the percentiles down.
    """
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError("image is empty")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    data = image.astype(np.float32)
    if not np.isfinite(data).all():
        raise ValueError("image contains NaN or infinite values")
    # Background: zero where zeros are common (skull-stripped MRI, whose resampling can leave
    # small negative values at the brain's edge), else the minimum (air in CT).
    background = 0.0 if np.count_nonzero(data == 0) > 0.1 * data.size else data.min()
    foreground = data[data > background]
    if foreground.size == 0:
        return np.zeros_like(data)
    lo, hi = np.percentile(foreground, [low, high])
    lo = min(lo, background) if background >= 0 else lo  # keep a zero background at 0
    if hi <= lo:
        return (data > lo).astype(np.float32)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def signal_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels of ``mask``, grown by ``margin`` and clipped to the
    array; None when nothing is set."""
    box = []
    for axis in range(mask.ndim):
        filled = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if len(filled) == 0:
            return None
        box.append(slice(max(int(filled[0]) - margin, 0), int(filled[-1]) + 1 + margin))
    return tuple(box)


# Integer images with at most this many distinct values are label maps (segmentations).
MAX_LABELS = 16


def label_count(image: np.ndarray) -> int | None:
    """How many labels an integer image with few distinct values (a segmentation) holds;
    None for an image of intensities."""
    if not np.issubdtype(image.dtype, np.integer) or image.size == 0:
        return None
    flat = image.ravel()
    values = np.unique(flat[::max(1, flat.size // 1_000_000)])  # a sample: volumes are large
    return len(values) if 2 <= len(values) <= MAX_LABELS else None


def warn_if_label_map(image: np.ndarray, path: str | Path) -> None:
    """Fusion blends intensities: a segmentation fused with an image gives nothing useful."""
    count = label_count(image)
    if count is not None:
        warnings.warn(f"{path} looks like a label map (a segmentation: {count} distinct integer "
                      "values), not an image; its fusion blends labels into intensities",
                      stacklevel=3)


def is_colour(image: np.ndarray) -> bool:
    """True for an (H, W, 3|4) RGB(A) image."""
    return image.ndim == 3 and image.shape[-1] in (3, 4)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) uint8 YCbCr (JPEG full-range BT.601, via Pillow)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3])).convert("YCbCr"))


def ycbcr_to_rgb(y: np.ndarray, cbcr: np.ndarray) -> np.ndarray:
    """Recombine a float luma in [0, 1] with the source's uint8 Cb/Cr into uint8 RGB."""
    y8 = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)
    ycc = np.dstack([y8, cbcr[..., 0], cbcr[..., 1]])
    return np.asarray(Image.fromarray(ycc, mode="YCbCr").convert("RGB"))


def split_luma(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(luma or grey in [0, 1], CbCr of a colour image or None)."""
    if is_colour(image):
        if image.dtype != np.uint8:
            raise ValueError("colour images must be 8-bit RGB")
        ycc = rgb_to_ycbcr(image)
        return ycc[..., 0].astype(np.float32) / 255.0, ycc[..., 1:]
    if image.ndim != 2:
        raise ValueError(f"expected a 2D grey or (H, W, 3) colour image, got shape {image.shape}")
    return normalize_intensity(image), None


# Float inputs this close outside [0, 1] are rounding noise, not wrong scaling.
RANGE_TOLERANCE = 1e-6


# ----------------------------------------------------------------------------- input handling

def require_finite(x: np.ndarray) -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError("image contains NaN or infinite values")


def to_gray8(img: np.ndarray) -> np.ndarray:
    """Convert one 2D image to 8-bit grey.

    Float input must lie in [0, 1] (up to 1e-6, clipped) and becomes ``floor(255 * x + 0.5)``
    (round half up, as MATLAB ``im2uint8``). Integer input must lie in 0..255 and is kept.
    Raises ValueError for non-2D input, NaN/inf, out-of-range values or other dtypes.
    """
    x = np.asarray(img)
    if x.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError("integer image values must lie in 0..255")
        return x.astype(np.uint8)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"unsupported dtype {x.dtype}; use float in [0, 1] or uint8")
    require_finite(x)
    if x.size and (x.min() < -RANGE_TOLERANCE or x.max() > 1 + RANGE_TOLERANCE):
        raise ValueError("float image values must lie in [0, 1]; rescale first")
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
