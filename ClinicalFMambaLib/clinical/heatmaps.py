"""Heatmaps as files: a PNG overlay for 2D images, a volume on the input's grid for volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .images import check_image

# --------------------------------------------------------------------------- outputs

def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """RGB uint8 overlay of a [0, 1] heatmap (black-red-yellow-white) on a grey image."""
    from .images import window

    grey = window(check_image(image))
    colour = np.stack([np.clip(3 * heatmap, 0, 1), np.clip(3 * heatmap - 1, 0, 1),
                       np.clip(3 * heatmap - 2, 0, 1)], -1)
    alpha = 0.6 * heatmap[..., None]
    return np.round(255 * ((1 - alpha) * grey[..., None] + alpha * colour)).astype(np.uint8)


def save_heatmap_png(image: np.ndarray, heatmap: np.ndarray, path: str | Path) -> Path:
    """Write the heatmap overlaid on the image as an RGB PNG."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(heatmap_overlay(image, heatmap)).save(path)
    return path


def save_heatmap_volume(heatmap: np.ndarray, reference: str | Path, path: str | Path) -> Path:
    """Write a heatmap volume with the geometry (origin, spacing, direction) of ``reference``."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    reader.ReadImageInformation()
    image = sitk.GetImageFromArray(heatmap.astype(np.float32))
    image.SetOrigin(reader.GetOrigin())
    image.SetSpacing(reader.GetSpacing())
    image.SetDirection(reader.GetDirection())
    path = Path(path)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path
