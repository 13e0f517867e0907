"""Fusing volume files (NIfTI, NRRD, MHA/MHD, DICOM series): B brought onto A's grid, the
fused volume written on A's grid, atomically; the progress bar of the command line."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from ..core.errors import InputError, OutputError
from ..core.intensity import warn_if_label_map
from ..io.files import (MEDICAL_SUFFIXES, check_output_location, refuse_overwriting_inputs,
                        suffix_of, write_atomically)
from ..io.images import covered_fraction, point_text
from ..io.volumes import read_volume, split_series
from ..networks.fusion_net import FusionNet
from .inference import set_emphasis
from .volumes import fuse_volumes, load_volume_model, resample_onto, same_grid


def _warn_if_flat(array: np.ndarray, name: str, path: Path) -> None:
    if array.size and array.min() == array.max():
        what = "empty (every voxel is 0)" if array.flat[0] == 0 else \
            f"constant (every voxel is {array.flat[0]})"
        warnings.warn(f"volume {name} ({path}) is {what}: it adds nothing to the fused result",
                      stacklevel=3)


def on_grid_of_a(image_a: sitk.Image, image_b: sitk.Image, path_a: Path,
                  path_b: Path) -> sitk.Image:
    """B on A's grid; refuse B outside A, warn when B covers A only in part."""
    if same_grid(image_a, image_b):
        return image_b
    covered = covered_fraction(image_a, image_b)
    if covered == 0:
        origins = f"{point_text(image_b.GetOrigin())} vs {point_text(image_a.GetOrigin())} mm"
        raise InputError(f"{path_b} does not overlap {path_a} in physical space (origins "
                         f"{origins}): are they co-registered?")
    if covered < 0.999:
        warnings.warn(f"{path_b} covers {covered:.0%} of {path_a}; the rest is fused with "
                      "B = 0", stacklevel=3)
    return resample_onto(image_a, image_b)


def check_volume_output(output: str | Path, inputs: list[str | Path]) -> Path:
    """Refuse, before any work, a volume output of a picture format, in a place that cannot
    be written, or that would overwrite an input."""
    output = Path(output)
    if suffix_of(output) not in MEDICAL_SUFFIXES[:-1]:
        raise OutputError(f"a fused volume cannot be written as {suffix_of(output) or output.name}"
                          f" ({output}): use one of {', '.join(MEDICAL_SUFFIXES[:-1])}")
    refuse_overwriting_inputs(output, [split_series(p)[0] for p in inputs])
    check_output_location(output)
    return output


def fuse_volume_files(path_a: str | Path, path_b: str | Path, output: str | Path,
                      model: str = "auto", device: str = "auto",
                      progress: Callable[[float], None] | None = None,
                      weights: str | Path | None = None,
                      units: Callable[[int, str], None] | None = None,
                      emphasis: float | None = None,
                      model_used: Callable[[FusionNet], None] | None = None) -> Path:
    """Fuse two volume files into ``output`` on A's grid (origin, spacing, direction, size).

    B is resampled onto A in physical space when their grids differ (with a warning, saying
    how much of A it covers; no overlap is refused). ``weights``: a fusion weights file
    instead of the bundled model (2D or 3D). ``emphasis``: see fusion.set_emphasis;
    ``model_used(network)`` is called with the network once it is loaded. Grey output is float32 in [0, 1]; an RGB input
    gives RGB output. Nothing is read before the output is checked; written atomically.
    """
    output = check_volume_output(output, [path_a, path_b])
    path_a, path_b = Path(path_a), Path(path_b)
    image_a, image_b = read_volume(path_a), read_volume(path_b)
    image_b = on_grid_of_a(image_a, image_b, path_a, path_b)
    array_a, array_b = sitk.GetArrayFromImage(image_a), sitk.GetArrayFromImage(image_b)
    for array, name, path in ((array_a, "A", path_a), (array_b, "B", path_b)):
        _warn_if_flat(array, name, path)
        warn_if_label_map(array, path)
    network = set_emphasis(load_volume_model(model, device, weights), emphasis)
    if model_used is not None:
        model_used(network)
    result = fuse_volumes(network, array_a, array_b, progress=progress, units=units)
    write_on_grid(result.fused, image_a, output)
    return output


def write_on_grid(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    """Write a (k, j, i) grey or (k, j, i, 3) RGB array with ``reference``'s geometry."""
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    image.CopyInformation(reference)
    write_atomically(path, lambda target: sitk.WriteImage(image, str(target)))


def progress_bar(description: str) -> tuple[Callable[[float], None], Callable[[int, str], None],
                                           Callable[[], None]]:
    """(progress(fraction), units(total, name), close()): a tqdm bar counting the work's own
    units (slices or patches), drawn once ``units`` has named them, so that an input refused
    before the work leaves no empty bar."""
    bars: list[tqdm] = []

    def units(total: int, name: str) -> None:
        bars.append(tqdm(total=total, desc=description, unit=name))

    def update(fraction: float) -> None:
        if bars:
            bars[0].update(int(round(bars[0].total * fraction)) - bars[0].n)

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, units, close
