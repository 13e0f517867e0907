"""fuse / evaluate / demo commands and 2D image I/O, on real Harvard (AANLIB) pairs."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from ClinicalFMambaLib.core.errors import OutputError
from ClinicalFMambaLib.cli.main import main
from ClinicalFMambaLib.clinical.wording import volume_verdict
from ClinicalFMambaLib.evaluation.metrics import METRIC_NAMES
from ClinicalFMambaLib.fusion.inference import BUNDLED_MODELS
from ClinicalFMambaLib.io import images as image_io
from ClinicalFMambaLib.io.weights import bundled

torch.set_num_threads(1)  # other jobs share the CPU; one thread keeps the file fast enough

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HARVARD = DATA / "harvard"
WEIGHTS = bundled(BUNDLED_MODELS[2])
CT_PAIR = (HARVARD / "CT-MRI" / "MRI" / "2013.png", HARVARD / "CT-MRI" / "CT" / "2013.png")
SPECT_PAIR = (HARVARD / "SPECT-MRI" / "MRI" / "9027.png",
              HARVARD / "SPECT-MRI" / "SPECT" / "9027.png")

needs_data = pytest.mark.skipif(not HARVARD.is_dir(), reason=f"real data not found: {HARVARD}")
needs_weights = pytest.mark.skipif(
    not WEIGHTS.exists(), reason=f"bundled fusion weights not written yet: {WEIGHTS}")


def digest(paths) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def fuse_cli(a: Path, b: Path, out: Path, *extra: str) -> int:
    return main(["fuse", str(a), str(b), "-o", str(out), "--device", "cpu", *extra])


def small_png(source: Path, target: Path, size: tuple[int, int] = (128, 128)) -> Path:
    """A smaller copy of a real image: keeps the whole anatomy, fuses four times faster."""
    with Image.open(source) as image:
        image.resize(size, Image.BILINEAR).save(target)
    return target


def ycbcr(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("YCbCr")).astype(int)


@pytest.fixture(scope="module")
def fused_pairs(tmp_path_factory):
    """The CT-MRI and SPECT-MRI pairs fused to PNG, with input hashes before and after."""
    out = tmp_path_factory.mktemp("fused")
    inputs = [*CT_PAIR, *SPECT_PAIR]
    before = digest(inputs)
    codes = [fuse_cli(*CT_PAIR, out / "ct.png"), fuse_cli(*SPECT_PAIR, out / "spect.png")]
    return {"ct": out / "ct.png", "spect": out / "spect.png", "codes": codes,
            "before": before, "after": digest(inputs)}


@needs_data
@needs_weights
def test_fuse_ct_mri_writes_grey_png_of_a_size(fused_pairs):
    assert fused_pairs["codes"] == [0, 0]
    with Image.open(fused_pairs["ct"]) as fused, Image.open(CT_PAIR[0]) as a:
        assert (fused.mode, fused.size) == ("L", a.size)
        assert np.asarray(fused).std() > 5  # an image, not a constant


@needs_data
@needs_weights
def test_fuse_spect_mri_keeps_the_spect_colour(fused_pairs):
    with Image.open(fused_pairs["spect"]) as fused:
        assert (fused.mode, fused.size) == ("RGB", (256, 256))
        rgb = np.asarray(fused)
    out, spect = ycbcr(fused_pairs["spect"]), ycbcr(SPECT_PAIR[1])
    # Where no RGB channel clips, Cb/Cr survive the Y swap up to uint8 rounding (a fused
    # luma outside the colour's RGB gamut clips, as in every YCbCr fusion).
    unclipped = (rgb.min(axis=-1) > 0) & (rgb.max(axis=-1) < 255)
    coloured = np.abs(spect[..., 1:] - 128).max(axis=-1) > 8
    assert (unclipped & coloured).sum() > 5000
    assert np.abs(out[..., 1:] - spect[..., 1:])[unclipped].max() <= 2
    assert not np.array_equal(out[..., 0], spect[..., 0])  # the luma was fused


@needs_data
@needs_weights
def test_inputs_are_not_modified(fused_pairs):
    assert fused_pairs["after"] == fused_pairs["before"]


@pytest.fixture(scope="module")
def fused_folders(tmp_path_factory):
    """Two folders of (smaller) real pairs, one name only in A, fused into a third."""
    root = tmp_path_factory.mktemp("folders")
    folder_a, folder_b, out = root / "a", root / "b", root / "out"
    folder_a.mkdir(), folder_b.mkdir()
    for name, (a, b) in {"ct.png": CT_PAIR, "spect.png": SPECT_PAIR}.items():
        small_png(a, folder_a / name), small_png(b, folder_b / name)
    small_png(CT_PAIR[0], folder_a / "only_in_a.png")
    stdout, stderr = StringIO(), StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = fuse_cli(folder_a, folder_b, out)
    return {"a": folder_a, "b": folder_b, "out": out, "code": code,
            "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


@needs_data
@needs_weights
def test_fuse_two_folders(fused_folders):
    assert fused_folders["code"] == 0, fused_folders["stderr"]
    out = fused_folders["out"]
    assert sorted(p.name for p in out.iterdir()) == ["ct.png", "spect.png"]
    assert "only_in_a.png" in fused_folders["stderr"]
    assert f"wrote 2 fused images to {out}" in fused_folders["stdout"]


@needs_data
@needs_weights
def test_evaluate_json_has_the_ten_metrics(fused_folders, capsys):
    folder_a, folder_b, out = fused_folders["a"], fused_folders["b"], fused_folders["out"]
    assert main(["evaluate", str(folder_a), str(folder_b), str(out), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["fused"]).name for r in records] == ["ct.png", "spect.png"]
    for record in records:
        assert set(METRIC_NAMES) <= set(record)
        assert all(math.isfinite(record[k]) for k in METRIC_NAMES)
        assert 0 < record["paper_SSIM"] <= 1


@needs_data
@needs_weights
def test_evaluate_folders_prints_a_mean_row_and_the_baselines(fused_folders):
    folder_a, folder_b, out = fused_folders["a"], fused_folders["b"], fused_folders["out"]
    stdout = StringIO()
    with redirect_stdout(stdout), redirect_stderr(StringIO()):
        assert main(["evaluate", str(folder_a), str(folder_b), str(out)]) == 0
    lines = stdout.getvalue().splitlines()
    rows = {}
    for words in map(str.split, lines):
        if len(words) > 1 and words[1][-1].isdigit():  # a table row, not a header or title
            rows[words[0]] = words[1:]
    assert {"ct.png", "spect.png", "average", "ClinicalFMamba", "mean", "max",
            "laplacian"} <= set(rows)
    per_image = np.array([rows[name] for name in ("ct.png", "spect.png")], dtype=float)
    average = per_image.mean(axis=0)
    np.testing.assert_allclose(np.array(rows["average"], dtype=float), average, atol=1e-4)
    np.testing.assert_allclose(np.array(rows["ClinicalFMamba"], dtype=float), average, atol=1e-4)
    assert any(line.startswith("average over 2 pair(s)") for line in lines)


def test_top_level_help_speaks_to_users():
    from ClinicalFMambaLib.cli.main import build_parser

    text = build_parser().format_help()
    assert text.splitlines()[0].startswith("usage: clinicalfmamba")
    assert "clinicalfmamba demo" in text and "fuse A B -o OUT" in text and "Exit codes" in text
    assert "``" not in text


def test_training_flags_have_help_and_defaults():
    from ClinicalFMambaLib.cli.main import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name in ("train-fusion", "train-classifier"):
        for action in commands[name]._actions:
            if action.dest in ("help",):
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            if action.default not in (None, False, []) and action.option_strings:
                assert "default" in action.help, f"{name} {action.option_strings}"


def test_readme_python_snippet_runs_as_written(tmp_path):
    """The README's Python block, as a user pastes it in the project folder."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "Resources").symlink_to(Path(__file__).resolve().parents[1] / "Resources")
    (tmp_path / "snippet.py").write_text(snippet + "\nprint(fused.dtype, fused.shape)\n",
                                         encoding="utf-8")
    result = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True,
                            encoding="utf-8", timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["float32", "(256,", "256)"]
    assert (tmp_path / "fused.png").is_file()
    assert sitk.ReadImage(str(tmp_path / "fused.nii.gz")).GetSize() == (96, 96, 40)


