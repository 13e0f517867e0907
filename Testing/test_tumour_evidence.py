"""Tumour evidence on volumes and the scope guard: data preparation, training step, the
volume rule, and the bundled models' contract on real images and volumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ClinicalFMambaLib.cli.main import main
from ClinicalFMambaLib.clinical.asymmetry import (asymmetry_scores, bright_heatmap, mirrored,
                                                  one_sided_pixels, one_sided_share)
from ClinicalFMambaLib.clinical.classifier import classify_image, load_classifier
from ClinicalFMambaLib.clinical.images import colourfulness, read_image
from ClinicalFMambaLib.clinical.records import result_record
from ClinicalFMambaLib.clinical.scope_guard import MAX_COLOURFULNESS, fit_scope_guard, image_problem
from ClinicalFMambaLib.clinical.tumour_evidence import (ASYMMETRY_OFFSET, VOLUME_RANK,
                                                        TumourEvidence, slice_evidence,
                                                        volume_tumour_probability)
from ClinicalFMambaLib.clinical.volume_verdict import classify_volume
from ClinicalFMambaLib.clinical.volumes import (VolumeSlices, brain_mask,
                                                orientation_from_direction, slice_spacing)
from ClinicalFMambaLib.clinical.wording import verdict_line
from ClinicalFMambaLib.networks.tumour_net import TumourSegNet, slice_logits
from ClinicalFMambaLib.training.tumour_labels import (flair_lesion_mask, labelled_slices,
                                                      unknown_ring)
from ClinicalFMambaLib.training.tumour_training import (SlicePool, augment_labelled, carve_mix,
                                                        seg_loss, train_seg)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TCGA = DATA / "brain3d" / "TCGA-DU-7294"
TESTING = DATA / "tumor-mri" / "Testing"
needs_data = pytest.mark.skipif(not TCGA.is_dir(), reason=f"real data not found under {DATA}")


@pytest.fixture(scope="module")
def tcga_slab():
    """FLAIR and segmentation of 40 axial slices of TCGA-DU-7294 across the tumour's top."""
    flair = sitk.GetArrayFromImage(sitk.ReadImage(str(TCGA / "flair.nii.gz")))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(TCGA / "tumor_seg.nii.gz")))
    return np.ascontiguousarray(flair[80:120]), np.ascontiguousarray(seg[80:120])


@pytest.fixture(scope="module")
def model():
    return load_classifier()


@needs_data
def test_labelled_slices_carry_the_segmentation(tcga_slab):
    flair, seg = tcga_slab
    before = flair.copy()
    slices = labelled_slices("TCGA/flair", flair, seg, 64)
    np.testing.assert_array_equal(flair, before)
    assert slices.images.shape == slices.masks.shape == (40, 64, 64)
    assert slices.has_tumour.tolist() == (seg > 0).any(axis=(1, 2)).tolist()
    # The mask lands on the bright FLAIR lesion: mean intensity inside well above the brain's.
    inside = slices.images[slices.masks]
    brain = slices.images[(slices.images > 0) & ~slices.masks]
    assert inside.mean() > brain.mean() + 0.15
    assert not slices.masks[~slices.has_tumour].any()


@needs_data
def test_classical_anchors_separate_tumour_slices(tcga_slab):
    flair, seg = tcga_slab
    brain = flair > 0
    scores = asymmetry_scores(flair.astype(np.float32), brain)
    has = (seg > 0).any(axis=(1, 2))
    assert scores[has].mean() > 2 * scores[~has].mean()
    heat = bright_heatmap(flair.astype(np.float32), brain)
    share = (heat[has] * (seg[has] > 0)).sum() / heat[has].sum()
    assert share > 0.4


