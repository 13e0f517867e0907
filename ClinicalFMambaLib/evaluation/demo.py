"""The bundled demo: the sample pairs and the sample volume fused by the networks and the
baselines, side-by-side figures and their metrics (``clinicalfmamba demo``)."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk
from PIL import Image

from ..core.intensity import normalize_intensity
from ..fusion.image_files import load_pair
from ..fusion.inference import fuse_images
from ..fusion.volume_files import write_on_grid
from ..fusion.volumes import fuse_volumes
from ..io.files import write_atomically
from ..io.images import write_image
from ..io.volumes import read_volume
from ..networks.fusion_net import FusionNet
from ..objective.baselines import BASELINES
from .figures import orthogonal_views, side_by_side
from .image_scores import MODEL_NAME, compare_with_baselines
from .volume_metrics import volume_metrics

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "Resources" / "sample"
# The bundled 2D sample (written by scripts/build/make_sample.py): name -> (A, B) file names.
SAMPLE_PAIRS = {
    "mri_ct": ("mri_ct_MRI.png", "mri_ct_CT.png"),
    "mri_spect": ("mri_spect_MRI.png", "mri_spect_SPECT.png"),
}


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


SAMPLE_VOLUMES = {"T2": SAMPLE_DIR / "volume" / "TCGA-DU-7294_t2.nii.gz",
                  "FLAIR": SAMPLE_DIR / "volume" / "TCGA-DU-7294_flair.nii.gz"}


def run_volume_demo(model: FusionNet, out_dir: Path) -> dict[str, dict[str, float]]:
    """Fuse the bundled sample volume pair into ``out_dir`` (``volume_fused.nii.gz`` on the
    T2 grid and ``volume_views.png``: axial, coronal and sagittal views of T2, FLAIR and the
    result); returns the whole-volume metrics of the network and of each baseline."""
    images = {name: read_volume(path) for name, path in SAMPLE_VOLUMES.items()}
    raw_a, raw_b = (sitk.GetArrayFromImage(image) for image in images.values())
    fused = fuse_volumes(model, raw_a, raw_b).luma
    out_dir = Path(out_dir)
    write_on_grid(fused, images["T2"], out_dir / "volume_fused.nii.gz")
    a, b = normalize_intensity(raw_a), normalize_intensity(raw_b)
    views = orthogonal_views({"T2": a, "FLAIR": b, f"fused ({model.cfg.spatial_dims}D)": fused},
                             images["T2"].GetSpacing())
    write_atomically(out_dir / "volume_views.png",
                     lambda target: Image.fromarray(views).save(target))
    results = {MODEL_NAME: fused} | {name: fuse(a, b) for name, fuse in BASELINES.items()}
    return {method: volume_metrics(a, b, f) for method, f in results.items()}