def ct_like_slice(path: Path, geometry: dict, hounsfield: bool) -> sitk.Image:
    """A one-slice 3D int16 image of a real (smaller) PNG, CT-like values when asked."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L").resize((96, 80)), dtype=np.int16)
    values = pixels * 8 - 1000 if hounsfield else pixels * 4
    image = sitk.GetImageFromArray(values[None].astype(np.int16))
    image.SetOrigin(geometry["origin"])
    image.SetSpacing(geometry["spacing"])
    image.SetDirection(geometry["direction"])
    return image


@needs_data
@needs_weights
def test_nifti_output_has_the_geometry_of_a(tmp_path):
    c, s = math.cos(0.4), math.sin(0.4)
    geometry = {"origin": (-91.5, 12.25, 40.0), "spacing": (0.75, 0.5, 3.0),
                "direction": (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0)}
    a, b, out = tmp_path / "ct.nii.gz", tmp_path / "mri.nii.gz", tmp_path / "fused.nii.gz"
    sitk.WriteImage(ct_like_slice(CT_PAIR[1], geometry, hounsfield=True), str(a))
    sitk.WriteImage(ct_like_slice(CT_PAIR[0], geometry, hounsfield=False), str(b))
    assert fuse_cli(a, b, out) == 0
    reference, fused = sitk.ReadImage(str(a)), sitk.ReadImage(str(out))
    assert fused.GetSize() == reference.GetSize() == (96, 80, 1)
    assert fused.GetOrigin() == reference.GetOrigin()
    assert fused.GetSpacing() == reference.GetSpacing()
    assert fused.GetDirection() == reference.GetDirection()
    assert fused.GetPixelID() == sitk.sitkFloat32
    values = sitk.GetArrayFromImage(fused)
    assert 0.0 <= values.min() < values.max() <= 1.0


@needs_data
@needs_weights
def test_different_sizes_are_resampled_to_a_with_a_warning(tmp_path):
    a = small_png(CT_PAIR[0], tmp_path / "mri.png")
    b = small_png(CT_PAIR[1], tmp_path / "ct.png", size=(100, 90))
    with pytest.warns(UserWarning, match="100x90.*128x128"):
        assert fuse_cli(a, b, tmp_path / "fused.png") == 0
    with Image.open(tmp_path / "fused.png") as fused:
        assert fused.size == (128, 128)


def _volume(path, array, origin=(-90.0, 120.0, -60.0), spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(path))
    return image


@needs_weights
@needs_data
def test_volumes_fuse_on_the_first_volumes_grid(tmp_path, capsys):
    case = DATA / "brain3d" / "TCGA-DU-7294"
    crop = (slice(70, 76), slice(80, 144), slice(90, 150))
    t2 = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "t2.nii.gz")))[crop]
    flair = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "flair.nii.gz")))[crop]
    reference = _volume(tmp_path / "t2.nii.gz", t2)
    _volume(tmp_path / "flair.nii.gz", flair)
    out = tmp_path / "fused.nii.gz"
    assert fuse_cli(tmp_path / "t2.nii.gz", tmp_path / "flair.nii.gz", out, "--model", "2d") == 0
    fused = sitk.ReadImage(str(out))
    for attribute in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(fused, attribute)() == getattr(reference, attribute)()
    values = sitk.GetArrayFromImage(fused)
    assert values.dtype == np.float32 and 0 <= values.min() and values.max() <= 1
    assert values.std() > 0.05

    # B on another grid (shifted origin): resampled onto A with a warning, output on A's grid.
    _volume(tmp_path / "flair_shifted.nii.gz", flair, origin=(-88.0, 120.0, -60.0))
    with pytest.warns(UserWarning, match="resampled"):
        assert fuse_cli(tmp_path / "t2.nii.gz", tmp_path / "flair_shifted.nii.gz",
                        tmp_path / "fused2.nii.gz", "--model", "2d") == 0
    assert sitk.ReadImage(str(tmp_path / "fused2.nii.gz")).GetSize() == reference.GetSize()


def test_model_3d_needs_volumes_and_3d_weights(tmp_path, capsys):
    pictures = [tmp_path / "a.png", tmp_path / "b.png"]
    for picture in pictures:
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(picture)
    assert fuse_cli(*pictures, tmp_path / "f.png", "--model", "3d") == 2
    assert "fuses volumes" in capsys.readouterr().err
    volumes = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]
    for volume in volumes:
        _volume(volume, np.zeros((6, 32, 32), np.int16))
    if not bundled(BUNDLED_MODELS[3]).exists():
        assert fuse_cli(*volumes, tmp_path / "fused.nii.gz", "--model", "3d") == 2
        assert "not bundled" in capsys.readouterr().err
    assert not (tmp_path / "fused.nii.gz").exists()


SAMPLE_VOLUMES = Path(__file__).resolve().parents[1] / "Resources" / "sample" / "volume"


@needs_weights
def test_fuse_classify_writes_report_and_heatmaps(tmp_path, capsys):
    """Image and volume: one JSON report per run, probabilities over the classifier's classes,
    a heatmap beside each fused result (on the fused volume's grid)."""
    sample = Path(__file__).resolve().parents[1] / "Resources" / "sample"
    assert fuse_cli(sample / "mri_ct_MRI.png", sample / "mri_ct_CT.png", tmp_path / "f.png",
                    "--classify") == 0
    report = json.loads((tmp_path / "f_report.json").read_text())
    (record,) = report["results"]
    assert record["kind"] == "image" and record["prediction"] in report["classes"]
    assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert Path(record["heatmap"]).is_file() and record["fused"] == str(tmp_path / "f.png")

    t2, flair = SAMPLE_VOLUMES / "TCGA-DU-7294_t2.nii.gz", SAMPLE_VOLUMES / "TCGA-DU-7294_flair.nii.gz"
    out, report_path = tmp_path / "fused.nii.gz", tmp_path / "reports" / "case.json"
    assert fuse_cli(t2, flair, out, "--model", "2d", "--classify",
                    "--report", str(report_path)) == 0
    (record,) = json.loads(report_path.read_text())["results"]
    assert record["kind"] == "volume" and record["a"] == str(t2)
    assert record["slices"] == sitk.ReadImage(str(out)).GetSize()[2]
    heatmap = sitk.ReadImage(record["heatmap"])
    assert heatmap.GetSize() == sitk.ReadImage(str(out)).GetSize()
    assert f"{out}: {volume_verdict(record)}" in capsys.readouterr().out


def test_report_without_classify_is_refused(tmp_path, capsys):
    picture = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(picture)
    assert fuse_cli(picture, picture, tmp_path / "f.png", "--report", str(tmp_path / "r.json")) == 2
    assert "--classify" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


@needs_data
@pytest.mark.parametrize("missing", ["input", "weights"])
def test_missing_file_exits_2_naming_it(tmp_path, capsys, missing):
    absent = tmp_path / f"absent_{missing}.png"
    if missing == "input":
        code = fuse_cli(CT_PAIR[0], absent, tmp_path / "fused.png")
    else:
        code = fuse_cli(*CT_PAIR, tmp_path / "fused.png", "--weights", str(absent))
    assert code == 2
    assert str(absent) in capsys.readouterr().err
    assert not (tmp_path / "fused.png").exists()


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken(image, path):
        Path(path).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(image_io.sitk, "WriteImage", broken)
    with pytest.raises(OutputError, match="the writer stopped \\(disk full\\)"):
        image_io.write_image(tmp_path / "fused.nii.gz", np.zeros((8, 8), np.float32))
    assert list(tmp_path.iterdir()) == []


@needs_weights
def test_demo_writes_fused_images_and_views(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--device", "cpu"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.json", "mri_ct_fused.png", "mri_ct_side_by_side.png",
        "mri_spect_fused.png", "mri_spect_side_by_side.png", "volume_fused.nii.gz",
        "volume_views.png"]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert set(written) == {"mri_ct", "mri_spect", "volume_3d"}
    assert set(written["mri_ct"]) == {"ClinicalFMamba", "mean", "max", "laplacian"}
    assert set(METRIC_NAMES) <= set(written["mri_spect"]["ClinicalFMamba"])
    fused, t2 = (sitk.ReadImage(str(p)) for p in (tmp_path / "volume_fused.nii.gz",
                                                  SAMPLE_VOLUMES / "TCGA-DU-7294_t2.nii.gz"))
    assert fused.GetSize() == t2.GetSize() and fused.GetOrigin() == t2.GetOrigin()
    with Image.open(tmp_path / "volume_views.png") as views:
        assert views.size[0] == 3 * 192 and views.size[1] > 3 * 192  # 3 planes x 3 volumes
    with Image.open(tmp_path / "mri_spect_side_by_side.png") as strip:
        assert strip.size == (3 * 256, 256)
    printed = capsys.readouterr().out
    assert all(method in printed for method in ("ClinicalFMamba", "mean", "max", "laplacian"))
    # The 40-slice sample fits one MS-SSIM scale only, where MS-SSIM would repeat SSIM.
    assert "SSIM" in printed and "MS-SSIM" not in printed
