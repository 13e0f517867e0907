"""Axial slices of labelled brain volumes for the tumour-evidence network, and the
classical anchors it is measured against.

A volume is prepared exactly as ``classify_volume`` prepares it (radiological axial view,
window over the brain, square crop around the brain, resized); the tumour segmentation
goes through the same orientation and crop, so every slice image has its pixel mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from .classifier_volumes import crop_box, prepare_volume, resize_slices

SEGMENTATION_NAME = "tumor_seg.nii.gz"
# Bright FLAIR voxels of the asymmetry anchor: the top 3 % of the brain's intensities.
ANCHOR_BRIGHT_FRACTION = 0.03
ANCHOR_SIGMA_VOXELS = 3.0


@dataclass(frozen=True)
class LabelledSlices:
    """Prepared slices of one volume with their tumour masks at the model's resolution."""

    name: str
    images: np.ndarray       # (Z, S, S) float32 in [0, 1]
    masks: np.ndarray        # (Z, S, S) bool
    known: np.ndarray        # (Z, S, S) bool, pixels whose label is known (all, for real masks)
    brain_area: np.ndarray   # (Z,) brain pixels per slice of the input grid
    has_tumour: np.ndarray   # (Z,) bool, any tumour voxel in the slice (input grid)


def read_array(path: str | Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def labelled_slices(name: str, volume: np.ndarray, segmentation: np.ndarray, size: int,
                    direction=None, unknown: np.ndarray | None = None) -> LabelledSlices:
    """Slices of ``volume`` as the model sees them, with ``segmentation > 0`` as masks and,
    for pseudo masks, the ``unknown`` voxels left unlabelled."""
    slices = prepare_volume(volume, size, direction)

    def model_grid(voxels: np.ndarray) -> np.ndarray:
        oriented = slices.orientation.apply(voxels)
        return resize_slices(crop_box(oriented.astype(np.float32), slices.box), size) >= 0.5

    masks = model_grid(segmentation > 0)
    known = ~model_grid(unknown) | masks if unknown is not None else np.ones_like(masks)
    return LabelledSlices(name, slices.images, masks, known, slices.brain_area,
                          (segmentation > 0).any(axis=(1, 2)))


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


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
