"""Reading volumes: NIfTI, NRRD, MHA/MHD and DICOM series folders (one series picked as
``FOLDER#UID``), checked (complete, 3D, one series) before their voxels are read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from .files import MEDICAL_SUFFIXES, check_complete_file, check_input_path, itk_reason, suffix_of


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


# Spacing between neighbouring slices may differ by this share of the usual spacing (rounding
# in the position tags); a missing slice doubles it.
SLICE_GAP_TOLERANCE = 0.1


def _slice_offsets(files: list[str]) -> list[float]:
    """Each slice's position along the slice normal (mm), from its DICOM position and
    orientation tags."""
    offsets = []
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        reader.ReadImageInformation()
        row_col = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
        normal = np.cross(row_col[:3], row_col[3:])
        position = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
        offsets.append(float(np.dot(normal, position)))
    return offsets


def check_regular_slices(files: list[str], label: str) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing slice, mixed stacks):
    read onto a regular grid, every slice past the gap would sit in the wrong place."""
    try:
        offsets = np.sort(_slice_offsets(files))
    except (RuntimeError, ValueError):  # no position tags: ITK decides the geometry alone
        return
    steps = np.diff(offsets)
    if len(steps) < 2:
        return
    usual = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - usual)))
    if abs(steps[worst] - usual) > SLICE_GAP_TOLERANCE * abs(usual):
        raise InputError(f"{label} has irregular slice positions: {steps[worst]:.2f} mm between "
                         f"slices {worst + 1} and {worst + 2} of {len(files)}, {usual:.2f} mm "
                         "elsewhere (a missing slice?); on a regular grid the slices past it "
                         "would be misplaced")


def _series_files(path: str | Path) -> list[str]:
    """Slice files of the one series a folder holds, or of the series named by FOLDER#UID,
    evenly spaced (``check_regular_slices``)."""
    folder, uid = split_series(path)
    found = dicom_series(folder)
    if not found:
        raise InputError(f"{folder} holds no DICOM series")
    listed = "; ".join(map(str, found))
    if uid is not None:
        chosen = [series for series in found if series.uid == uid]
        if not chosen:
            raise InputError(f"{folder} has no DICOM series {uid}; it holds: {listed}")
    elif len(found) > 1:
        raise InputError(f"{folder} holds {len(found)} DICOM series; pick one as "
                         f"{folder}#UID: {listed}")
    else:
        chosen = found
    check_regular_slices(list(chosen[0].files), f"the DICOM series in {path}")
    return list(chosen[0].files)


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
    path = check_input_path(path)
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
