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
from PIL import Image, ImageDraw
from tqdm import tqdm

from .baselines import BASELINES
from .errors import OutputError
from .fusion import fuse_images
from .image_io import (Geometry, check_output_location, check_writable, is_readable, read_image,
                       refuse_overwriting_inputs, resample_to_geometry, resample_to_reference,
                       suffix_of, write_image)
from .metrics import fusion_metrics, paper_metrics, to_gray8
from .network import FusionNet
from .preprocessing import is_colour, split_luma

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "Resources" / "sample"
# The bundled 2D sample (written by scripts/make_sample.py): name -> (A, B) file names.
SAMPLE_PAIRS = {
    "mri_ct": ("mri_ct_MRI.png", "mri_ct_CT.png"),
    "mri_spect": ("mri_spect_MRI.png", "mri_spect_SPECT.png"),
}
MODEL_NAME = "ClinicalFMamba"


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
        if not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
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
    return a, align_to_first(a, geometry_a, b, geometry_b), geometry_a


def fuse_batch(batch: Batch, load_model: Callable[[], FusionNet], progress: bool = True,
               failed: list[tuple[Path, str]] | None = None) -> list[tuple[Path, Path, Path]]:
    """Fuse every job and write its output; returns the jobs written.

    The model is loaded once, after the first pair is read, so a bad input is reported
    before anything else is done. With a ``failed`` list, a pair that cannot be fused (a bad
    input file) is recorded there as (A's path, reason) and the others go on; without one,
    it stops the batch. Model and output errors always stop it.
    """
    model, written = None, []
    for path_a, path_b, out in tqdm(batch.jobs, desc="fuse", unit="pair",
                                    disable=not progress or len(batch.jobs) == 1):
        try:
            a, b, geometry = load_pair(path_a, path_b)
            model = model or load_model()
            fused = fuse_images(model, a, b)
        except (ValueError, FileNotFoundError) as error:
            if failed is None or isinstance(error, OutputError):
                raise
            failed.append((path_a, " ".join(str(error).split())))
            continue
        write_image(out, fused, geometry)
        written.append((path_a, path_b, out))
    return written


def unit_luma(image: np.ndarray) -> np.ndarray:
    """Grey [0, 1] view of a fused image: luma of colour, float [0, 1] as is, other grey
    normalised like a fusion input."""
    if (not is_colour(image) and np.issubdtype(image.dtype, np.floating)
            and image.size and image.min() >= 0.0 and image.max() <= 1.0):
        return image.astype(np.float32, copy=False)
    return split_luma(image)[0]


def _grey_metrics(ya: np.ndarray, yb: np.ndarray, yf: np.ndarray) -> dict[str, float]:
    paper = {f"paper_{k}": v for k, v in paper_metrics(ya, yb, yf).items()}
    return {**fusion_metrics(ya, yb, yf), **paper}


def evaluate_batch(batch: Batch) -> list[tuple[Path, dict[str, dict[str, float]]]]:
    """(fused path, metrics per method) for every (A, B, fused) job: the fused image's
    under ``MODEL_NAME`` and each classical baseline's on the same pair."""
    results = []
    for path_a, path_b, path_fused in batch.jobs:
        a, b, _ = load_pair(path_a, path_b)
        results.append((path_fused, compare_with_baselines(a, b, read_image(path_fused)[0])))
    return results


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


def compare_with_baselines(a: np.ndarray, b: np.ndarray,
                           fused: np.ndarray) -> dict[str, dict[str, float]]:
    """Metrics of the network's result and of each classical baseline, per method."""
    ya, yb = split_luma(a)[0], split_luma(b)[0]
    results = {MODEL_NAME: unit_luma(fused)} | {name: fuse(ya, yb)
                                               for name, fuse in BASELINES.items()}
    return {method: _grey_metrics(ya, yb, yf) for method, yf in results.items()}


def run_demo(model: FusionNet, out_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Fuse the bundled sample pairs into ``out_dir`` (fused image and an A | B | fused
    strip per pair); returns per pair the metrics of the network and of the baselines."""
    results = {}
    for name, (file_a, file_b) in SAMPLE_PAIRS.items():
        a, b, _ = load_pair(SAMPLE_DIR / file_a, SAMPLE_DIR / file_b)
        fused = fuse_images(model, a, b)
        labels = [Path(f).stem.rsplit("_", 1)[-1] for f in (file_a, file_b)] + ["fused"]
        write_image(out_dir / f"{name}_fused.png", fused)
        write_image(out_dir / f"{name}_side_by_side.png", side_by_side([a, b, fused], labels))
        results[name] = compare_with_baselines(a, b, fused)
    return results
