"""Pseudo tumour masks for brain volumes that have FLAIR but no segmentation.

Gliomas and metastases show as a one-sided FLAIR hyperintensity (tumour and oedema). The rule:
FLAIR voxels well above the brain's median (robust z-score, median and MAD over the brain,
lightly smoothed) that are also clearly brighter than the mirrored hemisphere at the same
place, away from the brain's edge; the largest connected region, closed and filled. It is
measured against the real segmentations of the labelled cases in docs/classifier.md, where
it finds most tumour slices but undersegments the oedema; so training treats a ring around
the pseudo mask as unknown (neither tumour nor background) and only the pseudo mask itself
and the brain away from it as labelled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .tumour_slices import brain_columns

# Robust z-score a voxel's (smoothed) FLAIR needs, and its lead over the mirrored side.
LESION_Z = 2.5
ASYMMETRY_Z = 1.5
EDGE_VOXELS = 3
# In-plane width (voxels of the input grid) of the unknown ring around a pseudo mask.
UNKNOWN_RING_VOXELS = 12


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