@needs_data
def test_carve_mix_and_augmentation_keep_images_and_masks_paired(tcga_slab):
    flair, seg = tcga_slab
    slices = labelled_slices("TCGA/flair", flair, seg, 64)
    pool = SlicePool([slices])
    generator = torch.Generator().manual_seed(0)
    source = int(np.flatnonzero(slices.masks.any(axis=(1, 2)))[0])
    target = int(np.flatnonzero(~slices.has_tumour & (slices.brain_area > 0))[-1])
    image, mask = carve_mix(torch.from_numpy(slices.images[target])[None],
                            torch.from_numpy(slices.images[source])[None],
                            torch.from_numpy(slices.masks[source].astype(np.float32))[None],
                            torch.Generator().manual_seed(1))
    assert mask.sum() > 0 and torch.all(image[mask > 0] >= 0)
    assert torch.all(mask <= (torch.from_numpy(slices.images[target])[None] > 0).float())
    images, masks, known = pool.sample(8, generator, carvemix=1.0)
    assert images.shape == masks.shape == known.shape == (8, 1, 64, 64)
    assert all(m.sum() > 0 for m in masks)  # half tumour slices, half with a pasted tumour
    assert torch.all(known == 1)  # a real segmentation labels every pixel
    images, masks, known = augment_labelled(images, masks, known, generator)
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    assert torch.all(known >= masks)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.all(images[masks > 0] > 0)  # the tumour stays inside the brain


@needs_data
def test_training_steps_lower_the_loss_on_real_slices(tcga_slab):
    flair, seg = tcga_slab
    pool = SlicePool([labelled_slices("TCGA/flair", flair, seg, 64)])
    negatives = torch.rand(6, 1, 64, 64)
    net = train_seg(pool, negatives, steps=2, batch_size=6, log=lambda line: None)
    images, masks, known = pool.sample(6, torch.Generator().manual_seed(3), carvemix=0.0)
    with torch.no_grad():
        logits = net(images)
    assert logits.shape == (6, 1, 64, 64)
    assert torch.isfinite(seg_loss(logits, masks, known))


def test_loss_ignores_pixels_of_unknown_label():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 16, 16, generator=generator)
    masks = (torch.rand(2, 1, 16, 16, generator=generator) > 0.8).float()
    known = torch.ones_like(masks)
    known[:, :, :4] = 0
    masks[:, :, :4] = 0
    changed = logits.clone()
    changed[:, :, :4] = 20.0  # confident tumour where the label is unknown
    assert seg_loss(changed, masks, known) == pytest.approx(float(seg_loss(logits, masks, known)))
    changed[:, :, 4:6] = 20.0  # and where it is known background: the loss must rise
    assert seg_loss(changed, masks, known) > seg_loss(logits, masks, known) + 1.0


@needs_data
def test_flair_pseudo_mask_finds_the_tumour_of_a_labelled_case():
    flair = sitk.GetArrayFromImage(sitk.ReadImage(str(TCGA / "flair.nii.gz")))
    tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(TCGA / "tumor_seg.nii.gz"))) > 0
    before = flair.copy()
    mask = flair_lesion_mask(flair, brain_mask(flair))
    np.testing.assert_array_equal(flair, before)
    assert (mask & tumour).sum() > 0.9 * mask.sum()  # what it marks is tumour
    on_mask, on_tumour = mask.any(axis=(1, 2)), tumour.any(axis=(1, 2))
    assert (on_mask & on_tumour).sum() > 0.85 * on_tumour.sum()
    ring = unknown_ring(mask)
    assert not (ring & mask).any() and ((ring | mask) & tumour).sum() > 0.95 * tumour.sum()
    # On the model's grid the ring is unlabelled, the mask and the rest of the slice are.
    slices = labelled_slices("TCGA/flair", flair, mask.astype(np.uint8), 64, unknown=ring)
    assert slices.known[slices.masks].all()
    assert 0.0 < 1 - slices.known.mean() < 0.2


