"""2D images for the tumour classifier: reading, checking and preparing them.

Every image the network sees (a training JPEG, a user's PNG, an axial slice of a fused
volume) goes through the same preparation: grey float -> percentile window to [0, 1] ->
zero-pad to a square (keeps the aspect ratio) -> antialiased resize to ``input_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")
WINDOW_PERCENTILES = (0.5, 99.5)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_volume_file(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def read_image(path: str | Path, grey: bool = True) -> np.ndarray:
    """Float32 array of a 2D image file: grey (H, W), colour converted to luminance; with
    ``grey=False`` a colour file stays (H, W, 3), so its colour can be judged."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                array = np.asarray(image, dtype=np.float32)
            elif grey or image.mode in ("L", "1"):
                array = np.asarray(image.convert("L"), dtype=np.float32)
            else:
                array = np.asarray(image.convert("RGB"), dtype=np.float32)
    except OSError as error:
        raise ValueError(f"{path} is not a readable image: {error}") from error
    return array


def colourfulness(image: np.ndarray) -> float:
    """Mean spread between the colour channels of each pixel, as a share of the image's range
    (0 for grey images, also grey ones stored as RGB)."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] < 3:
        return 0.0
    rgb = array[..., :3]
    span = float(rgb.max() - rgb.min())
    return float((rgb.max(-1) - rgb.min(-1)).mean() / span) if span > 0 else 0.0


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
