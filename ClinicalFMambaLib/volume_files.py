"""Volume files for fusion: NIfTI, NRRD, MHA/MHD and DICOM series folders (SimpleITK)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
from PIL import Image
from tqdm import tqdm

from .baselines import BASELINES
from .errors import InputError, OutputError
from .fuse_files import MODEL_NAME, SAMPLE_DIR
from .fusion import set_emphasis
from .image_io import (MEDICAL_SUFFIXES, check_complete_file, check_output_location,
                       covered_fraction, itk_reason, point_text, refuse_overwriting_inputs,
                       suffix_of, write_atomically)
from .metrics import volume_metrics
from .network import FusionNet
from .preprocessing import normalize_intensity
from .volume_figure import orthogonal_views
from .volume_fusion import fuse_volumes, load_volume_model, resample_onto, same_grid

SAMPLE_VOLUMES = {"T2": SAMPLE_DIR / "volume" / "TCGA-DU-7294_t2.nii.gz",
                  "FLAIR": SAMPLE_DIR / "volume" / "TCGA-DU-7294_flair.nii.gz"}


@dataclass(frozen=True)
class DicomSeries:
    """One series of a DICOM folder: its UID, description (0008|103e) and slice files."""

    uid: str
    description: str
    files: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.uid} ({self.description or 'no description'}, {len(self.files)} slices)"


def _holds_dicom(folder: Path) -> bool:
    """True when a file of ``folder`` has the DICOM preamble (b'DICM' at byte 128): probing
    this way keeps GDCM from warning "No Series can be found" for every other folder."""
    for entry in folder.iterdir():
        if entry.is_file():
            with open(entry, "rb") as handle:
                if handle.read(132)[128:] == b"DICM":
                    return True
    return False


def _series_description(first_file: str) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(first_file)
    reader.ReadImageInformation()
    key = "0008|103e"
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def dicom_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM series of a folder (not its sub-folders); empty when it holds none."""
    folder = Path(folder)
    if not folder.is_dir() or not _holds_dicom(folder):
        return []
    series = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        series.append(DicomSeries(uid, _series_description(files[0]), files))
    return series


def split_series(path: str | Path) -> tuple[Path, str | None]:
    """(folder, series UID) of ``FOLDER#UID``; (path, None) for any other path."""
    text = str(path)
    if "#" in text and not Path(text).exists():
        folder, uid = text.rsplit("#", 1)
        return Path(folder), uid
    return Path(text), None


def _series_files(path: str | Path) -> list[str]:
    """Slice files of the one series a folder holds, or of the series named by FOLDER#UID."""
    folder, uid = split_series(path)
    found = dicom_series(folder)
    if not found:
        raise InputError(f"{folder} holds no DICOM series")
    listed = "; ".join(map(str, found))
    if uid is not None:
        chosen = [series for series in found if series.uid == uid]
        if not chosen:
            raise InputError(f"{folder} has no DICOM series {uid}; it holds: {listed}")
        return list(chosen[0].files)
    if len(found) > 1:
        raise InputError(f"{folder} holds {len(found)} DICOM series; pick one as "
                         f"{folder}#UID: {listed}")
    return list(found[0].files)


def _size(image_or_reader) -> str:
    return "x".join(map(str, image_or_reader.GetSize()))


def _header(path: Path) -> sitk.ImageFileReader:
    """The image information of a complete medical image file, else InputError naming it."""
    check_complete_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(f"{path} is not a readable image: {itk_reason(error)}") from None
    return reader


def is_volume(path: str | Path) -> bool:
    """True for a DICOM series folder (or FOLDER#UID) or a medical image file with more than
    one slice (4D files included, so that they are refused as volumes, by name). A medical
    file that is cut short or unreadable raises InputError: it cannot be told apart."""
    folder, uid = split_series(path)
    if folder.is_dir():
        return bool(dicom_series(folder))
    path = Path(path)
    if not path.is_file() or suffix_of(path) not in MEDICAL_SUFFIXES:
        return False
    reader = _header(path)
    return reader.GetDimension() >= 3 and min(reader.GetSize()[:3]) > 1


