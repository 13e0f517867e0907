"""Labels for the tumour-evidence network: axial slices of labelled brain volumes with their
masks, and pseudo masks for volumes that have FLAIR but no segmentation.

A volume is prepared exactly as ``classify_volume`` prepares it (radiological axial view,
window over the brain, square crop around the brain, resized); the tumour segmentation
goes through the same orientation and crop, so every slice image has its pixel mask.

Pseudo masks: gliomas and metastases show as a one-sided FLAIR hyperintensity (tumour and
oedema). The rule: FLAIR voxels well above the brain's median (robust z-score, median and
MAD over the brain, lightly smoothed) that are also clearly brighter than the mirrored
hemisphere at the same place, away from the brain's edge; the largest connected region,
closed and filled. It is measured against the real segmentations of the labelled cases in
docs/classifier.md, where it finds most tumour slices but undersegments the oedema; so
training treats a ring around the pseudo mask as unknown (neither tumour nor background) and
only the pseudo mask itself and the brain away from it as labelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from ..clinical.asymmetry import EDGE_VOXELS, one_sided_bright
from ..clinical.volumes import crop_box, prepare_volume, resize_slices

SEGMENTATION_NAME = "tumor_seg.nii.gz"


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


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]


# In-plane width (voxels of the input grid) of the unknown ring around a pseudo mask.
UNKNOWN_RING_VOXELS = 12


def flair_lesion_mask(flair: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool pseudo mask of the one-sided FLAIR hyperintensity of a volume; empty
    when there is none."""
    candidates = one_sided_bright(flair, brain, 1.0, 3.0, EDGE_VOXELS)
    labels, count = ndimage.label(candidates)
    if count == 0:
        return candidates
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = ndimage.binary_closing(labels == int(np.argmax(sizes)), iterations=2)
    return ndimage.binary_fill_holes(mask) & brain


def unknown_ring(mask: np.ndarray) -> np.ndarray:
    """In-plane ring of UNKNOWN_RING_VOXELS around ``mask`` (where the pseudo mask may have
    missed tumour), also on the slices next to the mask's first and last."""
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    grown = ndimage.binary_dilation(mask, structure, iterations=UNKNOWN_RING_VOXELS)
    grown |= ndimage.binary_dilation(grown, np.ones((3, 1, 1), bool), iterations=2)
    return grown & ~mask
