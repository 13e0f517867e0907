"""Faults: bad weights (missing, corrupt, of the wrong network, producing NaN), signals in the
middle of the work or of the write, an unexpected error, heatmaps of inputs that share a
file name. Each ends with one line and its exit code, leaves no partial file and every
input as it was."""

from __future__ import annotations

import json
import shutil
import signal

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from bad_inputs import (  # noqa: F401 (crops: the fixture that pair uses)
    CT_PAIR, SAMPLE, assert_refused, cli, copy, crops, needs_data, pair, signalled,
    signalled_during_write, snapshot)

from ClinicalFMambaLib.core.errors import InvalidResultError
from ClinicalFMambaLib.fusion import image_files
from ClinicalFMambaLib.fusion.inference import BUNDLED_MODELS, fuse_images, load_fusion_model
from ClinicalFMambaLib.io.images import read_image
from ClinicalFMambaLib.io.weights import MANIFEST_NAME, bundled, load_weights, save_weights

pytestmark = needs_data
SAMPLE_T2 = SAMPLE / "volume" / "TCGA-DU-7294_t2.nii.gz"
SAMPLE_FLAIR = SAMPLE / "volume" / "TCGA-DU-7294_flair.nii.gz"


def nan_weights(dims: int, folder) -> str:
    """The bundled fusion weights with one layer set to NaN, saved with a manifest entry, so
    they pass the SHA-256 check: a trained run that diverged."""
    state, config = load_weights(bundled(BUNDLED_MODELS[dims]))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim > 1)
    state[name] = torch.full_like(state[name], float("nan"))
    path = folder / f"diverged{dims}d.safetensors"
    save_weights(state, path, config)
    return str(path)


# ------------------------------------------------------------------ item 3: --weights for volumes

def test_missing_weights_for_volumes_are_refused(pair, tmp_path):
    t2, flair = pair
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, flair, "-o", tmp_path / "f.nii.gz", "--weights",
                       tmp_path / "absent.safetensors"), 2, "weights file not found",
                   "absent.safetensors")
    assert snapshot(tmp_path) == before


def test_corrupt_weights_for_volumes_are_refused(pair, tmp_path):
    t2, flair = pair
    weights = tmp_path / "w" / "fusion3d.safetensors"
    copy(bundled(BUNDLED_MODELS[3]), weights)
    copy(bundled(MANIFEST_NAME), weights.parent / MANIFEST_NAME)
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01
    weights.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, flair, "-o", tmp_path / "f.nii.gz", "--weights", weights),
                   2, str(weights), "corrupt or was modified")
    assert snapshot(tmp_path) == before


def test_weights_for_volumes_are_used(pair, tmp_path):
    """NaN 3D weights given for volumes stop the run: they are the weights used."""
    t2, flair = pair
    weights = nan_weights(3, tmp_path)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, flair, "-o", tmp_path / "f.nii.gz", "--weights", weights,
                       "--device", "cpu"), 4, "NaN")
    assert snapshot(tmp_path) == before


def test_2d_weights_with_model_3d_are_refused_for_volumes(pair, tmp_path):
    t2, flair = pair
    assert_refused(cli("fuse", t2, flair, "-o", tmp_path / "f.nii.gz", "--model", "3d",
                       "--weights", bundled(BUNDLED_MODELS[2])), 2,
                   "holds 2D fusion weights", "volumes need 3D weights")
    assert not (tmp_path / "f.nii.gz").exists()


# ------------------------------------------------------------------ item 10: NaN output

def test_nan_weights_on_2d_images_exit_4_and_write_nothing(tmp_path):
    a, b = copy(CT_PAIR[0], tmp_path / "mri.png"), copy(CT_PAIR[1], tmp_path / "ct.png")
    weights = nan_weights(2, tmp_path)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", a, b, "-o", tmp_path / "f.png", "--weights", weights,
                       "--device", "cpu"), 4, "produced NaN/Inf", "nothing written")
    assert snapshot(tmp_path) == before


def test_corrupted_tensors_loaded_unverified_raise_instead_of_fusing(tmp_path):
    """load_weights(verify=False) skips the hash: the network's output is checked anyway."""
    weights = copy(bundled(BUNDLED_MODELS[2]), tmp_path / "copy.safetensors")
    data = bytearray(weights.read_bytes())
    data[-4096:] = b"\xff" * 4096  # float32 0xFFFFFFFF is NaN
    weights.write_bytes(bytes(data))
    state, config = load_weights(weights, verify=False)
    model = load_fusion_model(bundled(BUNDLED_MODELS[2]), device="cpu")
    model.load_state_dict(state)
    a, b = (read_image(p)[0] for p in CT_PAIR)
    with pytest.raises(InvalidResultError, match="NaN"):
        fuse_images(model, a, b)


# ------------------------------------------------------------------ item 11: weights messages

def test_classifier_weights_passed_as_fusion_weights_are_named(tmp_path):
    assert_refused(cli("fuse", *CT_PAIR, "-o", tmp_path / "f.png", "--weights",
                       bundled("classifier2d.safetensors")), 2,
                   "holds classifier weights, not fusion weights")
    assert list(tmp_path.iterdir()) == []


def test_3d_weights_on_2d_images_are_named(tmp_path):
    assert_refused(cli("fuse", *CT_PAIR, "-o", tmp_path / "f.png", "--weights",
                       bundled(BUNDLED_MODELS[3])), 2, "holds 3D fusion weights",
                   "2D images need 2D weights")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ item 4: signals