def test_slice_score_pools_the_most_suspicious_pixels():
    logits = torch.full((2, 1, 32, 32), -5.0)
    logits[1, 0, :4, :4] = 3.0
    scores = slice_logits(logits, top=16)
    assert scores[0] == pytest.approx(-5.0) and scores[1] == pytest.approx(3.0)
    assert TumourSegNet([4, 8])(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_calibration_joins_the_asymmetry_and_the_one_sided_share():
    # Weights calibrated before the smoothing have no slice_smoothing_mm: unsmoothed.
    evidence = TumourEvidence(None, {"calibration": [0.5, 1.0, 2.0]})
    one_sided = np.array([0.0, 0.001, 0.01, 0.01])
    asymmetry = np.array([0.0, 0.0, 0.0, 0.05])  # no bright voxels at all: still finite
    p = evidence.calibrate(asymmetry, one_sided, slice_spacing=1.0)
    assert np.all(np.isfinite(p)) and np.all((p > 0) & (p < 1))
    assert p[0] < p[1] < p[2] < p[3]
    expected = 1 / (1 + np.exp(-(0.5 * np.log(0.05 + ASYMMETRY_OFFSET)
                                 + np.log(0.01 + ASYMMETRY_OFFSET) + 2.0)))
    assert p[3] == pytest.approx(expected)
    assert not asymmetry_scores(np.zeros((3, 8, 8)), np.zeros((3, 8, 8), bool)).any()
    empty = np.zeros((3, 8, 8), bool)
    assert not one_sided_share(one_sided_pixels(np.zeros((3, 8, 8)), empty), empty).any()


def test_cues_are_smoothed_over_millimetres_of_slices():
    evidence = TumourEvidence(None, {"calibration": [1.0, 1.0, 6.0], "slice_smoothing_mm": 2})
    cues = np.full(41, 1e-4)
    lone, run = cues.copy(), cues.copy()
    lone[20] = 0.05                       # one suspicious slice
    run[14:27] = 0.05                     # 13 mm of them
    p_lone = evidence.calibrate(lone, lone, slice_spacing=1.0)
    p_run = evidence.calibrate(run, run, slice_spacing=1.0)
    assert p_lone[20] < 0.5 * p_run[20]   # one slice's cues are damped, a run's are not
    unsmoothed = 1 / (1 + np.exp(-(2 * np.log(0.05 + ASYMMETRY_OFFSET) + 6.0)))
    assert p_run[20] == pytest.approx(unsmoothed, rel=0.01)
    # The same run sampled every 2 mm is smoothed over the same millimetres, not slices.
    p_coarse = evidence.calibrate(run[::2], run[::2], slice_spacing=2.0)
    assert p_coarse[10] == pytest.approx(p_run[20], rel=0.01)
    # One suspicious slice 2 mm thick is damped less than one 1 mm thick.
    assert evidence.calibrate(lone, lone, slice_spacing=2.0)[20] > 1.5 * p_lone[20]


def test_slice_spacing_is_the_axial_axis_spacing():
    # Index axis k is axial for the identity direction; a sagittal-first acquisition
    # (i along S) has its slices i-spacing apart.
    assert slice_spacing(orientation_from_direction(None), (0.9, 0.9, 5.0)) == 5.0
    sagittal = (0, 0, 1, 0, 1, 0, 1, 0, 0)
    assert slice_spacing(orientation_from_direction(sagittal), (3.0, 1.0, 1.0)) == 3.0
    assert slice_spacing(orientation_from_direction(None), None) == 1.0
    with pytest.raises(ValueError, match="spacing"):
        slice_spacing(orientation_from_direction(None), (1.0, 0.0, 1.0))


def test_one_sided_share_finds_a_one_sided_bright_spot_only():
    rng = np.random.default_rng(0)
    images = 0.5 + 0.08 * rng.standard_normal((4, 48, 48))
    yy, xx = np.mgrid[:48, :48]
    brain = np.broadcast_to((yy - 24) ** 2 + (xx - 24) ** 2 < 20 ** 2, images.shape).copy()
    images = np.where(brain, images, 0.0).astype(np.float32)
    spot = np.broadcast_to((yy - 24) ** 2 + (xx - 14) ** 2 < 5 ** 2, images.shape)
    images[1][spot[1]] = 0.8                                      # one side only
    images[2][(spot | mirrored(spot, brain))[2]] = 0.8            # both sides: not counted
    share = one_sided_share(one_sided_pixels(images, brain), brain)
    assert share[1] > 0.02 and share[0] == share[2] == share[3] == 0


def test_heatmap_shows_where_the_network_and_the_one_sided_cue_agree():
    # A network that calls every pixel tumour: the heatmap still holds only the one-sided
    # bright spot, not its mirrored twin (slice 2) nor the plain slices.
    net = TumourSegNet([4, 8]).eval()
    torch.nn.init.zeros_(net.out.weight)
    torch.nn.init.constant_(net.out.bias, 6.0)
    evidence = TumourEvidence(net, {"input_size": 48, "calibration": [1.0, 1.0, 0.0]})
    rng = np.random.default_rng(0)
    images = 0.5 + 0.08 * rng.standard_normal((4, 48, 48))
    yy, xx = np.mgrid[:48, :48]
    disc = (yy - 24) ** 2 + (xx - 24) ** 2 < 20 ** 2
    images = np.where(disc, images, 0.0).astype(np.float32)
    spot = (yy - 24) ** 2 + (xx - 14) ** 2 < 5 ** 2
    images[1][spot] = 0.8
    images[2][spot | mirrored(spot[None], disc[None])[0]] = 0.8
    brain = np.broadcast_to(disc, images.shape).copy()
    slices = VolumeSlices(images, brain, brain.sum(axis=(1, 2)), (0, 48, 0, 48),
                          orientation_from_direction(None))
    heat = slice_evidence(evidence, slices).heatmap
    assert heat[1][spot].mean() > 0.5
    assert heat[1].sum() < 2 * heat[1][spot].sum()   # most of the mass on the spot
    assert heat[0].max() == heat[2].max() == heat[3].max() == 0


def test_volume_rule_needs_several_suspicious_slices():
    probabilities = np.array([0.99, 0.1, 0.1, 0.2, 0.05, 0.95])
    eligible = np.ones(6, bool)
    assert VOLUME_RANK == 3
    assert volume_tumour_probability(probabilities, eligible) == pytest.approx(0.2)
    eligible[[1, 2, 3]] = False  # slices without enough brain never decide
    assert volume_tumour_probability(probabilities, eligible) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="brain"):
        volume_tumour_probability(probabilities, np.zeros(6, bool))


