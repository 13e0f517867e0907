"""Reading and writing the 2D images that are fused.

Pictures (PNG, JPEG, BMP, TIFF) go through Pillow: grey stays (H, W) in its own dtype (8-bit,
16-bit, ...), colour becomes (H, W, 3) uint8 RGB (alpha dropped; an RGB file whose three
channels are equal is grey). Medical images (NIfTI, NRRD, MetaImage, a single DICOM file) go
through SimpleITK and keep their geometry (origin, spacing, direction); a 3D image holding one
slice is squeezed to 2D and written back with its original 3D geometry. A file cut short or
with corrupt compressed data is refused (``files.check_complete_file``).

Outputs: pictures are 8-bit (grey float [0, 1] -> 0..255, RGB uint8 as is). Medical outputs
hold grey as float32 (the fused intensities in [0, 1], not scanner units) and colour as 8-bit
RGB vector pixels, with the geometry of the first input copied exactly. Every output is
written under a temporary name in the target folder and then renamed, so a failed run never
leaves a half-written file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from ..core.errors import InputError
from ..core.intensity import is_colour, to_gray8
from .files import (MEDICAL_SUFFIXES, PICTURE_SUFFIXES, check_complete_file, check_input_path,
                    check_writable, itk_reason, suffix_of, write_atomically)

VOLUME_HINT = "2D image fusion needs a single slice; volumes are fused as volumes"
# Smaller images hold no structure to fuse (a 1x1x1 "volume" reads as a 1x1 image).
MIN_SIDE = 8


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a medical image, in its own dimension (2 or 3).

    ``shape`` is the array shape before squeezing (z, y, x order), so a one-slice 3D image
    can be written back as the same 3D image.
    """

    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]
    shape: tuple[int, ...]

    def matches(self, other: "Geometry", tol: float = 1e-4) -> bool:
        """Same pixel grid in physical space (up to ``tol``)."""
        return (self.shape == other.shape and
                all(np.allclose(x, y, atol=tol) for x, y in
                    ((self.origin, other.origin), (self.spacing, other.spacing),
                     (self.direction, other.direction))))


def is_readable(path: str | Path) -> bool:
    return suffix_of(path) in PICTURE_SUFFIXES + MEDICAL_SUFFIXES


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry | None]:
    """(array, geometry) of a 2D image file; geometry is None for pictures.

    Raises FileNotFoundError for a missing file and ValueError for an unknown format, an
    unreadable file, a volume (more than one slice) or an image too small to fuse.
    """
    path = check_input_path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file")
    suffix = suffix_of(path)
    if suffix in PICTURE_SUFFIXES:
        array, geometry = _read_picture(path), None
    elif suffix in MEDICAL_SUFFIXES:
        array, geometry = _read_medical(path)
    else:
        raise ValueError(f"{path}: unsupported format {suffix or '(no suffix)'}; use one of "
                         f"{', '.join(PICTURE_SUFFIXES + MEDICAL_SUFFIXES)}")
    if min(array.shape[:2]) < MIN_SIDE:
        raise InputError(f"{path} is {_size(array.shape[:2])} pixels: too small to fuse (at "
                         f"least {MIN_SIDE} a side)")
    return array, geometry


