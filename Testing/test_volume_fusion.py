"""Volume fusion (slice by slice with the 2D model, and with the 3D model) and resampling, on
small real crops of the brain3d case TCGA-DU-7294 (T2 and FLAIR, one grid)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ClinicalFMambaLib.core.errors import Cancelled
from ClinicalFMambaLib.core.intensity import normalize_intensity
from ClinicalFMambaLib.evaluation.volume_metrics import (VOLUME_TABLE_COLUMNS, measured_slices,
                                                         volume_fusion_metrics,
                                                         volume_table_metrics)
from ClinicalFMambaLib.fusion import volumes as vf
from ClinicalFMambaLib.fusion.inference import BUNDLED_MODELS, fuse_normalized
from ClinicalFMambaLib.io.weights import bundled

torch.set_num_threads(1)  # other jobs share the CPU

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CASE = DATA / "brain3d" / "TCGA-DU-7294"
if not CASE.is_dir():
    pytest.skip(f"real data not found: {CASE}", allow_module_level=True)

# Five axial slices through the tumour, 96x96 voxels around it (index order i, j, k).
CROP_START, CROP_SIZE = (56, 60, 100), (96, 96, 5)


def crop(name: str) -> sitk.Image:
    image = sitk.ReadImage(str(CASE / f"{name}.nii.gz"))
    return sitk.RegionOfInterest(image, CROP_SIZE, CROP_START)


def slicer_matrix(image: sitk.Image) -> np.ndarray:
    """IJK-to-RAS as Slicer would give it for this image."""
    matrix = np.eye(4)
    columns = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    matrix[:3, :3] = vf.RAS_TO_LPS @ columns
    matrix[:3, 3] = vf.RAS_TO_LPS @ np.asarray(image.GetOrigin())
    return matrix


@pytest.fixture(scope="module")
def images() -> tuple[sitk.Image, sitk.Image]:
    return crop("t2"), crop("flair")


@pytest.fixture(scope="module")
def arrays(images) -> tuple[np.ndarray, np.ndarray]:
    return tuple(sitk.GetArrayFromImage(image) for image in images)


@pytest.fixture(scope="module")
def model():
    return vf.load_volume_model("2d", device="cpu")


@pytest.fixture(scope="module")
def fused(model, arrays):
    a, b = arrays
    copies = a.copy(), b.copy()
    reports: list[float] = []
    result = vf.fuse_volumes(model, a, b, batch_size=2, progress=reports.append)
    return result, copies, reports


def test_fused_volume_is_float_unit_range_on_a_grid(fused, arrays):
    result = fused[0]
    assert result.fused.shape == arrays[0].shape and result.fused.dtype == np.float32
    assert 0.0 <= result.fused.min() and result.fused.max() <= 1.0
    assert result.luma is result.fused


def test_inputs_unchanged(fused, arrays):
    for array, copy in zip(arrays, fused[1]):
        assert np.array_equal(array, copy)


def test_progress_per_batch(fused):
    assert fused[2] == pytest.approx([0.4, 0.8, 1.0])  # 5 slices in batches of 2


def test_slices_use_the_volume_normalisation(fused, model, arrays):
    """Each fused slice is the 2D model on that slice of the whole-volume normalisation."""
    ya, yb = (normalize_intensity(array) for array in arrays)
    for k in (0, 4):
        expected = fuse_normalized(model, ya[k], yb[k])
        assert np.allclose(fused[0].fused[k], expected, atol=1e-5)
    per_slice = normalize_intensity(arrays[0][0])
    assert not np.allclose(per_slice, ya[0], atol=1e-3)  # the difference is real


def test_empty_slices_stay_zero(model, arrays):
    a, b = (np.concatenate([array[:1], np.zeros_like(array[:1])]) for array in arrays)
    result = vf.fuse_volumes(model, a, b)
    assert not result.fused[1].any() and result.fused[0].any()


def test_cancel_stops_with_dedicated_exception(model, arrays):
    reports: list[float] = []
    with pytest.raises(vf.FusionCancelled) as raised:
        vf.fuse_volumes(model, *arrays, batch_size=2, progress=reports.append,
                        cancel=lambda: bool(reports))
    assert isinstance(raised.value, Cancelled) and reports == [pytest.approx(0.4)]


def test_colour_volume_keeps_its_chroma(model, arrays):
    grey = np.clip(normalize_intensity(arrays[1][:2]) * 255, 0, 255).astype(np.uint8)
    rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1)  # a pseudo-colour map
    result = vf.fuse_volumes(model, arrays[0][:2], rgb)
    assert result.fused.shape == rgb.shape and result.fused.dtype == np.uint8
    assert result.luma.shape == rgb.shape[:3] and result.luma.dtype == np.float32
    assert not np.array_equal(result.fused[..., 0], result.fused[..., 2])


def test_bad_inputs_are_refused(model, arrays):
    a, b = arrays
    with pytest.raises(ValueError, match="resample B onto A"):
        vf.fuse_volumes(model, a, b[:, :64])
    with pytest.raises(ValueError, match=r"\(k, j, i\)"):
        vf.fuse_volumes(model, a[0], b[0])
    rgb = np.zeros(a.shape + (3,), np.uint8)
    with pytest.raises(ValueError, match="both volumes are colour"):
        vf.fuse_volumes(model, rgb, rgb)
    with pytest.raises(ValueError, match="8-bit"):
        vf.fuse_volumes(model, a, rgb.astype(np.float32))


def test_model_kinds():
    with pytest.raises(ValueError, match="model must be one of"):
        vf.load_volume_model("4d")
    assert vf.load_volume_model("2d").cfg.spatial_dims == 2
    if bundled(BUNDLED_MODELS[3]).exists():
        assert vf.load_volume_model("auto").cfg.spatial_dims == 3
    else:
        with pytest.raises(FileNotFoundError, match="not bundled yet"):
            vf.load_volume_model("3d")


@pytest.mark.skipif(not bundled(BUNDLED_MODELS[3]).exists(), reason="no bundled 3D model")
def test_3d_model_fuses_the_brain_box_only(arrays):
    """Background stays 0, and only the box around the signal (plus a margin) is fused: the
    same pair with more empty space around it fuses to the same voxels."""
    model = vf.load_volume_model("3d", device="cpu")
    # The brain crop with an empty border wider than the box margin.
    a, b = (np.pad(np.repeat(x, 4, axis=0)[:, 16:80, 16:80], vf.BOX_MARGIN + 2) for x in arrays)
    fused = vf.fuse_volumes(model, a, b).fused
    assert fused.shape == a.shape and 0 <= fused.min() and fused.max() <= 1
    assert not fused[(a == 0) & (b == 0)].any() and fused.std() > 0.05
    wide = 30
    again = vf.fuse_volumes(model, *(np.pad(x, wide) for x in (a, b))).fused
    np.testing.assert_allclose(again[wide:-wide, wide:-wide, wide:-wide], fused, atol=1e-5)


def test_image_from_slicer_matrix_matches_the_file(images, arrays):
    image = vf.image_from_array(arrays[0], slicer_matrix(images[0]))
    assert vf.same_grid(images[0], image)
    assert image.GetSize() == images[0].GetSize()


def flipped_and_padded(image: sitk.Image) -> sitk.Image:
    """The same anatomy on another grid: i axis reversed, 7 more empty voxels along j."""
    array = np.pad(sitk.GetArrayFromImage(image)[:, :, ::-1], ((0, 0), (3, 4), (0, 0)))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing())
    origin = (np.asarray(image.GetOrigin())
              + direction[:, 0] * spacing[0] * (image.GetSize()[0] - 1)
              - direction[:, 1] * spacing[1] * 3)
    moved = sitk.GetImageFromArray(array)
    moved.SetSpacing(image.GetSpacing())
    moved.SetDirection((direction * [-1, 1, 1]).ravel().tolist())
    moved.SetOrigin(origin.tolist())
    return moved


def test_resample_onto_works_in_physical_space(images, arrays):
    moving = flipped_and_padded(images[1])
    assert not vf.same_grid(images[0], moving)
    with pytest.warns(UserWarning, match="resampled"):
        resampled = vf.resample_onto(images[0], moving)
    assert vf.same_grid(images[0], resampled)
    assert resampled.GetPixelID() == sitk.sitkFloat32
    assert np.allclose(sitk.GetArrayFromImage(resampled), arrays[1], atol=1e-3)


def test_on_grid_of_resamples_only_when_grids_differ(images, arrays):
    matrix = slicer_matrix(images[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vf.on_grid_of(arrays[0], matrix, arrays[1], matrix) is arrays[1]
    moving = flipped_and_padded(images[1])
    with pytest.warns(UserWarning, match="resampled"):
        aligned = vf.on_grid_of(arrays[0], matrix, sitk.GetArrayFromImage(moving),
                                slicer_matrix(moving))
    assert np.allclose(aligned, arrays[1], atol=1e-3)


def test_volume_metrics(fused, arrays):
    ya, yb = (vf.volume_luma(array)[0] for array in arrays)
    metrics = volume_fusion_metrics(ya, yb, fused[0].luma, slices=2)
    assert {"EN", "MI", "SSIM", "Qabf", "PSNR"} <= set(metrics)
    assert all(np.isfinite(value) for value in metrics.values())
    with pytest.raises(ValueError, match="empty"):
        volume_fusion_metrics(ya * 0, yb * 0, ya)
    # The 5-slice sample three times over: thick enough for the volume SSIM's 11-voxel window.
    ya2, yb2, f2 = (np.concatenate([x, x, x]) for x in (ya, yb, fused[0].luma))
    box = (slice(None), slice(2, -2), slice(2, -2))
    table = volume_table_metrics(ya2, yb2, f2, box, slices=2)
    assert set(VOLUME_TABLE_COLUMNS) - set(table) == {"MS-SSIM"}  # too thin for 2 scales
    assert table["2D SD"] == volume_fusion_metrics(ya2, yb2, f2, slices=2)["SD"]
    whole = volume_table_metrics(ya2, yb2, f2, (slice(None),) * 3, slices=2)
    assert table["PSNR"] != whole["PSNR"]  # the volume columns are scored inside the box


def test_measured_slices_spread_evenly_over_the_slices_with_signal():
    a, b = np.zeros((20, 4, 4)), np.zeros((20, 4, 4))
    a[5:12, 1, 1], b[9:15, 2, 2] = 1, 1  # signal in slices 5-14, from one input or the other
    assert measured_slices(a, b, 4).tolist() == [5, 8, 11, 14]
    assert measured_slices(a, b, 50).tolist() == list(range(5, 15))


def test_3d_fusion_of_files_keeps_the_geometry_of_a(images, tmp_path):
    """The 3D network through fuse_volume_files: output on A's grid, size, origin, spacing and
    direction identical (here an oblique direction and an odd origin)."""
    from ClinicalFMambaLib.fusion.volume_files import fuse_volume_files

    paths = []
    for name, image in zip(("a", "b"), images):
        image = sitk.Image(image)
        image.SetOrigin((-91.5, 12.25, 40.0))
        image.SetSpacing((0.9, 1.1, 2.5))
        c, s = np.cos(0.3), np.sin(0.3)
        image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
        paths.append(tmp_path / f"{name}.nii.gz")
        sitk.WriteImage(image, str(paths[-1]))
    out = fuse_volume_files(*paths, tmp_path / "fused.nii.gz", model="3d", device="cpu")
    reference, fused = sitk.ReadImage(str(paths[0])), sitk.ReadImage(str(out))
    for attribute in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(fused, attribute)() == getattr(reference, attribute)()
    values = sitk.GetArrayFromImage(fused)
    assert values.dtype == np.float32 and 0 <= values.min() and values.max() <= 1