def test_scope_guard_threshold_and_plain_checks():
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=(600, 8))).float()
    labels = torch.arange(600) % 2
    features[labels == 1] += 3.0
    guard = fit_scope_guard(features, labels, quantile=0.99)
    assert 0.005 <= float((~guard.in_scope(features)).float().mean()) <= 0.015
    far = features[:5] + 40.0
    assert not guard.in_scope(far).any()
    assert "constant" in image_problem(np.zeros((64, 64), np.float32))
    sparse = np.zeros((64, 64), np.float32)
    sparse[:4, :4] = 1.0
    assert "almost empty" in image_problem(sparse)
    assert image_problem(rng.random((64, 64)).astype(np.float32)) is None


@needs_data
def test_colour_is_measured_on_the_file_as_stored(tmp_path):
    import skimage.data
    from PIL import Image

    jpeg = TESTING / "glioma" / "Te-glTr_0000.jpg"  # grey MRI stored as RGB
    assert colourfulness(read_image(jpeg, grey=False)) < MAX_COLOURFULNESS
    assert read_image(jpeg).ndim == 2
    Image.fromarray(skimage.data.coffee()).save(tmp_path / "coffee.png")
    coffee = read_image(tmp_path / "coffee.png", grey=False)
    assert coffee.shape[2] == 3 and colourfulness(coffee) > MAX_COLOURFULNESS
    assert "colour" in image_problem(np.full((8, 8), 0.5, np.float32), colourfulness(coffee))