def _read_picture(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise ValueError(f"{path} holds {image.n_frames} frames (a stack); "
                                 f"{VOLUME_HINT}")
            if image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"):
                rgb = np.asarray(image.convert("RGB"))
                # A grey image saved as RGB (R = G = B) is grey: it has no colour to keep.
                grey = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
                return rgb[..., 0].copy() if grey else rgb
            if image.mode in ("1", "LA", "PA"):
                image = image.convert("L")
            return np.asarray(image)
    except OSError as error:
        raise ValueError(f"{path} is not a readable image: {error}") from error


def _read_medical(path: Path) -> tuple[np.ndarray, Geometry]:
    check_complete_file(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"{path} is not a readable medical image: {itk_reason(error)}") from None
    components = image.GetNumberOfComponentsPerPixel()
    array = sitk.GetArrayFromImage(image)
    spatial = array.shape[:image.GetDimension()]
    if components not in (1, 3, 4) or (components > 1 and array.dtype != np.uint8):
        raise ValueError(f"{path}: {components}-component {array.dtype} pixels are not "
                         "supported; use grey or 8-bit RGB")
    array = _squeeze(array, spatial)
    if array.ndim - (components > 1) > 2:
        raise ValueError(f"{path} is a volume ({_size(spatial)}); {VOLUME_HINT}")
    if components == 4:
        array = array[..., :3]
    geometry = Geometry(image.GetOrigin(), image.GetSpacing(), image.GetDirection(),
                        tuple(spatial))
    return np.ascontiguousarray(array), geometry


def _squeeze(array: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """Drop one-voxel spatial axes (slowest first) until two are left, where possible."""
    kept = list(spatial)
    while len(kept) > 2 and 1 in kept:
        kept.remove(1)
    return array.reshape(tuple(kept) + array.shape[len(spatial):])


def _size(shape: tuple[int, ...]) -> str:
    """'WxH[xD]' of a (z,) y, x array shape, the order sizes are usually quoted in."""
    return "x".join(map(str, reversed(shape)))


def _placed(image: sitk.Image, geometry: Geometry) -> sitk.Image:
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    return image


def _to_sitk(array: np.ndarray, geometry: Geometry | None) -> sitk.Image:
    """A 2D grey or (H, W, 3) colour array as an image, on ``geometry``'s grid if given."""
    colour = array.ndim == 3
    if geometry is None:
        return sitk.GetImageFromArray(array, isVector=colour)
    array = array.reshape(geometry.shape + array.shape[2:])
    return _placed(sitk.GetImageFromArray(array, isVector=colour), geometry)


def resample_to_reference(moving_array: np.ndarray,
                          reference_shape: tuple[int, ...]) -> np.ndarray:
    """Resample a plain 2D image (grey or RGB) onto a pixel grid of ``reference_shape``.

    Both images are taken to cover the same field of view (pixel centres aligned to it);
    linear interpolation, colour channel by channel; the dtype is kept (integers rounded).
    Emits a warning naming both sizes.
    """
    height, width = reference_shape[:2]
    src_h, src_w = moving_array.shape[:2]
    warnings.warn(f"second image resampled from {_size((src_h, src_w))} to the first image's "
                  f"{_size((height, width))} pixels", stacklevel=2)
    moving = sitk.GetImageFromArray(moving_array.astype(np.float32),
                                    isVector=is_colour(moving_array))
    scale = (width / src_w, height / src_h)
    moving.SetSpacing(scale)
    moving.SetOrigin(tuple(0.5 * s - 0.5 for s in scale))
    reference = sitk.Image(width, height, sitk.sitkUInt8)
    resampled = sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkLinear, 0.0,
                              moving.GetPixelID())
    return _cast_like(sitk.GetArrayFromImage(resampled), moving_array.dtype)


def covered_fraction(reference: sitk.Image, moving: sitk.Image) -> float:
    """Share of ``reference``'s voxels that lie inside ``moving`` in physical space."""
    inside = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    inside.CopyInformation(moving)
    mask = sitk.Resample(inside, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                         sitk.sitkUInt8)
    return float(sitk.GetArrayViewFromImage(mask).mean())


def _grid(geometry: Geometry) -> sitk.Image:
    return _placed(sitk.Image(list(reversed(geometry.shape)), sitk.sitkUInt8), geometry)


def resample_to_geometry(moving_array: np.ndarray, moving: Geometry,
                         reference: Geometry) -> np.ndarray:
    """Resample a medical image onto another's grid in physical space (linear; outside -> 0).

    InputError when the two do not overlap at all; a warning says how much is covered."""
    grid = _grid(reference)
    covered = covered_fraction(grid, _grid(moving))
    if covered == 0:
        origins = f"{point_text(moving.origin)} vs {point_text(reference.origin)} mm"
        raise InputError(f"the second image does not overlap the first in physical space "
                         f"(origins {origins}): are they co-registered?")
    warnings.warn(f"second image resampled from its {_size(moving.shape)} grid onto the first "
                  f"image's {_size(reference.shape)} grid" +
                  (f"; it covers {covered:.0%} of it, the rest is fused with 0"
                   if covered < 0.999 else ""), stacklevel=2)
    image = _to_sitk(moving_array.astype(np.float32), moving)
    resampled = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0,
                              image.GetPixelID())
    array = _squeeze(sitk.GetArrayFromImage(resampled), reference.shape)
    return _cast_like(array, moving_array.dtype)


def point_text(values: tuple[float, ...]) -> str:
    """A physical point as '(x, y, z)' in mm, one decimal."""
    return "(" + ", ".join(f"{v:.1f}" for v in values) + ")"


def _cast_like(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = np.clip(np.rint(array), info.min, info.max)
    return array.astype(dtype)


def write_image(path: str | Path, image: np.ndarray, geometry: Geometry | None = None) -> Path:
    """Write a fused image (grey float [0, 1] or uint8, or RGB uint8), atomically.

    ``geometry`` (the first input's) is applied to medical outputs and ignored for pictures.
    """
    path = check_writable(path)
    if suffix_of(path) in PICTURE_SUFFIXES:
        pixels = image if is_colour(image) else to_gray8(image)

        def write(target: Path) -> None:
            Image.fromarray(np.ascontiguousarray(pixels)).save(target)
    else:
        pixels = image if is_colour(image) else np.asarray(image, dtype=np.float32)

        def write(target: Path) -> None:
            sitk.WriteImage(_to_sitk(pixels, geometry), str(target))
    write_atomically(path, write)
    return path
