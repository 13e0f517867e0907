"""The flat-region grain measure (flat_noise.py) and its training penalty."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from ClinicalFMambaLib.evaluation.grain import (HIGH_PASS_SIGMA, flat_mask, flat_noise, high_pass,
                                                noise_excess)

torch.set_num_threads(1)


def step_volumes(noise: float = 0.01, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two 'sources' in a zero background: a flat block with a brighter half (an edge down
    the middle of the last axis) in A, a flat block in B, each with white noise."""
    rng = np.random.default_rng(seed)
    a, b = np.zeros((2, 32, 32, 32), np.float32)
    a[4:28, 4:28, 4:28], b[4:28, 4:28, 4:28] = 0.4, 0.6
    a[4:28, 4:28, 16:28] = 0.8
    for x in (a, b):
        x[4:28, 4:28, 4:28] += rng.normal(0, noise, (24, 24, 24)).astype(np.float32)
    return a, b


def test_torch_high_pass_matches_scipy():
    x = np.random.default_rng(1).random((20, 17, 23)).astype(np.float32)
    expected = x - ndimage.gaussian_filter(x, HIGH_PASS_SIGMA, mode="mirror")
    got = high_pass(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_flat_mask_leaves_out_edges_rim_and_background():
    a, b = step_volumes()
    mask = flat_mask(a, b)
    assert mask.any()
    assert not mask[(a == 0) & (b == 0)].any()  # background
    assert not mask[:, :, 14:18].any()  # A's edge
    assert not mask[4:7].any()  # the rim against the background


def test_flat_noise_scales_with_the_grain_and_ignores_smooth_shading():
    a, b = step_volumes(noise=0.01)
    mask = flat_mask(a, b)
    grainy = a + np.random.default_rng(2).normal(0, 0.03, a.shape).astype(np.float32)
    assert flat_noise(grainy, mask) > 2.5 * flat_noise(a, mask)
    ramp = np.broadcast_to(np.linspace(0, 1, 32, dtype=np.float32), a.shape)
    assert flat_noise(ramp, mask) < 1e-3
    with pytest.raises(ValueError, match="no flat voxels"):
        flat_noise(a, np.zeros_like(mask))


def test_noise_excess_is_zero_for_max_fusion_and_penalises_added_grain():
    a, b = step_volumes()
    mask = torch.from_numpy(flat_mask(a, b))[None, None]
    ta, tb = (torch.from_numpy(x)[None, None] for x in (a, b))
    assert noise_excess(torch.maximum(ta, tb), ta, tb, mask).item() == 0
    grain = torch.from_numpy(np.random.default_rng(3).normal(0, 0.03, a.shape).astype(np.float32))
    fused = (torch.maximum(ta, tb) + grain[None, None]).requires_grad_(True)
    excess = noise_excess(fused, ta, tb, mask)
    assert excess.item() > 1
    excess.backward()
    assert fused.grad.abs().sum() > 0
    assert noise_excess(fused, ta, tb, torch.zeros_like(mask)).item() == 0  # nothing flat
