"""Tumour classifier: bundled weights, API, volumes, training command and CLI, on real data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ClinicalFMambaLib.cli.main import main
from ClinicalFMambaLib.clinical import classifier
from ClinicalFMambaLib.clinical.classifier import classify_images, gradcam, load_classifier
from ClinicalFMambaLib.clinical.images import prepare_image, read_image
from ClinicalFMambaLib.clinical.volume_verdict import aggregate_slices, classify_volume
from ClinicalFMambaLib.clinical.volumes import brain_mask, read_volume
from ClinicalFMambaLib.core.errors import Cancelled
from ClinicalFMambaLib.io.weights import WeightsError, bundled, float16_storage, load_weights
from ClinicalFMambaLib.training import classifier_datasets

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TESTING = DATA / "tumor-mri" / "Testing"
TRAINING = DATA / "tumor-mri" / "Training"
BRAIN3D = DATA / "brain3d"
WEIGHTS = bundled("classifier2d.safetensors")

needs_data = pytest.mark.skipif(not (TESTING.is_dir() and BRAIN3D.is_dir()),
                                reason=f"real data not found under {DATA}")
needs_weights = pytest.mark.skipif(not WEIGHTS.exists(),
                                   reason=f"bundled classifier weights not found: {WEIGHTS}")

# Testing JPEGs the bundled model classifies correctly: a sanity set over all classes.
SANITY_SET = {
    "glioma": ["Te-glTr_0000.jpg", "Te-glTr_0001.jpg"],
    "meningioma": ["Te-meTr_0004.jpg", "Te-meTr_0005.jpg"],
    "notumor": ["Te-noTr_0001.jpg", "Te-noTr_0002.jpg"],
    "pituitary": ["Te-piTr_0000.jpg", "Te-piTr_0001.jpg"],
}


@pytest.fixture(scope="module")
def model():
    return load_classifier()


@pytest.fixture(scope="module")
def flair_crop():
    """20 axial slices of TCGA-DU-7294's FLAIR through the tumour, as (z, y, x)."""
    volume, direction, _ = read_volume(BRAIN3D / "TCGA-DU-7294" / "flair.nii.gz")
    return np.ascontiguousarray(volume[95:115]), direction


@needs_weights
def test_bundled_weights_verify_and_load(model):
    state, config = load_weights(WEIGHTS)
    assert config["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]
    assert config["no_tumour_class"] == "notumor"
    assert {"input_size", "arch", "normalisation"} <= set(config)
    assert sum(t.numel() for t in state.values()) < 2_000_000 * config["arch"].get("members", 1)
    assert load_classifier() is model  # loaded once


@needs_weights
def test_corrupt_copy_is_refused(tmp_path):
    copy = tmp_path / WEIGHTS.name
    shutil.copy(WEIGHTS, copy)
    with pytest.raises(WeightsError, match="not listed"):
        load_classifier(copy)
    shutil.copy(WEIGHTS.parent / "MANIFEST.json", tmp_path / "MANIFEST.json")
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt"):
        load_classifier(copy)


@needs_weights
@needs_data
def test_probabilities_and_sanity_set(model):
    paths = [TESTING / cls / name for cls, names in SANITY_SET.items() for name in names]
    images = [read_image(p) for p in paths]
    colour = np.repeat(images[0][..., None], 3, axis=2)  # (H, W, 3) is accepted as well
    probs = classify_images(model, images + [colour, np.random.default_rng(0).random((90, 70))])
    assert probs.shape == (len(paths) + 2, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[len(paths)], probs[0], atol=1e-5)
    expected = [model.classes.index(cls) for cls, names in SANITY_SET.items() for _ in names]
    assert (probs[:len(paths)].argmax(1) == expected).sum() >= 7


@needs_weights
@needs_data
def test_gradcam_at_input_resolution(model):
    image = read_image(TESTING / "glioma" / "Te-glTr_0000.jpg")[:, 20:170]
    before = image.copy()
    heat = gradcam(model, image)
    assert heat.shape == image.shape
    assert heat.min() >= 0 and heat.max() <= 1 and heat.max() > 0.5
    np.testing.assert_array_equal(image, before)
    assert gradcam(model, image, class_index=2).shape == image.shape


@needs_weights
def test_bad_input_is_refused(model):
    with pytest.raises(ValueError, match="2D"):
        classify_images(model, [np.zeros(10)])
    with pytest.raises(ValueError, match="NaN"):
        classify_images(model, [np.full((32, 32), np.nan)])
    with pytest.raises(ValueError, match="list"):
        classify_images(model, np.zeros((32, 32)))
    with pytest.raises(ValueError, match="3D"):
        classify_volume(model, np.zeros((4, 32, 32, 2)))
    with pytest.raises(ValueError, match="constant"):
        classify_volume(model, np.zeros((4, 32, 32)))
    with pytest.raises(ValueError, match="class_index"):
        gradcam(model, np.random.default_rng(0).random((32, 32)), class_index=9)


def test_aggregation_weights_brain_area_and_ignores_edge_slices():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    volume, eligible = aggregate_slices(probs, np.array([10, 1000, 3000, 200]))
    assert eligible.tolist() == [False, True, True, False]
    np.testing.assert_allclose(volume, [0.0, 1.0])
    volume, _ = aggregate_slices(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1000, 3000]))
    np.testing.assert_allclose(volume, [0.5, 0.5])
    with pytest.raises(ValueError, match="no slice"):
        aggregate_slices(probs, np.zeros(4))


