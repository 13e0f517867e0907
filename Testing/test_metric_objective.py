"""The metric-aligned training objective: its metrics agree with metrics.py on real pairs,
it has gradients, and it prefers what the metrics prefer."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ClinicalFMambaLib.evaluation.metrics import fusion_metrics
from ClinicalFMambaLib.networks.fusion_net import image_batch
from ClinicalFMambaLib.objective.baselines import BASELINES, laplacian_pyramid_fusion
from ClinicalFMambaLib.objective.metric_objective import MetricObjective, axial_slices
from ClinicalFMambaLib.objective.surrogates import (OBJECTIVE_METRICS, entropy, metric_surrogates,
                                                    mutual_information)

torch.set_num_threads(1)
HARVARD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "harvard"
needs_data = pytest.mark.skipif(not HARVARD.exists(), reason="../shared/data/harvard not present")


def _real_pair(index: int = 0):
    from ClinicalFMambaLib.training.harvard_data import find_pairs, load_luma_pair

    pairs = [p for p in find_pairs(HARVARD) if p.pair_type == "SPECT-MRI"]
    return load_luma_pair(pairs[index])


def _eight_bit(x: np.ndarray) -> np.ndarray:
    return (np.floor(np.clip(x, 0, 1) * 255 + 0.5) / 255).astype(np.float32)


@needs_data
@pytest.mark.parametrize("method", list(BASELINES))
def test_surrogates_equal_the_8bit_metrics_on_a_real_pair(method):
    a, b = _real_pair()
    fused = _eight_bit(BASELINES[method](a, b))
    ours = metric_surrogates(image_batch(a), image_batch(b), image_batch(fused))
    reference = fusion_metrics(a, b, fused)
    for name in OBJECTIVE_METRICS:
        assert ours[name].shape == (1,)
        # float32 and the eps that keeps square roots differentiable: 1e-3 relative
        assert ours[name].item() == pytest.approx(reference[name], rel=1e-3), name


@needs_data
def test_objective_has_gradients_and_ranks_detail_above_blur():
    a, b = (x[64:192, 64:192] for x in _real_pair(1))
    ta, tb = image_batch(a), image_batch(b)
    objective = MetricObjective()
    fused = torch.from_numpy(laplacian_pyramid_fusion(a, b))[None, None].requires_grad_()
    loss, gains = objective(fused, ta, tb)
    loss.backward()
    assert set(gains) == set(OBJECTIVE_METRICS)
    assert torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0
    blurred = torch.nn.functional.avg_pool2d(fused.detach(), 5, 1, 2, count_include_pad=False)
    assert objective(blurred, ta, tb)[0] > loss  # blur loses sharpness, edges and contrast


def test_objective_is_capped_at_the_margin_and_scores_3d_on_axial_slices():
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, 1, 12, 80, 80).unbind(0)
    objective = MetricObjective(margin=0.03, slice_step=4)
    loss, gains = objective(torch.maximum(a, b), a, b)
    assert loss.item() >= -0.03 * len(OBJECTIVE_METRICS) - 1e-6
    assert all(np.isfinite(list(gains.values())))
    assert axial_slices(a, 4).shape == (3, 1, 80, 80)
    assert torch.equal(axial_slices(a, 4)[1, 0], a[0, 0, 4])


def test_soft_mutual_information_is_exact_on_8bit_values_and_differentiable_between():
    torch.manual_seed(0)
    grey = torch.randint(0, 256, (1, 1, 32, 32)).float()
    # MI(X, X) = H(X); an image independent of X shares (almost) nothing with it.
    assert mutual_information(grey, grey).item() == pytest.approx(entropy(grey).item(), rel=1e-5)
    levels, other = (torch.randint(0, 4, (1, 1, 64, 64)).float() * 80 for _ in range(2))
    assert mutual_information(levels, other).item() < 0.01 * entropy(other).item()
    between = (grey + 0.3).requires_grad_()
    mutual_information(grey, between).backward()
    assert torch.isfinite(between.grad).all() and between.grad.abs().sum() > 0


def test_a_shortfall_counts_deficit_weight_times():
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, 1, 64, 64).unbind(0)
    fused = (a + b) / 2 * 0.8  # dimmer than the mean: behind the best baseline on most metrics
    symmetric, gains = MetricObjective(deficit_weight=1)(fused, a, b)
    weighted, _ = MetricObjective(deficit_weight=3)(fused, a, b)
    shortfall = sum(min(g, 0) for g in gains.values())
    assert shortfall < 0
    assert weighted.item() == pytest.approx(symmetric.item() - 2 * shortfall, rel=1e-5)


def test_metric_weights_scale_single_terms():
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, 1, 64, 64).unbind(0)
    fused = (a + b) / 2 * 0.8
    base, gains = MetricObjective()(fused, a, b)
    weighted, _ = MetricObjective(metric_weights={"MI": 0, "VIF": 3})(fused, a, b)
    term = {k: min(g, 0.03) for k, g in gains.items()}
    assert weighted.item() == pytest.approx(base.item() + term["MI"] - 2 * term["VIF"], rel=1e-5)
    with pytest.raises(ValueError, match="PSNR"):
        MetricObjective(metric_weights={"PSNR": 1})
