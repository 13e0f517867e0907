"""Shape, padding and symmetry properties of the fusion network and its scan orders."""

import dataclasses

import pytest
import torch

from ClinicalFMambaLib.networks.fusion_net import (DEFAULT_CONFIGS, FusionConfig, FusionNet,
                                                   parameter_count)
from ClinicalFMambaLib.networks.mamba_blocks import AXIS_ORDERS, flatten_in_orders, unflatten_orders

torch.set_num_threads(1)
TINY = FusionConfig(widths=(4, 8, 8), latent_blocks=1, decoder_blocks=1, d_state=2)


@pytest.mark.parametrize("grid", [(5, 7), (3, 4, 6), (1, 9)])
def test_scan_orders_are_exact_inverses(grid):
    x = torch.randn(2, 3, *grid)
    orders = AXIS_ORDERS[len(grid)]
    seq = flatten_in_orders(x, orders)
    assert seq.shape == (2, 2 * len(orders), 3, x[0, 0].numel())
    back = unflatten_orders(seq, grid, orders)
    for k in range(back.shape[1]):
        assert torch.equal(back[:, k], x)


def test_scan_orders_visit_the_grid_as_documented():
    x = torch.arange(6.0).view(1, 1, 2, 3)  # rows [0 1 2], [3 4 5]
    seq = flatten_in_orders(x, AXIS_ORDERS[2])[0, :, 0]
    assert seq.tolist() == [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0],
                            [0, 3, 1, 4, 2, 5], [5, 2, 4, 1, 3, 0]]
    v = torch.arange(8.0).view(1, 1, 2, 2, 2)  # (slice, row, column)
    tri = flatten_in_orders(v, AXIS_ORDERS[3])[0, :, 0]
    assert tri[0].tolist() == list(range(8))             # axial raster
    assert tri[2].tolist()[:2] == [0, 4]                  # slice index fastest
    assert tri[4].tolist()[:2] == [0, 4]


@pytest.mark.parametrize("shape", [(32, 32), (30, 45), (17, 9)])
def test_any_2d_size_gives_output_of_that_size_in_unit_range(shape):
    model = FusionNet(TINY).eval()
    a, b = torch.rand(1, 1, *shape), torch.rand(1, 1, *shape)
    with torch.no_grad():
        out = model(a, b)
    assert out.shape == a.shape
    assert out.min() >= 0 and out.max() <= 1


def test_3d_model_runs_on_odd_volume():
    model = FusionNet(FusionConfig(spatial_dims=3, widths=(2, 4, 4), latent_blocks=1,
                                   decoder_blocks=0, d_state=2)).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 6, 9, 7), torch.rand(1, 1, 6, 9, 7))
    assert out.shape == (1, 1, 6, 9, 7)


def test_output_is_max_fusion_plus_the_heads_correction():
    a, b = torch.rand(1, 1, 12, 12), torch.rand(1, 1, 12, 12)
    model = FusionNet(TINY)
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    with torch.no_grad():
        out = model(a, b)
    expected = torch.maximum(a, b).clamp(1e-3, 1 - 1e-3)
    assert torch.allclose(out, expected, atol=1e-6)


def test_a_pixel_mlp_starts_at_zero_and_adds_to_the_correction():
    torch.manual_seed(0)
    plain = FusionNet(TINY)
    with_mlp = FusionNet(dataclasses.replace(TINY, pixel_mlp=4))
    assert with_mlp.load_state_dict(plain.state_dict(), strict=False).unexpected_keys == []
    a, b = torch.rand(1, 1, 12, 12), torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(with_mlp(a, b), plain(a, b))
        # Its output is added in logit space: a constant 0.5 shifts every pixel's logit by 0.5.
        torch.nn.init.constant_(with_mlp.pixel[-1].bias, 0.5)
        shifted = torch.sigmoid(torch.logit(plain(a, b)) + 0.5)
        assert torch.allclose(with_mlp(a, b), shifted, atol=1e-5)


def test_mismatched_inputs_are_refused():
    model = FusionNet(TINY)
    with pytest.raises(ValueError, match="same shape|one shape"):
        model(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)  # independent of the tests before it (tiny ReLU MLPs can die at random)
    model = FusionNet(TINY)
    out = model(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16))
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_shipped_configuration_is_smaller_than_the_papers():
    assert parameter_count(FusionNet(DEFAULT_CONFIGS[2])) < 4.05e6
    paper = FusionConfig(widths=(32, 64, 128), latent_blocks=5, decoder_blocks=2)
    assert 2e6 < parameter_count(FusionNet(paper)) < 4.05e6


def test_config_round_trips_through_dict():
    assert FusionConfig.from_dict(TINY.to_dict()) == TINY


@pytest.mark.parametrize("axial_only", [False, True])
def test_strided_3d_model_corrects_at_full_resolution(axial_only):
    """With a stride-2 stem the refinement stage sees both full-resolution inputs, so a
    voxel-scale change of one input changes the output there; every parameter trains; the
    axial-only ablation scans 2 directions instead of 6."""
    cfg = FusionConfig(spatial_dims=3, widths=(4, 4, 8), latent_blocks=1, decoder_blocks=0,
                       d_state=2, stem_stride=2, axial_only_scan=axial_only)
    model = FusionNet(cfg)
    assert model.latent_a[0].mixer.n_dirs == (2 if axial_only else 6)
    a, b = torch.rand(2, 1, 10, 12, 14), torch.rand(2, 1, 10, 12, 14)
    out = model(a, b)
    assert out.shape == a.shape and 0 <= out.min() and out.max() <= 1
    out.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        torch.nn.init.zeros_(model.head.weight), torch.nn.init.zeros_(model.head.bias)
        bumped = b.clone()
        bumped[0, 0, 5, 6, 7] = 1 - bumped[0, 0, 5, 6, 7]
        change = (model(a, bumped) - model(a, b)).abs()[0, 0]
    # The max prior is voxel-wise and the half-resolution path is silenced (zero head): a
    # neighbour of the bumped voxel changes through the refinement stage only, far voxels not.
    assert change[5, 6, 8] > 0 and change[0, 0, 0] == 0
    with pytest.raises(ValueError, match="3D networks only"):
        FusionNet(FusionConfig(axial_only_scan=True))
