"""Volumes for the tumour classifier: orientation, brain mask and axial slices.

Volumes are turned to the radiological axial view of the training JPEGs (anterior up,
patient right on the image's left), windowed over the brain and cropped in-plane to the
brain's bounding box so a skull-stripped brain fills the frame the way a head does in the
JPEGs; every slice is then prepared as a 2D image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.filters import threshold_otsu

from .images import resize_batch, window

# Margin around the brain's in-plane bounding box, as a fraction of its larger side.
BRAIN_BOX_MARGIN = 0.08
# Slices whose brain area is below this fraction of the largest slice's are "edge" slices.
MIN_BRAIN_FRACTION = 0.25
_LPS_TARGET = (2, 1, 0)  # physical rows (S, P, L) for the array axes (z, y, x)
# Neighbouring voxels of an MR volume are strongly correlated (r >= 0.74 on every brain3d,
# healthy and sample volume at its own resolution, docs/classifier.md); of random noise, not
# at all (|r| < 0.01). Below this a volume is noise, whatever the scope guard makes of it.
MIN_NEIGHBOUR_CORRELATION = 0.3


@dataclass(frozen=True)
class Orientation:
    """Axis permutation and flips that turn an input array into (S, A->P rows, R->L columns)."""

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    def apply(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.axes)
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis)
        return out

    def invert(self, array: np.ndarray) -> np.ndarray:
        for axis, flip in enumerate(self.flips):
            if flip:
                array = np.flip(array, axis)
        return np.ascontiguousarray(np.transpose(array, np.argsort(self.axes)))


def orientation_from_direction(direction=None, space: str = "LPS") -> Orientation:
    """Orientation of a (k, j, i) array whose index axes i, j, k point along the columns of
    the 3x3 ``direction`` matrix (SimpleITK's ``GetDirection()``, row-major, in LPS; or
    Slicer's IJK-to-RAS directions with ``space="RAS"``).

    ``None`` means the array is already axial with rows anterior->posterior and columns
    patient right->left (the BraTS/SimpleITK identity-direction convention).
    """
    if direction is None:
        return Orientation((0, 1, 2), (False, False, False))
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    if space.upper() == "RAS":
        matrix = matrix * np.array([[-1.0], [-1.0], [1.0]])
    elif space.upper() != "LPS":
        raise ValueError(f"space must be 'LPS' or 'RAS', got {space!r}")
    # Column c of the matrix is index axis c (i, j, k); array axis a holds index axis 2 - a.
    by_array_axis = matrix[:, ::-1]
    axes, flips = [], []
    for physical in _LPS_TARGET:
        axis = int(np.argmax(np.abs(by_array_axis[physical])))
        axes.append(axis)
        flips.append(bool(by_array_axis[physical, axis] < 0))
    if sorted(axes) != [0, 1, 2]:
        raise ValueError(f"direction {matrix.tolist()} is too oblique to tell the axial axis")
    # Slice order along S-I is kept so per-slice results index the input's slices.
    flips[0] = False
    return Orientation(tuple(axes), tuple(flips))


def neighbour_correlation(volume: np.ndarray) -> float:
    """The smallest correlation between neighbouring voxels along any axis, over the voxels
    above the volume's minimum (its background); NaN where it is undefined (constant)."""
    array = np.asarray(volume, np.float32)
    foreground = array > array.min()
    found = []
    for axis in range(array.ndim):
        if array.shape[axis] < 2:
            continue
        first, second = (np.delete(x, -1, axis) for x in (array, foreground)), \
            (np.delete(x, 0, axis) for x in (array, foreground))
        (a, mask_a), (b, mask_b) = first, second
        both = mask_a | mask_b
        if both.sum() > 100 and a[both].std() > 0 and b[both].std() > 0:
            found.append(float(np.corrcoef(a[both], b[both])[0, 1]))
    return min(found) if found else float("nan")


def noise_problem(volume: np.ndarray) -> str | None:
    """Why ``volume`` is noise rather than an image, or None."""
    correlation = neighbour_correlation(volume)
    if correlation < MIN_NEIGHBOUR_CORRELATION:
        return ("it looks like noise, not an image: neighbouring voxels are uncorrelated "
                f"(r = {round(correlation, 2) + 0.0:.2f})")
    return None


def check_volume(volume: np.ndarray, name: str = "volume") -> np.ndarray:
    array = np.asarray(volume)
    if array.ndim != 3:
        raise ValueError(f"{name} must be a 3D (z, y, x) array, got shape {array.shape}")
    if min(array.shape[1:]) < 8:
        raise ValueError(f"{name} slices are too small ({array.shape[1:]}); need at least 8x8")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if array.min() == array.max():
        raise ValueError(f"{name} is constant (value {array.min()}); nothing to classify")
    return array


def brain_mask(volume: np.ndarray) -> np.ndarray:
    """Foreground (brain, or head when the skull was not stripped) mask of a (z, y, x) volume.

    Background is the median of the volume's outer faces (0 after skull stripping); the
    threshold sits a tenth of the way from it to the Otsu level (keeps dark CSF). The largest
    connected component is kept and holes are filled slice by slice.
    """
    array = check_volume(volume).astype(np.float32, copy=False)
    faces = np.concatenate([array[[0, -1]].ravel(), array[:, [0, -1]].ravel(),
                            array[:, :, [0, -1]].ravel()])
    background = float(np.median(faces))
    level = background + 0.1 * (threshold_otsu(array) - background)
    mask = ndimage.binary_opening(array > level, iterations=1)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    for z in range(mask.shape[0]):
        mask[z] = ndimage.binary_fill_holes(mask[z])
    return mask


@dataclass(frozen=True)
class VolumeSlices:
    """Axial slices as the model sees them, plus what is needed to map results back."""

    images: np.ndarray          # (Z, size, size) float32 in [0, 1]
    mask: np.ndarray            # (Z, Y, X) bool, reoriented
    brain_area: np.ndarray      # (Z,) brain pixels per slice
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 of the square crop (may exceed the slice)
    orientation: Orientation
    slice_spacing: float = 1.0  # mm between axial slices


def crop_box(oriented: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(Z, side, side) float32 crops of an oriented (Z, Y, X) array to the square ``box``
    (y0, y1, x0, x1); what lies outside the slice is 0."""
    y0, y1, x0, x1 = box
    side = y1 - y0
    crops = np.zeros((oriented.shape[0], side, side), np.float32)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y1, oriented.shape[1]), min(x1, oriented.shape[2])
    crops[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = oriented[:, sy0:sy1, sx0:sx1]
    return crops


def resize_slices(slices: np.ndarray, size: int) -> np.ndarray:
    """(Z, H, W) -> (Z, size, size) float32, antialiased, 64 slices at a time."""
    return np.concatenate([resize_batch(slices[i:i + 64], size).numpy()
                           for i in range(0, len(slices), 64)])


def slice_spacing(orientation: Orientation, spacing: Sequence[float] | None) -> float:
    """mm between axial slices, from the (i, j, k) voxel spacing (SimpleITK's or Slicer's
    ``GetSpacing()``); ``None``: 1 mm, the BraTS convention taken with ``direction=None``."""
    if spacing is None:
        return 1.0
    values = [float(v) for v in spacing]
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")
    # Array axis a holds index axis 2 - a; the axial axis is array axis orientation.axes[0].
    return values[2 - orientation.axes[0]]


def prepare_volume_sizes(volume: np.ndarray, sizes: Sequence[int], direction=None,
                         space: str = "LPS", spacing: Sequence[float] | None = None
                         ) -> list[VolumeSlices]:
    """``prepare_volume`` at each of ``sizes``; orienting, masking, windowing and cropping
    are done once."""
    array = check_volume(volume)
    orientation = orientation_from_direction(direction, space)
    between = slice_spacing(orientation, spacing)
    oriented = orientation.apply(array).astype(np.float32)
    mask = brain_mask(oriented)
    windowed = window(oriented, mask)
    ys, xs = np.nonzero(mask.any(axis=0))
    if len(ys) == 0:
        raise ValueError("no brain/foreground found in the volume")
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    side = int(math.ceil(side * (1 + 2 * BRAIN_BOX_MARGIN)))
    y0, x0 = int(round(cy - side / 2)), int(round(cx - side / 2))
    box = (y0, y0 + side, x0, x0 + side)
    crops = crop_box(windowed * mask, box)
    area = mask.sum(axis=(1, 2)).astype(np.int64)
    return [VolumeSlices(resize_slices(crops, size), mask, area, box, orientation, between)
            for size in sizes]


def prepare_volume(volume: np.ndarray, size: int, direction=None, space: str = "LPS",
                   spacing: Sequence[float] | None = None) -> VolumeSlices:
    """Orient, mask, window (over the brain) and crop every axial slice of ``volume``."""
    return prepare_volume_sizes(volume, [size], direction, space, spacing)[0]


def slices_to_volume(maps: torch.Tensor, slices: VolumeSlices) -> np.ndarray:
    """(Z, size, size) maps -> array on the input volume's grid, zero outside the brain."""
    y0, y1, x0, x1 = slices.box
    side = y1 - y0
    shape = slices.mask.shape
    out = np.zeros(shape, np.float32)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y1, shape[1]), min(x1, shape[2])
    for i in range(0, shape[0], 32):
        up = F.interpolate(maps[i:i + 32, None].float(), size=(side, side), mode="bilinear",
                           align_corners=False)[:, 0].numpy()
        out[i:i + 32, sy0:sy1, sx0:sx1] = up[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
    out *= slices.mask
    return slices.orientation.invert(out)


def read_volume(path: str | Path
                ) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """(z, y, x) array, LPS direction and (i, j, k) spacing of a NIfTI/NRRD/MHA file (via
    SimpleITK)."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"volume not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ValueError(f"{path} is not a readable volume: {error}") from error
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path} must be a 3D scalar volume")
    return sitk.GetArrayFromImage(image), image.GetDirection(), image.GetSpacing()
