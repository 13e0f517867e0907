"""Volume files for fusion: NIfTI, NRRD, MHA/MHD and DICOM series folders (SimpleITK)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
from PIL import Image
from tqdm import tqdm

from .baselines import BASELINES
from .fuse_files import MODEL_NAME, SAMPLE_DIR
from .image_io import MEDICAL_SUFFIXES, suffix_of, write_atomically
from .metrics import volume_metrics
from .network import FusionNet
from .preprocessing import normalize_intensity
from .volume_figure import orthogonal_views
from .volume_fusion import fuse_volumes, load_volume_model, resample_onto, same_grid

SAMPLE_VOLUMES = {"T2": SAMPLE_DIR / "volume" / "TCGA-DU-7294_t2.nii.gz",
                  "FLAIR": SAMPLE_DIR / "volume" / "TCGA-DU-7294_flair.nii.gz"}


def _dicom_series(folder: Path) -> list[str]:
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    if not files:
        raise ValueError(f"{folder} holds no DICOM series")
    return list(files)


def is_volume(path: str | Path) -> bool:
    """True for a DICOM series folder or a medical image file with more than one slice."""
    path = Path(path)
    if path.is_dir():
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
    if not path.is_file() or suffix_of(path) not in MEDICAL_SUFFIXES:
        return False
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    return reader.GetDimension() == 3 and min(reader.GetSize()) > 1


def read_volume(path: str | Path) -> sitk.Image:
    """A 3D image from a file or a DICOM series folder (the folder's first series)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(_dicom_series(path))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ValueError(f"{path} is not a readable volume: {error}") from error


def fuse_volume_files(path_a: str | Path, path_b: str | Path, output: str | Path,
                      model: str = "auto", device: str = "auto",
                      progress: Callable[[float], None] | None = None) -> Path:
    """Fuse two volume files into ``output`` on A's grid (origin, spacing, direction, size).

    B is resampled onto A in physical space when their grids differ (with a warning). Grey
    output is float32 in [0, 1]; an RGB input gives RGB output. Written atomically.
    """
    output = Path(output)
    if suffix_of(output) not in MEDICAL_SUFFIXES[:-1]:
        raise ValueError(f"cannot write a volume to {output}: use one of "
                         f"{', '.join(MEDICAL_SUFFIXES[:-1])}")
    image_a, image_b = read_volume(path_a), read_volume(path_b)
    if image_a.GetDimension() != 3 or image_b.GetDimension() != 3:
        raise ValueError("volume fusion needs two 3D images")
    if not same_grid(image_a, image_b):
        image_b = resample_onto(image_a, image_b)
    network = load_volume_model(model, device)
    result = fuse_volumes(network, sitk.GetArrayFromImage(image_a),
                          sitk.GetArrayFromImage(image_b), progress=progress)
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


def progress_bar(description: str) -> tuple[Callable[[float], None], Callable[[], None]]:
    """(progress(fraction) callback, close()) drawing a tqdm bar in percent."""
    bar = tqdm(total=100, desc=description, unit="%")

    def update(fraction: float) -> None:
        bar.update(int(round(100 * fraction)) - bar.n)

    return update, bar.close
