"""The emphasis control of the 2D network: conditioning (network.py), the objective's detail
weights (metric_objective.py), starting from trained weights (train_fusion.py), the fuse
command's --emphasis (real subprocesses) and its JSON report. The two ends of the trained
networks are measured on the held-back cases in docs/results.md (scripts/research/rank_table.py)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ClinicalFMambaLib.evaluation.demo import SAMPLE_DIR
from ClinicalFMambaLib.fusion.inference import emphasis_of, parse_emphasis, set_emphasis
from ClinicalFMambaLib.io.weights import save_weights
from ClinicalFMambaLib.networks.fusion_net import (DEFAULT_CONFIGS, DEFAULT_EMPHASIS, FusionNet,
                                                   source_detail)
from ClinicalFMambaLib.objective.metric_objective import DETAIL_METRICS, MetricObjective
from ClinicalFMambaLib.training.fusion_training import _load_start

torch.set_num_threads(1)  # other jobs share the CPU
ROOT = Path(__file__).resolve().parents[1]
CT_PAIR = (SAMPLE_DIR / "mri_ct_MRI.png", SAMPLE_DIR / "mri_ct_CT.png")
CONDITIONED = dataclasses.replace(DEFAULT_CONFIGS[2], emphasis=True)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ClinicalFMambaLib.cli", *args], cwd=ROOT,
                          capture_output=True, encoding="utf-8", timeout=300)


def test_a_new_conditioning_starts_as_the_unconditioned_network():
    torch.manual_seed(0)
    plain = FusionNet(dataclasses.replace(CONDITIONED, emphasis=False)).eval()
    conditioned = FusionNet(CONDITIONED).eval()
    assert conditioned.load_state_dict(plain.state_dict(), strict=False).missing_keys == [
        "film.0.weight", "film.0.bias", "film.2.weight", "film.2.bias"]
    a, b = torch.rand(2, 1, 1, 48, 64).unbind(0)
    with torch.no_grad():
        for emphasis in (0.0, 1.0):
            assert torch.equal(conditioned(a, b, emphasis=emphasis), plain(a, b))


def test_detail_layer_adds_the_sources_finest_detail_with_the_emphasis():
    from scipy.ndimage import gaussian_filter

    torch.manual_seed(0)
    plain = FusionNet(CONDITIONED).eval()
    detailed = FusionNet(dataclasses.replace(CONDITIONED, detail_gain=0.8)).eval()
    detailed.load_state_dict(plain.state_dict())
    a, b = torch.rand(2, 1, 1, 32, 48).unbind(0)
    # Reference: the larger-magnitude high-pass of the two, by scipy (mirrored edges).
    highs = [x[0, 0].numpy() - gaussian_filter(x[0, 0].numpy(), 1.0, mode="mirror")
             for x in (a, b)]
    detail = torch.from_numpy(np.where(np.abs(highs[0]) >= np.abs(highs[1]), *highs))
    with torch.no_grad():
        assert torch.equal(detailed(a, b, emphasis=0.0), plain(a, b, emphasis=0.0))
        expected = (plain(a, b, emphasis=0.5)[0, 0] + 0.8 * 0.5 * detail).clamp(0, 1)
        assert torch.allclose(detailed(a, b, emphasis=0.5)[0, 0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="at least 0"):
        FusionNet(dataclasses.replace(CONDITIONED, detail_gain=-1.0))


def test_shrunk_detail_layer_passes_edges_and_drops_noise_in_3d():
    # A 3D network without the emphasis adds the detail with the fixed gain; shrinkage at
    # 3 noise scales removes a source's noise-level residual but keeps a step edge's.
    torch.manual_seed(0)
    config = dataclasses.replace(DEFAULT_CONFIGS[3], widths=(4, 4, 8))
    plain = FusionNet(config).eval()
    detailed = FusionNet(dataclasses.replace(config, detail_gain=0.5, detail_shrink=3.0)).eval()
    detailed.load_state_dict(plain.state_dict())
    noise = 0.5 + 0.01 * torch.randn(1, 1, 24, 24, 24)
    edge = noise.clone()
    edge[..., 12:] += 0.3
    with torch.no_grad():
        flat_detail = source_detail(noise, noise, shrink=3.0)
        edge_detail = source_detail(edge, noise, shrink=3.0)
        assert (flat_detail != 0).float().mean() < 0.01  # |Gaussian| > 3 sigma: 0.3 %
        assert edge_detail[..., 11:13].abs().min() > 0.02  # the step is 0.3
        assert torch.allclose(detailed(edge, noise),
                              (plain(edge, noise) + 0.5 * edge_detail).clamp(0, 1), atol=1e-6)
        # Unshrunk, the noise passes.
        assert (source_detail(noise, noise) != 0).float().mean() > 0.99


def test_emphasis_changes_a_trained_conditioning_and_is_checked():
    torch.manual_seed(0)
    net = FusionNet(CONDITIONED).eval()
    torch.nn.init.normal_(net.film[-1].weight, std=0.5)  # as if trained
    a, b = torch.rand(2, 1, 1, 32, 32).unbind(0)
    with torch.no_grad():
        low, high = net(a, b, emphasis=0.0), net(a, b, emphasis=1.0)
        assert (low - high).abs().max() > 1e-3
        assert torch.equal(net(a, b), net(a, b, emphasis=DEFAULT_EMPHASIS))
        # One value per image of a batch.
        both = net(torch.cat([a, a]), torch.cat([b, b]), emphasis=torch.tensor([0.0, 1.0]))
        assert torch.allclose(both[0], low[0], atol=1e-6)
        assert torch.allclose(both[1], high[0], atol=1e-6)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            net(a, b, emphasis=1.5)
    plain = FusionNet(DEFAULT_CONFIGS[2]).eval()
    with pytest.raises(ValueError, match="not conditioned"):
        plain(a, b, emphasis=0.5)
    with pytest.raises(ValueError, match="trained with it"):
        set_emphasis(plain, 0.5)
    assert emphasis_of(plain) is None and emphasis_of(set_emphasis(net, "0.25")) == 0.25


@pytest.mark.parametrize("text", ["abc", "1.5", "-0.1", "nan", "inf", ""])
def test_parse_emphasis_refuses_what_is_not_in_0_1(text):
    with pytest.raises(ValueError, match="emphasis must be a number from 0"):
        parse_emphasis(text)


def test_detail_terms_are_weighted_by_the_emphasis():
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, 1, 64, 64).unbind(0)
    fused = (a + b) / 2 * 0.8  # behind the best baseline on most metrics
    objective = MetricObjective(deficit_weight=1)
    plain, gains = objective(fused, a, b)
    low, _ = objective(fused, a, b, emphasis=0.0)
    high, _ = objective(fused, a, b, emphasis=1.0)
    detail = sum(min(gains[k], 0.03) for k in DETAIL_METRICS)  # all below the margins here
    assert detail < 0
    # loss = -(sum of terms): a detail shortfall costs 0.25 times at 0, twice at 1.
    assert low.item() == pytest.approx(plain.item() + 0.75 * detail, rel=1e-5)
    assert high.item() == pytest.approx(plain.item() - 1.0 * detail, rel=1e-5)


def test_training_starts_from_weights_of_another_stride_with_a_new_conditioning(tmp_path):
    torch.manual_seed(0)
    start = FusionNet(DEFAULT_CONFIGS[2])
    save_weights(start.state_dict(), tmp_path / "start.safetensors", start.cfg.to_dict())
    model = FusionNet(dataclasses.replace(CONDITIONED, stem_stride=4))
    _load_start(model, tmp_path / "start.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in start.state_dict().items())
    other = FusionNet(dataclasses.replace(CONDITIONED, widths=(8, 16, 32)))
    with pytest.raises(ValueError, match="another configuration"):
        _load_start(other, tmp_path / "start.safetensors")


@pytest.mark.parametrize("value", ["abc", "1.5", "-0.1", "nan"])
def test_fuse_refuses_a_bad_emphasis_in_one_line(tmp_path, value):
    result = cli("fuse", *map(str, CT_PAIR), "-o", str(tmp_path / "f.png"),
                 f"--emphasis={value}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"clinicalfmamba fuse: error: emphasis must be a number from 0 (faithful to the "
        f"sources) to 1 (sharper), got {value!r}"]
    assert not (tmp_path / "f.png").exists()


def test_emphasis_for_volumes_needs_the_2d_network(tmp_path):
    volumes = ROOT / "Resources" / "sample" / "volume"
    result = cli("fuse", str(volumes / "TCGA-DU-7294_t2.nii.gz"),
                 str(volumes / "TCGA-DU-7294_flair.nii.gz"), "-o", str(tmp_path / "f.nii.gz"),
                 "--emphasis", "0.5")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "clinicalfmamba fuse: error: --emphasis applies to the 2D network; for volumes add "
        "--model 2d"]



def test_fuse_records_the_emphasis_in_its_report(tmp_path):
    """fuse --classify writes the emphasis used into its JSON report: the default of the
    bundled (conditioned) weights, the value given, and null for weights without the
    control, which refuse --emphasis in one line."""
    torch.manual_seed(0)
    plain = FusionNet(DEFAULT_CONFIGS[2])
    weights = tmp_path / "w" / "fusion2d.safetensors"
    save_weights(plain.state_dict(), weights, plain.cfg.to_dict())
    cases = (([], DEFAULT_EMPHASIS), (["--emphasis", "0.75"], 0.75),
             (["--weights", str(weights)], None))
    for index, (extra, expected) in enumerate(cases):
        out = tmp_path / f"f{index}.png"
        result = cli("fuse", *map(str, CT_PAIR), "-o", str(out), "--device", "cpu",
                     "--classify", *extra)
        assert result.returncode == 0, result.stderr
        report = json.loads(out.with_name(f"{out.stem}_report.json").read_text())
        assert report["emphasis"] == expected
    result = cli("fuse", *map(str, CT_PAIR), "-o", str(tmp_path / "x.png"), "--weights",
                 str(weights), "--emphasis", "1")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "train-fusion --emphasis-conditioned" in result.stderr
