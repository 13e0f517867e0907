"""Data for the tumour classifier: image preparation, datasets, splits and augmentation.

Every image the network sees (a training JPEG, a user's PNG, an axial slice of a fused
volume) goes through the same preparation: grey float -> percentile window to [0, 1] ->
zero-pad to a square (keeps the aspect ratio) -> antialiased resize to ``input_size``.
Volumes are first turned to the radiological axial view of the training JPEGs (anterior up,
patient right on the image's left) and cropped in-plane to the brain's bounding box so a
skull-stripped brain fills the frame the way a head does in the JPEGs.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")
WINDOW_PERCENTILES = (0.5, 99.5)
CACHE_DIR = Path("/tmp/clinicalfmamba-classifier-cache")
# Margin around the brain's in-plane bounding box, as a fraction of its larger side.
BRAIN_BOX_MARGIN = 0.08
# Slices whose brain area is below this fraction of the largest slice's are "edge" slices.
MIN_BRAIN_FRACTION = 0.25


# --------------------------------------------------------------------------- 2D images

def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_volume_file(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def read_image(path: str | Path) -> np.ndarray:
    """Grey float32 (H, W) array of a 2D image file; colour is converted to luminance."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                array = np.asarray(image, dtype=np.float32)
            else:
                array = np.asarray(image.convert("L"), dtype=np.float32)
    except OSError as error:
        raise ValueError(f"{path} is not a readable image: {error}") from error
    return array


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """A 2D grey float view of ``image`` (an (H, W, 3/4) colour array becomes luminance)."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2D grey or (H, W, 3) colour image, got shape "
                         f"{np.asarray(image).shape}")
    if min(array.shape) < 8:
        raise ValueError(f"{name} is too small ({array.shape}); need at least 8x8 pixels")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array.astype(np.float32, copy=False)


def window(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Map the robust intensity range (percentiles of ``mask`` voxels, or all) to [0, 1]."""
    values = array[mask] if mask is not None and mask.any() else array
    lo, hi = np.percentile(values, WINDOW_PERCENTILES)
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(array.shape, np.float32)
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def pad_square(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pad the last two axes to a centred square; returns the (top, left) offsets."""
    h, w = image.shape[-2:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    out = np.zeros(image.shape[:-2] + (side, side), np.float32)
    out[..., top:top + h, left:left + w] = image
    return out, (top, left)


def resize_batch(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W) -> (N, size, size) float tensor, antialiased bilinear."""
    tensor = torch.as_tensor(images, dtype=torch.float32)[:, None]
    if tensor.shape[-1] != size or tensor.shape[-2] != size:
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=True)
    return tensor[:, 0]


@dataclass(frozen=True)
class ImageGeometry:
    """Where the model's square input sits in the original image (to map heatmaps back)."""

    shape: tuple[int, int]
    offset: tuple[int, int]


def prepare_image(image: np.ndarray, size: int) -> tuple[np.ndarray, ImageGeometry]:
    """Window, pad to a square and resize one 2D image; returns float32 (size, size) in [0, 1]."""
    grey = check_image(image)
    square, offset = pad_square(window(grey))
    return resize_batch(square[None], size)[0].numpy(), ImageGeometry(grey.shape, offset)


def to_original(heatmap: torch.Tensor, geometry: ImageGeometry) -> np.ndarray:
    """Resize a square model-resolution map back to the image it was prepared from."""
    side = max(geometry.shape)
    full = F.interpolate(heatmap[None, None].float(), size=(side, side), mode="bilinear",
                         align_corners=False)[0, 0]
    top, left = geometry.offset
    return full[top:top + geometry.shape[0], left:left + geometry.shape[1]].numpy()


def list_class_folders(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths, integer labels and class names of a folder-per-class dataset."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and is_image_file(p))
        paths += files
        labels += [index] * len(files)
    if len(classes) < 2 or not paths:
        raise ValueError(f"{root} must hold at least two class folders with images "
                         f"(found classes {classes}, {len(paths)} images)")
    return paths, np.array(labels, np.int64), classes


def load_images(paths: list[Path], size: int, progress: bool = True) -> np.ndarray:
    """Decode and prepare images once into a uint8 (N, size, size) array, cached under /tmp.

    The cache key covers the paths, their sizes and modification times and ``size``.
    """
    key = hashlib.sha1(str(size).encode())
    for path in paths:
        stat = path.stat()
        key.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    cache = CACHE_DIR / f"images-{size}-{key.hexdigest()[:16]}.npy"
    if cache.exists():
        return np.load(cache)
    from tqdm import tqdm

    out = np.empty((len(paths), size, size), np.uint8)
    for index, path in enumerate(tqdm(paths, desc="decoding images", disable=not progress)):
        prepared, _ = prepare_image(read_image(path), size)
        out[index] = np.round(prepared * 255)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".part.npy")
    np.save(tmp, out)
    tmp.replace(cache)
    return out


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices, stratified by label; with ``groups`` (e.g. case ids) every
    group goes wholly to one side so slices of one patient never straddle the split."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    val_groups = []
    for label in np.unique(labels):
        members = np.unique(groups[labels == label])
        rng.shuffle(members)
        n_val = int(round(val_fraction * len(members)))
        if val_fraction > 0 and len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_groups += list(members[:n_val])
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# --------------------------------------------------------------------------- volumes

