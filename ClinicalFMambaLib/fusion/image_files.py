"""Fusing and evaluating image files: pairs, folders of pairs, the bundled sample.

Inputs are brought onto the first image's grid before fusion: a medical pair on different
grids is resampled in physical space, plain images of different sizes onto A's pixel grid
(both with a warning). Metrics are computed on grey [0, 1] images: grey sources normalised
exactly as for fusion, colour (PET/SPECT) sources and colour fused images by their luma (Y of
YCbCr), where the network works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from ..core.errors import OutputError
from ..core.intensity import warn_if_label_map
from ..io.files import (check_input_path, check_output_location, check_writable,
                        refuse_overwriting_inputs, suffix_of)
from ..io.images import (Geometry, is_readable, read_image, resample_to_geometry,
                         resample_to_reference, write_image)
from ..networks.fusion_net import FusionNet
from .inference import fuse_images


@dataclass(frozen=True)
class Batch:
    """(A, B, third) paths per matched name; names found in only one input folder."""

    jobs: list[tuple[Path, Path, Path]]
    only_a: list[str]
    only_b: list[str]


def output_name(name: str) -> str:
    """Name of the fused file for input A's name (DICOM results are written as NIfTI)."""
    return name[:-len(".dcm")] + ".nii.gz" if suffix_of(name) == ".dcm" else name


def _image_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file() and is_readable(p)}


def match_inputs(a: Path, b: Path, third: Path) -> Batch:
    """Two files, or two folders matched by file name; ``third`` is a file, or a folder
    holding ``output_name(name)`` for each name (A's name for two files)."""
    for path in (a, b):
        check_input_path(path)
    if a.is_dir() != b.is_dir():
        raise ValueError(f"give two files or two folders, not one of each ({a}, {b})")
    if not a.is_dir():
        return Batch([(a, b, third / output_name(a.name) if third.is_dir() else third)], [], [])
    names_a, names_b = _image_names(a), _image_names(b)
    common = sorted(names_a & names_b)
    if not common:
        raise ValueError(f"{a} and {b} have no image file name in common")
    return Batch([(a / n, b / n, third / output_name(n)) for n in common],
                 sorted(names_a - names_b), sorted(names_b - names_a))


def check_outputs(batch: Batch) -> None:
    """Refuse unwritable formats, locations and outputs that would overwrite an input,
    before any work."""
    for path_a, path_b, out in batch.jobs:
        check_writable(out)
        refuse_overwriting_inputs(out, [path_a, path_b])
        check_output_location(out)


def align_to_first(a: np.ndarray, geometry_a: Geometry | None,
                   b: np.ndarray, geometry_b: Geometry | None) -> np.ndarray:
    """``b`` on ``a``'s grid (unchanged when it already is)."""
    if (geometry_a is not None and geometry_b is not None
            and len(geometry_a.shape) == len(geometry_b.shape)):
        return b if geometry_b.matches(geometry_a) else resample_to_geometry(b, geometry_b,
                                                                               geometry_a)
    return b if a.shape[:2] == b.shape[:2] else resample_to_reference(b, a.shape)


def load_pair(path_a: Path, path_b: Path) -> tuple[np.ndarray, np.ndarray, Geometry | None]:
    """(A, B on A's grid, A's geometry)."""
    a, geometry_a = read_image(path_a)
    b, geometry_b = read_image(path_b)
    warn_if_label_map(a, path_a)
    warn_if_label_map(b, path_b)
    return a, align_to_first(a, geometry_a, b, geometry_b), geometry_a


def fuse_batch(batch: Batch, load_model: Callable[[], FusionNet], progress: bool = True,
               failed: list[tuple[Path, str]] | None = None, quality: str = "fast",
               steps: int | None = None) -> list[tuple[Path, Path, Path]]:
    """Fuse every job and write its output; returns the jobs written.

    The model is loaded once, after the first pair is read, so a bad input is reported
    before anything else is done. With a ``failed`` list, a pair that cannot be fused (a bad
    input file) is recorded there as (A's path, reason) and the others go on; without one,
    it stops the batch. Model and output errors always stop it. ``quality`` and ``steps``:
    as ``fuse_images``.
    """
    model, written = None, []
    for path_a, path_b, out in tqdm(batch.jobs, desc="fuse", unit="pair",
                                    disable=not progress or len(batch.jobs) == 1):
        try:
            a, b, geometry = load_pair(path_a, path_b)
            model = model or load_model()
            fused = fuse_images(model, a, b, quality, steps)
        except (ValueError, FileNotFoundError) as error:
            if failed is None or isinstance(error, OutputError):
                raise
            failed.append((path_a, " ".join(str(error).split())))
            continue
        write_image(out, fused, geometry)
        written.append((path_a, path_b, out))
    return written
