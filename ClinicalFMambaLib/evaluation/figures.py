"""Axial, coronal and sagittal views of co-registered volumes side by side, as one RGB image.

Rows are the three planes through one voxel, columns the volumes (e.g. the two sources and
the fused result). Each view is drawn at its physical aspect (voxel spacing), superior up in
the coronal and sagittal views, on a square black cell.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..core.intensity import is_colour, signal_box, to_gray8
from .image_scores import unit_luma

PLANES = ("axial", "coronal", "sagittal")


def _plane(volume: np.ndarray, plane: str, centre: tuple[int, int, int]) -> np.ndarray:
    k, j, i = centre
    if plane == "axial":
        return volume[k]
    view = volume[:, j, :] if plane == "coronal" else volume[:, :, i]
    return view[::-1]  # array axis 0 (k) runs inferior to superior: draw superior up


def _extent_mm(plane: str, spacing: tuple[float, float, float]) -> tuple[float, float]:
    """(row, column) pixel size in mm of a view; ``spacing`` is SimpleITK's (i, j, k)."""
    si, sj, sk = spacing
    return {"axial": (sj, si), "coronal": (sk, si), "sagittal": (sk, sj)}[plane]


def orthogonal_views(volumes: dict[str, np.ndarray], spacing: tuple[float, float, float],
                     centre: tuple[int, int, int] | None = None, cell: int = 192) -> np.ndarray:
    """(rows, columns, 3) uint8 grid: one row per plane, one column per named volume.

    ``volumes``: float [0, 1] (k, j, i) arrays of one shape; ``centre``: the voxel the planes
    pass through (default: the centre of the box around the voxels with signal).
    """
    arrays = list(volumes.values())
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 3:
        raise ValueError("need (k, j, i) volumes of one shape")
    if centre is None:
        box = signal_box(np.any([a > 0 for a in arrays], axis=0))
        centre = (tuple((s.start + s.stop - 1) // 2 for s in box) if box is not None
                  else tuple(n // 2 for n in arrays[0].shape))
    header = 18
    grid = Image.new("RGB", (cell * len(arrays), header + cell * len(PLANES)))
    draw = ImageDraw.Draw(grid)
    for column, (name, volume) in enumerate(volumes.items()):
        draw.text((column * cell + 4, 3), name, fill=(255, 255, 0))
        for row, plane in enumerate(PLANES):
            view = np.clip(_plane(volume, plane, centre), 0, 1)
            row_mm, col_mm = _extent_mm(plane, spacing)
            height, width = view.shape[0] * row_mm, view.shape[1] * col_mm
            scale = cell / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            grey = Image.fromarray((view * 255 + 0.5).astype(np.uint8))
            image = grey.resize(size, Image.BILINEAR)
            left = column * cell + (cell - size[0]) // 2
            top = header + row * cell + (cell - size[1]) // 2
            grid.paste(image.convert("RGB"), (left, top))
            if column == 0:
                draw.text((4, header + row * cell + 3), plane, fill=(0, 255, 255))
    return np.asarray(grid)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """8-bit RGB for viewing: colour as is, grey as in ``unit_luma``."""
    if is_colour(image):
        return image[..., :3]
    return np.repeat(to_gray8(unit_luma(image))[..., None], 3, axis=2)


def side_by_side(images: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """One RGB strip of equally tall images, each labelled in its top-left corner."""
    strip = Image.fromarray(np.concatenate([display_rgb(x) for x in images], axis=1))
    draw, x = ImageDraw.Draw(strip), 0
    for image, label in zip(images, labels):
        draw.text((x + 4, 4), label, fill=(255, 255, 0), stroke_width=1, stroke_fill=(0, 0, 0))
        x += image.shape[1]
    return np.asarray(strip)
