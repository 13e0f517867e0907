"""Reading and writing the 2D images that are fused.

Pictures (PNG, JPEG, BMP, TIFF) go through Pillow: grey stays (H, W) in its own dtype (8-bit,
16-bit, ...), colour becomes (H, W, 3) uint8 RGB (alpha dropped; an RGB file whose three
channels are equal is grey). Medical images (NIfTI, NRRD, MetaImage, a single DICOM file) go
through SimpleITK and keep their geometry (origin, spacing, direction); a 3D image holding one
slice is squeezed to 2D and written back with its original 3D geometry. A file cut short or
with corrupt compressed data is refused (``check_complete_file``).

Outputs: pictures are 8-bit (grey float [0, 1] -> 0..255, RGB uint8 as is). Medical outputs
hold grey as float32 (the fused intensities in [0, 1], not scanner units) and colour as 8-bit
RGB vector pixels, with the geometry of the first input copied exactly. Every output is
written under a temporary name in the target folder and then renamed, so a failed run never
leaves a half-written file.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
from PIL import Image

from .errors import InputError, OutputError
from .metrics import to_gray8
from .preprocessing import is_colour

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MEDICAL_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
# DICOM needs integer pixels and a full header: fused results go to the other formats.
WRITABLE_SUFFIXES = PICTURE_SUFFIXES + MEDICAL_SUFFIXES[:-1]
VOLUME_HINT = "2D image fusion needs a single slice; volumes are fused as volumes"


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


def suffix_of(path: str | Path) -> str:
    """Lower-case suffix, with '.nii.gz' kept whole."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_readable(path: str | Path) -> bool:
    return suffix_of(path) in PICTURE_SUFFIXES + MEDICAL_SUFFIXES


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry | None]:
    """(array, geometry) of a 2D image file; geometry is None for pictures.

    Raises FileNotFoundError for a missing file and ValueError for an unknown format, an
    unreadable file or a volume (more than one slice).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    suffix = suffix_of(path)
    if suffix in PICTURE_SUFFIXES:
        return _read_picture(path), None
    if suffix in MEDICAL_SUFFIXES:
        return _read_medical(path)
    raise ValueError(f"{path}: unsupported format {suffix or '(no suffix)'}; use one of "
                     f"{', '.join(PICTURE_SUFFIXES + MEDICAL_SUFFIXES)}")


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


def itk_reason(error: Exception) -> str:
    """The cause in an ITK exception's text, on one line (without the source file and the
    reader's address)."""
    text = " ".join(str(error).split())
    if "ITK ERROR:" in text:
        text = text.split("ITK ERROR:", 1)[1]
        text = text.split("): ", 1)[-1] if "(0x" in text else text
    return text[:240]


_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_HEADER = {348: ("h", 40, "h", 72, "f", 108), 540: ("q", 16, "h", 14, "q", 168)}


def check_complete_file(path: str | Path) -> None:
    """Refuse a medical image file that is cut short or corrupt, which SimpleITK would read
    with zeros in place of the missing voxels (NIfTI, compressed or not).

    A gzip stream must decompress to its end with a matching CRC; a NIfTI-1/2 file must
    hold every voxel byte that its header promises. Raises InputError naming the problem.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        compressed = handle.read(2) == _GZIP_MAGIC
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as stream:
            header = stream.read(540)
            rest = iter(lambda: stream.read(1 << 20), b"")
            size = len(header) + sum(len(block) for block in rest)
    except EOFError:
        raise InputError(f"{path} is truncated: its gzip stream ends early (an incomplete "
                         "download or copy?)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as error:
        raise InputError(f"{path} is corrupt: its gzip data cannot be decompressed "
                         f"({error})") from None
    expected = _nifti_bytes(header)
    if expected is not None and size < expected:
        raise InputError(f"{path} is truncated: it holds {size} bytes but its NIfTI header "
                         f"describes {expected} (an incomplete download or copy?)")


def _nifti_bytes(header: bytes) -> int | None:
    """Header plus voxel bytes that a NIfTI-1/2 header promises; None for other formats."""
    for order in "<>":
        if len(header) < 4:
            return None
        layout = _NIFTI_HEADER.get(struct.unpack(order + "i", header[:4])[0])
        if layout is None or len(header) < layout[5] + 8:
            continue
        dim_type, dim_at, bits_type, bits_at, offset_type, offset_at = layout
        dims = struct.unpack_from(f"{order}8{dim_type}", header, dim_at)
        bits = struct.unpack_from(order + bits_type, header, bits_at)[0]
        offset = struct.unpack_from(order + offset_type, header, offset_at)[0]
        if not 1 <= dims[0] <= 7 or bits <= 0:
            return None
        voxels = int(np.prod([max(1, d) for d in dims[1:dims[0] + 1]], dtype=np.int64))
        return int(offset) + voxels * bits // 8
    return None


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


def check_writable(path: str | Path) -> Path:
    """``path`` if its format can be written, else OutputError (checked before any work)."""
    path = Path(path)
    if suffix_of(path) not in WRITABLE_SUFFIXES:
        raise OutputError(f"cannot write {path}: use one of {', '.join(WRITABLE_SUFFIXES)}")
    return path


def _same_file(output: Path, source: Path) -> bool:
    if output.resolve() == source.resolve():
        return True
    try:  # through hard links and symbolic links: same device and inode
        return os.path.samefile(output, source)
    except OSError:
        return False


def refuse_overwriting_inputs(output: str | Path, inputs: list[str | Path]) -> None:
    """OutputError when writing ``output`` would replace one of ``inputs`` (same path, a
    symbolic link to it or a hard link of it; for MetaImage, also its .raw data file)."""
    output = Path(output)
    written = [output]
    if suffix_of(output) == ".mhd":
        written += [output.with_suffix(".raw"), output.with_suffix(".zraw")]
    for source in map(Path, inputs):
        for target in written:
            if _same_file(target, source):
                raise OutputError(f"output {output} would overwrite the input {source}; "
                                  "choose another output name")


def check_output_location(path: str | Path, folder: bool = False) -> Path:
    """Refuse, before any work, an output that cannot be created: a file where a folder is
    needed (or the reverse), or a folder that cannot be written (tried with a temporary file)."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"output {path} is a file; give a folder (the results are written "
                          "into it)")
    if not folder and path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name")
    existing = path if folder else path.parent
    while not existing.exists():  # the folders still to be made must start in a folder
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".clinicalfmamba-write-test-"):
            pass
    except OSError as error:
        raise OutputError(f"cannot write {path}: folder {existing} is not writable "
                          f"({error.strerror})") from None
    return path


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


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write into a hidden folder beside ``path``, then rename every file it produced.

    The folder keeps the final file name, so a MetaImage header (.mhd) still names its data
    file correctly; data files are moved before the file the user asked for.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".partial-") as folder:
        staged = Path(folder) / path.name
        write(staged)
        for produced in sorted(Path(folder).iterdir(), key=lambda p: p == staged):
            os.replace(produced, path.parent / produced.name)