_LPS_TARGET = (2, 1, 0)  # physical rows (S, P, L) for the array axes (z, y, x)


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


def prepare_volume(volume: np.ndarray, size: int, direction=None,
                   space: str = "LPS") -> VolumeSlices:
    """Orient, mask, window (over the brain) and crop every axial slice of ``volume``."""
    array = check_volume(volume)
    orientation = orientation_from_direction(direction, space)
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
    crops = np.zeros((oriented.shape[0], side, side), np.float32)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + side, oriented.shape[1]), min(x0 + side, oriented.shape[2])
    crops[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = (windowed * mask)[:, sy0:sy1, sx0:sx1]
    images = np.concatenate([resize_batch(crops[i:i + 64], size).numpy()
                             for i in range(0, len(crops), 64)])
    return VolumeSlices(images, mask, mask.sum(axis=(1, 2)).astype(np.int64), box, orientation)


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


def read_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """(z, y, x) array and LPS direction of a NIfTI/NRRD/MHA file (via SimpleITK)."""
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
    return sitk.GetArrayFromImage(image), image.GetDirection()


# --------------------------------------------------------------------------- graded cases

LABEL_COLUMN_NAMES = ("grade", "label", "class", "diagnosis")


def read_grades(csv_path: str | Path, case_ids: list[str], id_column: str | None = None,
                label_column: str | None = None) -> dict[str, str]:
    """Case id -> label from a CSV such as BraTS ``name_mapping.csv``.

    Without ``id_column``, the column whose values match the most case folders is used;
    without ``label_column``, the first of Grade/label/class/diagnosis present.
    """
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise FileNotFoundError(f"grades CSV not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{csv_path} has no data rows")
    columns = list(rows[0].keys())
    if label_column is None:
        found = [c for c in columns if c.strip().lower() in LABEL_COLUMN_NAMES]
        if not found:
            raise ValueError(f"{csv_path}: no label column among {columns}; pass --label-column")
        label_column = found[0]
    if id_column is None:
        wanted = set(case_ids)
        id_column = max((c for c in columns if c != label_column),
                        key=lambda c: sum(row[c] in wanted for row in rows), default=None)
    for column in (id_column, label_column):
        if column not in columns:
            raise ValueError(f"{csv_path}: column {column!r} not found in {columns}")
    grades = {row[id_column].strip(): row[label_column].strip() for row in rows
              if row[id_column].strip() in case_ids and row[label_column].strip()}
    if not grades:
        raise ValueError(f"{csv_path}: no row of column {id_column!r} names a case folder")
    return grades


def load_graded_cases(data_dir: str | Path, csv_path: str | Path, volume_name: str,
                      size: int, id_column: str | None = None, label_column: str | None = None,
                      slice_step: int = 1, progress: bool = True,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Axial brain slices of ``DATA_DIR/<case>/<volume_name>`` labelled by the case's grade.

    Returns uint8 images (N, size, size), labels, case index per slice, class names. Edge
    slices (brain area under MIN_BRAIN_FRACTION of the case's largest) are left out.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"case folder not found: {data_dir}")
    cases = sorted(p.name for p in data_dir.iterdir() if (p / volume_name).exists())
    if not cases:
        raise ValueError(f"no case folder in {data_dir} contains {volume_name}")
    grades = read_grades(csv_path, cases, id_column, label_column)
    classes = sorted(set(grades.values()))
    if len(classes) < 2:
        raise ValueError(f"need at least two labels among the cases, found {classes}")
    from tqdm import tqdm

    images, labels, groups = [], [], []
    for index, case in enumerate(tqdm(sorted(grades), desc="reading cases", disable=not progress)):
        array, direction = read_volume(data_dir / case / volume_name)
        slices = prepare_volume(array, size, direction)
        keep = np.flatnonzero(slices.brain_area >= MIN_BRAIN_FRACTION * slices.brain_area.max())
        keep = keep[::max(1, slice_step)]
        images.append(np.round(slices.images[keep] * 255).astype(np.uint8))
        labels += [classes.index(grades[case])] * len(keep)
        groups += [index] * len(keep)
    return np.concatenate(images), np.array(labels, np.int64), np.array(groups), classes


# --------------------------------------------------------------------------- augmentation

def _random_curve(n: int, knots: int, monotonic: bool, generator: torch.Generator) -> torch.Tensor:
    """(n, knots) intensity look-up curves on [0, 1]."""
    if monotonic:
        steps = torch.rand(n, knots - 1, generator=generator) + 0.1
        curve = torch.cat([torch.zeros(n, 1), steps.cumsum(1)], 1)
        return curve / curve[:, -1:]
    # Background (0) stays black, as in fused images.
    return torch.cat([torch.zeros(n, 1), torch.rand(n, knots - 1, generator=generator)], 1)


def _apply_curve(x: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    knots = curve.shape[1]
    position = x.clamp(0, 1) * (knots - 1)
    low = position.floor().long().clamp(max=knots - 2)
    frac = position - low
    flat = low.flatten(1)
    c0 = torch.gather(curve, 1, flat).view_as(x)
    c1 = torch.gather(curve, 1, flat + 1).view_as(x)
    return c0 + frac * (c1 - c0)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-grid ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def _span_mask(foreground: torch.Tensor) -> torch.Tensor:
    """Filled silhouette: pixels between the first and last foreground pixel of both their
    row and their column (holes and concavities of a head are filled)."""
    def inside(fg: torch.Tensor) -> torch.Tensor:  # along the last axis
        index = torch.arange(fg.shape[-1]).expand_as(fg)
        first = torch.where(fg, index, fg.shape[-1]).amin(-1, keepdim=True)
        last = torch.where(fg, index, -1).amax(-1, keepdim=True)
        return (index >= first) & (index <= last)

    return inside(foreground) & inside(foreground.transpose(-1, -2)).transpose(-1, -2)


def strip_skull(batch: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Imitate skull stripping: zero all within ``depth`` pixels (per image) of the head's
    outline. Returns the stripped batch and each image's remaining-brain bounding box as
    (cy, cx, half side) in normalised [-1, 1] coordinates, square with BRAIN_BOX_MARGIN."""
    mask = _span_mask(batch[:, 0] > 0.1).float()[:, None]
    for step in range(int(depth.max())):
        eroded = -F.max_pool2d(-mask, 3, 1, 1)
        mask = torch.where((step < depth).view(-1, 1, 1, 1), eroded, mask)
    def extent(occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised centre and size of the occupied range along the last axis."""
        size = occupied.shape[-1]
        first = occupied.float().argmax(-1)
        last = size - 1 - occupied.flip(-1).float().argmax(-1)
        return (first + last + 1).float() / size - 1, (last - first + 1).float() / size

    cy, height = extent(mask[:, 0].amax(2) > 0)
    cx, width = extent(mask[:, 0].amax(1) > 0)
    half = (torch.maximum(height, width) * (1 + 2 * BRAIN_BOX_MARGIN)).clamp(max=1.0)
    box = torch.stack([cy, cx, half], 1)
    empty = mask.flatten(1).amax(1) == 0
    box[empty] = torch.tensor([0.0, 0.0, 1.0])
    return batch * mask, box


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random geometry and intensity changes of a (N, 1, H, W) batch in [0, 1].

    Skull stripping (then zoom to the brain, as ``prepare_volume`` crops) imitates the
    skull-stripped BraTS-style volumes that get fused. Intensity remapping (monotonic
    curves, gamma, contrast) and mixing with a non-monotonic remap of the image imitate other
    MRI contrasts and fused images; blur and noise imitate the smoother look of fused images
    and other scanners.
    """
    n = batch.shape[0]

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) < p).view(n, 1, 1, 1)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    x, box = batch.clone(), torch.tensor([[0.0, 0.0, 1.0]]).repeat(n, 1)
    strip = torch.nonzero(torch.rand(n, generator=generator) < 0.35).flatten()
    depth = (uniform(0.03, 0.1)[strip] * batch.shape[-1]).round()
    if len(strip):
        x[strip], box[strip] = strip_skull(batch[strip], depth)

    # Geometry: rotation, isotropic scale, translation, left-right flip in one affine warp,
    # composed with the zoom onto the stripped brain's box.
    angle = uniform(-15, 15) * math.pi / 180
    scale = uniform(0.85, 1.15) / box[:, 2]
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift_x = uniform(-0.08, 0.08) * box[:, 2] + box[:, 1]
    shift_y = uniform(-0.08, 0.08) * box[:, 2] + box[:, 0]
    theta = torch.stack([torch.stack([cos * flip, -sin, shift_x], 1),
                         torch.stack([sin * flip, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    x = torch.where(chance(0.4), _apply_curve(x, _random_curve(n, 6, True, generator)), x)
    mix = uniform(0.2, 0.5).view(n, 1, 1, 1)
    remix = (1 - mix) * x + mix * _apply_curve(x, _random_curve(n, 4, False, generator))
    x = torch.where(chance(0.2), remix, x)
    gamma = torch.exp(uniform(math.log(0.6), math.log(1.6))).view(n, 1, 1, 1)
    x = torch.where(chance(0.4), x.clamp_min(0) ** gamma, x)
    contrast, brightness = uniform(0.75, 1.25).view(n, 1, 1, 1), uniform(-0.05, 0.05).view(n, 1, 1, 1)
    x = torch.where(chance(0.4), x * contrast + brightness, x)
    sigma = float(uniform(0.4, 1.2)[0])
    x = torch.where(chance(0.25), _gaussian_blur(x, sigma), x)
    noise = torch.randn(x.shape, generator=generator) * uniform(0.0, 0.04).view(n, 1, 1, 1)
    x = torch.where(chance(0.2), x + noise, x)
    return x.clamp(0, 1)