@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_signal_during_volume_fusion_exits_cleanly(tmp_path, signum, code, word):
    """A real signal while the network runs on the bundled sample volume pair."""
    a, b = copy(SAMPLE_T2, tmp_path / "t2.nii.gz"), copy(SAMPLE_FLAIR, tmp_path / "flair.nii.gz")
    before = snapshot(tmp_path)
    run = signalled(["fuse", a, b, "-o", tmp_path / "f.nii.gz", "--device", "cpu"], signum,
                    when="fuse:")
    assert_refused(run, code, "no partial output")
    assert word in run.messages[0] and run.err.count("\n") == 2  # the bar, the line
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "flair.nii.gz", "t2.nii.gz"]


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130),
                                          (signal.SIGHUP, 129)])
def test_signal_while_the_output_is_written_leaves_no_partial_file(pair, tmp_path, signum,
                                                                   code):
    t2, flair = pair
    before = snapshot(tmp_path)
    run = signalled_during_write(["fuse", t2, flair, "-o", tmp_path / "out" / "f.nii.gz",
                                  "--device", "cpu"], signum)
    assert_refused(run, code, "no partial output")
    assert snapshot(tmp_path) == before
    assert list((tmp_path / "out").iterdir()) == []  # no .partial-* folder, no output


def test_signal_while_a_picture_is_written_leaves_no_partial_file(tmp_path):
    a, b = copy(CT_PAIR[0], tmp_path / "mri.png"), copy(CT_PAIR[1], tmp_path / "ct.png")
    before = snapshot(tmp_path)
    run = signalled_during_write(["fuse", a, b, "-o", tmp_path / "f.png", "--device", "cpu"],
                                 signal.SIGTERM)
    assert_refused(run, 143, "terminated (SIGTERM)")
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "ct.png", "mri.png"]


# ------------------------------------------------------------------ unexpected errors

def test_an_unexpected_error_is_one_line_with_exit_1(tmp_path, monkeypatch):
    def broken(*args):
        raise TypeError("an unexpected fault")

    monkeypatch.setattr(image_files, "fuse_images", broken)
    run = cli("fuse", *CT_PAIR, "-o", tmp_path / "f.png", "--device", "cpu")
    assert_refused(run, 1, "internal error (TypeError: an unexpected fault)",
                   "CLINICALFMAMBA_DEBUG=1")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ item 9: heatmap names

def test_heatmaps_of_inputs_sharing_a_name_never_overwrite(tmp_path):
    """The case/flair.nii.gz layout: one heatmap per case, named after its folder; a second
    run adds numbered files instead of replacing the first run's."""
    slices = (slice(60, 180), slice(60, 180), slice(70, 74))  # x, y, z: 4 slices, 120x120
    cases = []
    for case in ("TCGA-DU-7294", "BraTS-GLI-00001-000"):
        source = SAMPLE.parents[1].parent / "shared" / "data" / "brain3d" / case
        image = sitk.ReadImage(str(source / "flair.nii.gz"))[slices]
        (tmp_path / case).mkdir()
        sitk.WriteImage(image, str(tmp_path / case / "flair.nii.gz"))
        cases.append(tmp_path / case / "flair.nii.gz")
    heatmaps = tmp_path / "heatmaps"
    before = snapshot(tmp_path)
    run = cli("classify", *cases, "--heatmap-dir", heatmaps, "--json")
    assert run.code == 0, run.err
    names = sorted(p.name for p in heatmaps.iterdir())
    assert names == ["BraTS-GLI-00001-000_flair_heatmap.nii.gz",
                     "TCGA-DU-7294_flair_heatmap.nii.gz"]
    records = [json.loads(line) for line in run.out.splitlines()]
    assert {r["heatmap"] for r in records} == {str(heatmaps / n) for n in names}
    first = snapshot(heatmaps)
    assert cli("classify", *cases, "--heatmap-dir", heatmaps).code == 0
    assert len(list(heatmaps.iterdir())) == 4 and all(
        snapshot(heatmaps)[name] == digest for name, digest in first.items())
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("heatmaps")} == before
    shutil.rmtree(heatmaps)


def test_several_volumes_show_classification_progress(tmp_path):
    volumes = [copy(SAMPLE_T2, tmp_path / "a" / "t2.nii.gz"),
               copy(SAMPLE_FLAIR, tmp_path / "b" / "flair.nii.gz")]
    run = cli("classify", *volumes)
    assert run.code == 0, run.err
    assert "classify: 100%" in run.err and "2/2" in run.err and "file" in run.err
    assert [line.split(":")[0] for line in run.out.splitlines()] == list(map(str, volumes))


def test_classify_refuses_a_truncated_volume_before_any_work(tmp_path):
    good = copy(SAMPLE_T2, tmp_path / "a" / "t2.nii.gz")
    bad = copy(SAMPLE_FLAIR, tmp_path / "b" / "flair.nii.gz")
    bad.write_bytes(bad.read_bytes()[:20000])
    before = snapshot(tmp_path)
    run = cli("classify", good, bad, "--heatmap-dir", tmp_path / "heatmaps")
    assert_refused(run, 2, str(bad), "is truncated")
    assert run.out == "" and snapshot(tmp_path) == before
    assert not (tmp_path / "heatmaps").exists()