def check_readable_volume(path: str | Path) -> None:
    """Refuse, with one line naming the problem, a path that is not one complete 3D volume:
    missing, truncated or corrupt (``check_complete_file``), 4D, a single slice, not an image,
    or a folder with no or several DICOM series. Cheap: reads headers (and decompresses)."""
    folder, _ = split_series(path)
    if folder.is_dir():
        _series_files(path)
        return
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if suffix_of(path) not in MEDICAL_SUFFIXES:
        raise InputError(f"{path} is not a volume file: use NIfTI, NRRD, MetaImage or a "
                         "DICOM series folder")
    reader = _header(path)
    if reader.GetDimension() > 3 and reader.GetSize()[3:] != (1,) * (reader.GetDimension() - 3):
        raise InputError(f"{path} is a {reader.GetDimension()}D image ({_size(reader)}: several "
                         "volumes, e.g. time points or echoes); fuse one 3D volume at a time")
    if reader.GetDimension() < 3 or min(reader.GetSize()[:3]) <= 1:
        raise InputError(f"{path} is a single 2D image ({_size(reader)}), not a volume")
    if reader.GetNumberOfComponents() not in (1, 3, 4):
        raise InputError(f"{path} has {reader.GetNumberOfComponents()} values per voxel; use "
                         "grey or 8-bit RGB volumes")


def read_volume(path: str | Path) -> sitk.Image:
    """A 3D image from a file, a DICOM series folder, or FOLDER#UID for one series of a folder
    holding several; ``check_readable_volume`` first, so bad files are refused by name."""
    check_readable_volume(path)
    try:
        if split_series(path)[0].is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(_series_files(path))
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"{path} is not a readable volume: {itk_reason(error)}") from None
    if image.GetDimension() == 4:  # a single-volume 4D file: drop its length-1 axis
        image = image[:, :, :, 0]
    return image


def _warn_if_flat(array: np.ndarray, name: str, path: Path) -> None:
    if array.size and array.min() == array.max():
        what = "empty (every voxel is 0)" if array.flat[0] == 0 else \
            f"constant (every voxel is {array.flat[0]})"
        warnings.warn(f"volume {name} ({path}) is {what}: it adds nothing to the fused result",
                      stacklevel=3)


def _on_grid_of_a(image_a: sitk.Image, image_b: sitk.Image, path_a: Path,
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
    image_b = _on_grid_of_a(image_a, image_b, path_a, path_b)
    array_a, array_b = sitk.GetArrayFromImage(image_a), sitk.GetArrayFromImage(image_b)
    _warn_if_flat(array_a, "A", path_a)
    _warn_if_flat(array_b, "B", path_b)
    network = set_emphasis(load_volume_model(model, device, weights), emphasis)
    if model_used is not None:
        model_used(network)
    result = fuse_volumes(network, array_a, array_b, progress=progress, units=units)
    _write_on_grid(result.fused, image_a, output)
    return output


def _write_on_grid(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    """Write a (k, j, i) grey or (k, j, i, 3) RGB array with ``reference``'s geometry."""
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    image.CopyInformation(reference)
    write_atomically(path, lambda target: sitk.WriteImage(image, str(target)))


def run_volume_demo(model: FusionNet, out_dir: Path) -> dict[str, dict[str, float]]:
    """Fuse the bundled sample volume pair into ``out_dir`` (``volume_fused.nii.gz`` on the
    T2 grid and ``volume_views.png``: axial, coronal and sagittal views of T2, FLAIR and the
    result); returns the whole-volume metrics of the network and of each baseline."""
    images = {name: read_volume(path) for name, path in SAMPLE_VOLUMES.items()}
    raw_a, raw_b = (sitk.GetArrayFromImage(image) for image in images.values())
    fused = fuse_volumes(model, raw_a, raw_b).luma
    out_dir = Path(out_dir)
    _write_on_grid(fused, images["T2"], out_dir / "volume_fused.nii.gz")
    a, b = normalize_intensity(raw_a), normalize_intensity(raw_b)
    views = orthogonal_views({"T2": a, "FLAIR": b, f"fused ({model.cfg.spatial_dims}D)": fused},
                             images["T2"].GetSpacing())
    write_atomically(out_dir / "volume_views.png",
                     lambda target: Image.fromarray(views).save(target))
    results = {MODEL_NAME: fused} | {name: fuse(a, b) for name, fuse in BASELINES.items()}
    return {method: volume_metrics(a, b, f) for method, f in results.items()}


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