@needs_weights
@needs_data
def test_classify_volume_crop(model, flair_crop):
    volume, direction = flair_crop
    before = volume.copy()
    calls = []
    result = classify_volume(model, volume, batch_size=8, direction=direction,
                             progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(volume, before)
    assert result.slice_probabilities.shape == (20, len(result.classes))
    np.testing.assert_allclose(result.slice_probabilities.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.probabilities.sum(), 1.0, atol=1e-5)
    assert result.prediction != "notumor"  # these slices cross the glioma
    assert result.heatmap.shape == volume.shape
    assert result.heatmap.min() >= 0 and 0 < result.heatmap.max() <= 1
    outside = ~brain_mask(volume)  # holes inside the brain are filled
    assert np.all(result.heatmap[outside] == 0)
    assert outside[volume == 0].mean() > 0.9  # and the outside is the zero background
    assert calls[-1] == (20, 20) and len(calls) == 3

    # The same volume stored the other way round (as AURORA is) gives the same answer once
    # its direction says so.
    flipped = volume[:, ::-1, ::-1]
    again = classify_volume(model, flipped, direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    np.testing.assert_allclose(again.slice_probabilities, result.slice_probabilities, atol=0.05)
    np.testing.assert_allclose(again.heatmap[:, ::-1, ::-1], result.heatmap, atol=0.05)

    with pytest.raises(Cancelled):
        classify_volume(model, volume, cancel=lambda: True)


@needs_data
def test_train_classifier_on_class_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(classifier_datasets, "CACHE_DIR", tmp_path / "cache")
    for cls in ("glioma", "meningioma", "notumor", "pituitary"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for source in sorted((TRAINING / cls).glob("*.jpg"))[:6]:
            (tmp_path / "data" / cls / source.name).symlink_to(source)
    output = tmp_path / "out" / "tiny.safetensors"
    assert main(["train-classifier", str(tmp_path / "data"), "--output", str(output),
                 "--epochs", "1", "--batch-size", "8", "--size", "64",
                 "--workdir", str(tmp_path / "work")]) == 0
    state, config = load_weights(output)
    assert config["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]
    assert config["input_size"] == 64
    manifest = json.loads((output.parent / "MANIFEST.json").read_text())
    assert "train-classifier" in manifest[output.name]["command"]
    probs = classify_images(load_classifier(output), [np.random.default_rng(1).random((80, 80))])
    assert probs.shape == (1, 4)

    # A second member (same split, another initialisation) and one of another split; the
    # ensemble script joins the first two and refuses the third.
    members = [output, tmp_path / "out" / "member1.safetensors",
               tmp_path / "out" / "other-split.safetensors"]
    for path, seeds in zip(members[1:], (["--init-seed", "1"], ["--seed", "1"])):
        assert main(["train-classifier", str(tmp_path / "data"), "--output", str(path),
                     "--epochs", "1", "--batch-size", "8", "--size", "64", *seeds,
                     "--workdir", str(tmp_path / path.stem)]) == 0
    ensemble_path = tmp_path / "ensemble" / "classifier2d.safetensors"
    script = [sys.executable, str(ROOT / "scripts" / "build" / "ensemble_classifier.py"),
              "--data-dir", str(tmp_path / "data"), "--output", str(ensemble_path)]
    refused = subprocess.run(script + [str(members[0]), str(members[2])],
                             capture_output=True, encoding="utf-8")
    assert refused.returncode != 0 and "normalisation" in refused.stderr
    assert "Traceback" not in refused.stderr and not ensemble_path.exists()
    joined = subprocess.run(script + [str(members[0]), str(members[1])],
                            capture_output=True, encoding="utf-8")
    assert joined.returncode == 0, joined.stderr
    ensemble = load_classifier(ensemble_path)
    assert ensemble.config["arch"]["members"] == 2
    singles = [load_classifier(path) for path in members[:2]]
    for single in singles:  # the ensemble file stores float16: the members rounded alike
        single.net.load_state_dict(float16_storage(single.net.state_dict()))
    image = read_image(TESTING / "glioma" / "Te-glTr_0000.jpg")
    prepared = np.stack([prepare_image(image, 64)[0]])
    with torch.no_grad():  # two members, each on the image and its mirror
        logits = [single.net(view) for single in singles
                  for view in (single.normalise(prepared), single.normalise(prepared).flip(-1))]
    np.testing.assert_allclose(classify_images(ensemble, [image]),
                               torch.softmax(sum(logits) / 4, 1).numpy(), atol=1e-5)
    # The ensemble's class map is the rectified mean of the members' unrectified maps (each
    # already the mean of the image's and its mirror's).
    with torch.no_grad():
        unrectified = [torch.einsum("k,nkhw->nhw", single.net.class_weights()[0],
                                    classifier.forward_views(single, prepared)[1]) for single in singles]
    expected = torch.nn.functional.interpolate(
        torch.relu((unrectified[0] + unrectified[1]) / 2)[:, None], size=(64, 64),
        mode="bilinear", align_corners=False)[:, 0]
    _, features, _ = classifier.forward_views(ensemble, prepared)
    np.testing.assert_allclose(classifier.class_activation_maps(ensemble, features, torch.tensor([0])).numpy(),
                               expected.numpy(), atol=1e-5)


@needs_data
def test_train_classifier_on_graded_cases(tmp_path, flair_crop):
    cases = tmp_path / "cases"
    for case in ("AURORA", "BraTS-GLI-00001-000", "TCGA-DU-7294"):
        (cases / case).mkdir(parents=True)
        (cases / case / "flair.nii.gz").symlink_to(BRAIN3D / case / "flair.nii.gz")
    grades = tmp_path / "name_mapping.csv"
    # Labels only exercise the plumbing (BraTS name_mapping.csv layout).
    grades.write_text("Grade,BraTS_2020_subject_ID\nHGG,AURORA\nHGG,BraTS-GLI-00001-000\n"
                      "LGG,TCGA-DU-7294\nLGG,not-here\n")
    output = tmp_path / "grade.safetensors"
    assert main(["train-classifier", str(cases), "--grades", str(grades),
                 "--volume-name", "flair.nii.gz", "--slice-step", "6", "--output", str(output),
                 "--epochs", "1", "--batch-size", "8", "--size", "64",
                 "--workdir", str(tmp_path / "work")]) == 0
    grade_model = load_classifier(output)
    assert grade_model.classes == ["HGG", "LGG"] and grade_model.no_tumour_index is None
    result = classify_volume(grade_model, flair_crop[0], direction=flair_crop[1])
    assert result.probabilities.shape == (2,)
    assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


@needs_weights
@needs_data
def test_cli_classify_json(tmp_path, capsys, flair_crop):
    import SimpleITK as sitk

    volume_path = tmp_path / "crop.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(flair_crop[0]), str(volume_path))
    images = [TESTING / "glioma" / "Te-glTr_0000.jpg", TESTING / "notumor" / "Te-noTr_0001.jpg"]
    assert main(["classify", *map(str, images), str(volume_path), "--json",
                 "--heatmap-dir", str(tmp_path / "heat")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["input"] for r in records] == [*map(str, images), str(volume_path)]
    for record in records:
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert Path(record["heatmap"]).exists()
    assert records[2]["kind"] == "volume" and records[2]["slices"] == 20

    assert main(["classify", str(tmp_path / "missing.png")]) == 2
    assert "not found" in capsys.readouterr().err
