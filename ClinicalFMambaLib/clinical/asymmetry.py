"""Left-right asymmetry of bright FLAIR-like signal: the classical slice anchor the
tumour evidence is measured against, and the one-sided bright pixels that weight its
heatmap."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Bright FLAIR voxels of the asymmetry anchor: the top 3 % of the brain's intensities.
ANCHOR_BRIGHT_FRACTION = 0.03
ANCHOR_SIGMA_VOXELS = 3.0


# --------------------------------------------------------------------------- anchors

def bright_voxels(flair: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The brightest ANCHOR_BRIGHT_FRACTION of the brain's FLAIR voxels."""
    level = np.quantile(flair[brain], 1.0 - ANCHOR_BRIGHT_FRACTION)
    return brain & (flair > level)


def brain_columns(brain: np.ndarray) -> tuple[int, int]:
    """First and last column (x) holding brain: the mid-sagittal column about which the
    asymmetry measures compare sides is their middle."""
    xs = np.nonzero(brain.any(axis=(0, 1)))[0]
    return int(xs[0]), int(xs[-1])


def asymmetry_scores(flair: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Classical slice score: how one-sided the bright FLAIR voxels of each axial slice are,
    |left - right| counted about the brain's mid-sagittal column, over the brain's size."""
    if not brain.any():
        return np.zeros(flair.shape[0])
    bright = bright_voxels(flair, brain)
    first, last = brain_columns(brain)
    middle = (first + last + 1) / 2
    columns = np.arange(brain.shape[2]) + 0.5
    left = bright[:, :, columns < middle].sum(axis=(1, 2))
    right = bright[:, :, columns >= middle].sum(axis=(1, 2))
    return np.abs(left - right) / max(1, int(brain.sum(axis=(1, 2)).max()))


def bright_heatmap(flair: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Classical heatmap: the bright FLAIR voxels smoothed in-plane (Gaussian, 3 voxels)."""
    bright = bright_voxels(flair, brain).astype(np.float32)
    return ndimage.gaussian_filter(bright, sigma=(0, ANCHOR_SIGMA_VOXELS, ANCHOR_SIGMA_VOXELS))


# Robust z-score a voxel's (smoothed) FLAIR needs, and its lead over the mirrored side.
LESION_Z = 2.5
ASYMMETRY_Z = 1.5
EDGE_VOXELS = 3


def mirrored(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``volume`` flipped left-right about the brain's middle column."""
    first, last = brain_columns(brain)
    shift = first + last - (volume.shape[2] - 1)
    return np.roll(volume[:, :, ::-1], shift, axis=2)


def one_sided_bright(volume: np.ndarray, brain: np.ndarray, smooth, mirror_smooth,
                     edge: int, edge_structure: np.ndarray | None = None) -> np.ndarray:
    """Voxels well above the brain's median (robust z-score over the brain, smoothed by
    ``smooth``) that also lead the mirrored hemisphere (smoothed by ``mirror_smooth``) and lie
    ``edge`` erosions inside the brain: bright and one-sided, as tumour and oedema are."""
    values = volume[brain]
    median = float(np.median(values))
    spread = float(np.median(np.abs(values - median))) * 1.4826 or 1.0
    z = ndimage.gaussian_filter((volume.astype(np.float32) - median) / spread, smooth)
    other_side = ndimage.gaussian_filter(mirrored(z, brain), mirror_smooth)
    inner = ndimage.binary_erosion(brain, structure=edge_structure, iterations=edge)
    return (z > LESION_Z) & (z - other_side > ASYMMETRY_Z) & inner


def one_sided_pixels(images: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``one_sided_bright`` on prepared slices (about 2.5 mm pixels, so in-plane smoothing of
    0.5 and 1.5 pixels and a 1-pixel edge). None where nothing is one-sided, as on most
    T1-weighted inputs."""
    if not brain.any():
        return np.zeros(images.shape, bool)
    return one_sided_bright(images, brain, (0, 0.5, 0.5), (0, 1.5, 1.5), 1,
                            np.ones((1, 3, 3), bool))


def one_sided_share(pixels: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Slice cue: per slice, the ``one_sided_pixels`` over the largest slice's brain area."""
    return pixels.sum(axis=(1, 2)) / max(1, int(brain.sum(axis=(1, 2)).max()))