@needs_data
def test_photos_noise_and_constant_images_are_refused(model):
    import skimage.data

    rng = np.random.default_rng(0)
    for image in (skimage.data.chelsea(), skimage.data.coffee(),
                  rng.integers(0, 256, (128, 128, 3)).astype(np.uint8), np.full((64, 64), 3.0)):
        result = classify_image(model, image)
        assert not result.in_scope and result.prediction is None and result.reason
    for name in ("glioma/Te-glTr_0000.jpg", "notumor/Te-noTr_0001.jpg"):
        result = classify_image(model, read_image(TESTING / name))
        assert result.in_scope and result.reason is None
        assert result.prediction == name.split("/")[0]


@needs_data
def test_cli_contract_for_refused_and_accepted_inputs(tmp_path, capsys):
    import skimage.data
    from PIL import Image

    photo = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    brain = TESTING / "glioma" / "Te-glTr_0000.jpg"
    assert main(["classify", str(photo), str(brain), "--json"]) == 0
    cat, glioma = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert cat["in_scope"] is False and cat["prediction"] is None and cat["reason"]
    assert glioma["in_scope"] is True and glioma["prediction"] == "glioma"
    assert main(["classify", str(photo)]) == 0
    assert "not classified" in capsys.readouterr().out


@needs_data
def test_glioma_volume_gets_a_tumour_verdict_and_a_localising_heatmap(model, tcga_slab):
    flair, seg = tcga_slab
    result = classify_volume(model, flair)
    assert result.in_scope
    assert result.tumour_probability is not None and result.prediction == "tumour"
    assert result.classes == ("notumor", "tumour") and result.tumour_type is None
    has = (seg > 0).any(axis=(1, 2))
    tumour_column = result.slice_probabilities[:, 1]
    assert tumour_column[has].mean() > tumour_column[~has].mean()
    heat = result.heatmap
    assert heat.shape == flair.shape and heat.min() >= 0 and heat.max() <= 1
    assert (heat[has] * (seg[has] > 0)).sum() / heat[has].sum() > 0.3
    # The text says tumour and names no type: none is validated on volumes.
    record = result_record(result)
    assert record["prediction"] == "tumour" and record["tumour_type"] is None
    line = verdict_line({"input": "flair.nii.gz", **record})
    assert line.startswith("flair.nii.gz: tumour, type undetermined (no tumour-type model is "
                           "validated on volumes)")
    assert "tumour probability" in line
    for name in ("glioma", "meningioma", "pituitary"):
        assert name not in line


def test_feature_ablation_takes_a_smoothing_outside_its_sweep(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts" / "build"))
    from train_tumour_evidence import SMOOTHING_SWEEP_MM, OutOfFold, feature_ablation

    from ClinicalFMambaLib.clinical.tumour_evidence import SliceEvidence

    rng = np.random.default_rng(0)

    def held_out_image() -> OutOfFold:
        labels = np.zeros(40, bool)
        labels[15:25] = True
        cues = np.where(labels, 0.02, 0.01) * rng.uniform(0.3, 3.0, 40)  # overlapping
        result = SliceEvidence(rng.standard_normal(40), cues, cues, cues, np.zeros((40, 4, 4)),
                               np.ones(40), np.ones(40, bool), 1.0)
        return OutOfFold(result, labels, np.ones(40, bool))

    out_of_fold = {case: {"flair": held_out_image()} for case in ("one", "two")}
    assert 2.5 not in SMOOTHING_SWEEP_MM
    rows = feature_ablation(out_of_fold, 2.5)
    row = rows["one"]["flair"]
    assert 0.5 < row["nested_calibration"] <= 1.0
    assert list(row["nested_by_smoothing_mm"]) == [f"{mm:g}" for mm in SMOOTHING_SWEEP_MM]
