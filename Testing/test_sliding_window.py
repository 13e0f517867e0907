"""Patch-wise volume inference and the brain3d training data."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ClinicalFMambaLib.fusion.sliding_window import (FusionCancelled, default_patch,
                                                     gaussian_weight, patch_count, patch_starts,
                                                     sliding_window_fuse)
from ClinicalFMambaLib.networks.fusion_net import FusionConfig, FusionNet, image_batch

torch.set_num_threads(1)
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY3D = FusionConfig(spatial_dims=3, widths=(4, 4, 8), latent_blocks=1, decoder_blocks=0,
                      d_state=2, stem_stride=2)


@pytest.mark.parametrize("size,patch,overlap", [(155, 64, 0.25), (64, 64, 0.5), (30, 64, 0.25),
                                                (100, 33, 0.5)])
def test_patches_cover_every_voxel_and_stay_inside(size, patch, overlap):
    starts = patch_starts(size, patch, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
        assert 0 <= s and s + min(patch, size) <= size
        covered[s:s + patch] = True
    assert covered.all()


def test_gaussian_weight_peaks_in_the_centre():
    w = gaussian_weight((9, 9, 9))
    assert w.argmax() == np.ravel_multi_index((4, 4, 4), w.shape) and w.min() > 0


def test_blending_has_no_seams():
    # With its head and refinement output zeroed the network is exactly max fusion, patch by
    # patch: any seam or blending error would show as a difference from the volume maximum.
    model = FusionNet(TINY3D).eval()
    for layer in (model.head, model.refine[-1]):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    rng = np.random.default_rng(0)
    a, b = rng.random((20, 23, 17), np.float32), rng.random((20, 23, 17), np.float32)
    fused = sliding_window_fuse(model, a, b, patch=8, overlap=0.5)
    expected = np.clip(np.maximum(a, b), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(fused, expected, atol=1e-5)


def test_progress_and_cancel():
    model = FusionNet(TINY3D).eval()
    a = np.zeros((16, 16, 16), np.float32)
    seen = []
    sliding_window_fuse(model, a, a, patch=8, overlap=0.0, progress=seen.append)
    assert seen[-1] == 1.0 and len(seen) == 8
    with pytest.raises(FusionCancelled):
        sliding_window_fuse(model, a, a, patch=8, cancel=lambda: True)


def test_mismatched_volumes_are_refused():
    model = FusionNet(TINY3D).eval()
    with pytest.raises(ValueError, match="one shape"):
        sliding_window_fuse(model, np.zeros((8, 8, 8)), np.zeros((8, 8, 9)), patch=8)


@pytest.mark.skipif(not (DATA / "brain3d").exists(), reason="../shared/data/brain3d not present")
def test_brain3d_patches_and_case_split():
    from ClinicalFMambaLib.training.brain3d_data import (VALIDATION_CASE, PatchDataset3D,
                                                         find_cases, split_cases)

    train, val = split_cases(find_cases(DATA / "brain3d"))
    assert [c.name for c in val] == [VALIDATION_CASE]
    assert VALIDATION_CASE not in {c.name for c in train} and len(train) >= 2
    dataset = PatchDataset3D(train[:1], patch=32, samples_per_epoch=4, seed=0)
    sample = dataset[0]
    assert sample.shape == (2, 1, 32, 32, 32)
    assert 0 <= sample.min() and sample.max() <= 1 and sample.mean() > 0.05  # inside the brain
    assert torch.equal(sample, dataset[0])  # seeded


@pytest.mark.skipif(not (DATA / "brain3d").exists(), reason="../shared/data/brain3d not present")
def test_volume_loss_optimum_is_cached_and_travels_with_its_patch(tmp_path):
    from ClinicalFMambaLib.training.brain3d_data import (CONTRAST_PAIRS, PatchDataset3D, brain_box,
                                                         find_cases, load_case)
    from ClinicalFMambaLib.training.fusion_targets import cached_volume_target
    from ClinicalFMambaLib.training.losses import fusion_loss

    case = find_cases(DATA / "brain3d")[0]
    volumes = load_case(case)
    # A small box keeps the optimisation quick; outside it the target is 0.
    a, b = volumes["t2"][60:84, 90:122, 90:122], volumes["flair"][60:84, 90:122, 90:122]
    box = (slice(2, 22), slice(4, 28), slice(4, 28))
    path = tmp_path / "cache" / "t2+flair.npy"
    target = cached_volume_target(a, b, box, path, steps=5)
    assert path.exists() and target.dtype == np.float16 and not target[0].any()
    t = {name: image_batch(x[box]) for name, x in
         {"target": target, "a": a, "b": b, "max": np.maximum(a, b)}.items()}
    assert (fusion_loss(t["target"], t["a"], t["b"])[0]
            < fusion_loss(t["max"], t["a"], t["b"])[0])
    assert np.array_equal(cached_volume_target(a, b, box, path), target)  # read back, not redone

    # With a target cache, patches carry the target as a third channel that follows the
    # crop and flips but not the A/B swap. (Cache files written here hold a known "target",
    # the pair's first contrast, so it must equal A, or B where the pair was swapped.)
    cache = tmp_path / "volumes"
    cache.mkdir()
    for x, y in CONTRAST_PAIRS:
        np.save(cache / f"{case.name}_{x}+{y}.npy", volumes[x].astype(np.float16))
    dataset = PatchDataset3D([case], patch=32, samples_per_epoch=8, seed=0, target_cache=cache)
    assert brain_box(volumes) == dataset.boxes[0]
    matches = []
    for sample in (dataset[i] for i in range(8)):
        assert sample.shape == (3, 1, 32, 32, 32)
        matches.append([torch.allclose(sample[2], sample[k], atol=2e-3) for k in (0, 1)])
    assert all(sum(m) == 1 for m in matches) and {m.index(True) for m in matches} == {0, 1}


def test_cpu_takes_a_whole_volume_in_one_patch_and_tiles_larger_ones():
    cpu = torch.device("cpu")
    assert default_patch((155, 240, 240), cpu) == (155, 240, 240)
    assert patch_count((155, 240, 240), device=cpu) == 1
    huge = (400, 512, 512)
    patch = default_patch(huge, cpu)
    assert len(set(patch)) == 1 and patch[0] % 16 == 0 and patch[0] < 400
    assert patch_count(huge, device=cpu) > 1


def test_one_patch_is_the_network_output_itself():
    model = FusionNet(TINY3D).eval()
    rng = np.random.default_rng(1)
    a, b = rng.random((20, 23, 17), np.float32), rng.random((20, 23, 17), np.float32)
    with torch.inference_mode():
        whole = model(image_batch(a), image_batch(b))[0, 0].numpy()
    np.testing.assert_allclose(sliding_window_fuse(model, a, b), whole, atol=1e-6)


def test_blending_weights_reproduce_a_constant_output():
    # A network whose output is one constant everywhere: the weighted average of overlapping
    # patches must give that constant back at every voxel, borders and overlaps included.
    model = FusionNet(TINY3D).eval()
    for layer in (model.head, model.refine[-1]):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    a = np.full((21, 19, 26), 0.3, np.float32)
    fused = sliding_window_fuse(model, a, a, patch=8, overlap=0.25)
    np.testing.assert_allclose(fused, 0.3, atol=1e-6)
