"""Loss, loss-optimum targets and a short real training run (resumable, weights registered)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ClinicalFMambaLib.core.filters import sobel_magnitude, ssim
from ClinicalFMambaLib.networks.fusion_net import image_batch
from ClinicalFMambaLib.training.fusion_targets import (optimise_pair, optimise_pair_metrics,
                                                       target_file)
from ClinicalFMambaLib.training.losses import fusion_loss

torch.set_num_threads(1)
HARVARD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "harvard"
needs_data = pytest.mark.skipif(not HARVARD.exists(), reason="../shared/data/harvard not present")


def test_loss_is_zero_only_for_a_perfect_fusion_of_identical_inputs():
    x = torch.rand(1, 1, 24, 24)
    assert fusion_loss(x, x, x)[0].item() == pytest.approx(0, abs=1e-6)
    assert fusion_loss(1 - x, x, x)[0].item() > 1
    assert ssim(x, x).item() == pytest.approx(1, abs=1e-6)


def test_sobel_sees_edges_across_slices_in_3d():
    v = torch.zeros(1, 1, 8, 8, 8)
    v[:, :, 4:] = 1  # an edge between slices only
    assert sobel_magnitude(v).sum() > 0
    assert sobel_magnitude(v[:, :, 0]).sum() == 0  # within a slice there is no edge


@needs_data
def test_metric_optimum_improves_the_objective_from_its_start():
    from ClinicalFMambaLib.objective.metric_objective import MetricObjective
    from ClinicalFMambaLib.training.harvard_data import find_pairs, load_luma_pair

    a, b = (x[96:160, 96:160] for x in load_luma_pair(find_pairs(HARVARD)[0]))
    start = np.maximum(a, b)
    kept = [x.copy() for x in (a, b, start)]
    objective = MetricObjective(deficit_weight=3)
    optimum = optimise_pair_metrics(start, a, b, objective, steps=10, lr=0.02)
    assert optimum.shape == a.shape and 0 <= optimum.min() and optimum.max() <= 1
    ta, tb = image_batch(a), image_batch(b)
    assert objective(image_batch(optimum), ta, tb)[0] < objective(image_batch(start), ta, tb)[0]
    assert all(np.array_equal(x, y) for x, y in zip(kept, (a, b, start)))  # inputs untouched


@needs_data
def test_loss_optimum_beats_max_fusion_under_the_loss():
    from ClinicalFMambaLib.training.harvard_data import find_pairs, load_luma_pair

    a, b = (x[96:160, 96:160] for x in load_luma_pair(find_pairs(HARVARD)[0]))
    target = optimise_pair(a, b, steps=15)
    assert target.shape == a.shape and 0 <= target.min() and target.max() <= 1
    ta, tb = image_batch(a), image_batch(b)
    assert (fusion_loss(image_batch(target), ta, tb)[0]
            < fusion_loss(image_batch(np.maximum(a, b)), ta, tb)[0])


@needs_data
def test_short_training_run_writes_verified_weights_and_resumes(tmp_path, capsys):
    from ClinicalFMambaLib.cli.main import main
    from ClinicalFMambaLib.io.weights import load_weights

    data = tmp_path / "harvard"
    for folder, names in (("MRI", ["16003.png", "16004.png", "41010.png"]),
                          ("CT", ["16003.png", "16004.png", "41010.png"])):
        (data / "CT-MRI" / folder).mkdir(parents=True)
        for name in names:  # case 16 trains, case 41 is held back
            shutil.copy(HARVARD / "CT-MRI" / folder / name, data / "CT-MRI" / folder / name)
    weights = tmp_path / "w" / "fusion2d.safetensors"
    args = ["train-fusion", "--data", str(data), "--output", str(weights), "--workdir",
            str(tmp_path / "run"), "--epochs", "1", "--crop", "32", "--batch-size", "2",
            "--threads", "1"]
    assert main(args) == 0
    state, config = load_weights(weights)
    assert config["spatial_dims"] == 2 and state
    entry = json.loads((weights.parent / "MANIFEST.json").read_text())[weights.name]
    assert entry["epoch"] == 1 and "CT-MRI" in entry["validation"]
    assert "train-fusion" in entry["command"]
    assert (tmp_path / "run" / "targets").is_dir()
    # A second call with more epochs resumes after epoch 1 instead of starting again.
    assert main(args[:-5] + ["2"] + args[-4:]) == 0
    assert "resumed" in capsys.readouterr().out


def _spect_subset(tmp_path: Path) -> Path:
    """Three real SPECT-MRI pairs: case 10 (two slices) trains, case 9 is held back."""
    data = tmp_path / "harvard"
    for folder in ("MRI", "SPECT"):
        (data / "SPECT-MRI" / folder).mkdir(parents=True)
        for name in ("10012.png", "10013.png", "9010.png"):
            shutil.copy(HARVARD / "SPECT-MRI" / folder / name, data / "SPECT-MRI" / folder / name)
    return data


@needs_data
def test_training_on_one_pair_type_leaves_the_others_out(tmp_path):
    from ClinicalFMambaLib.cli.main import main

    data = _spect_subset(tmp_path)
    for folder in ("MRI", "CT"):
        (data / "CT-MRI" / folder).mkdir(parents=True)
        for name in ("16003.png", "41010.png"):
            shutil.copy(HARVARD / "CT-MRI" / folder / name, data / "CT-MRI" / folder / name)
    weights = tmp_path / "w" / "fusion2d.safetensors"
    assert main(["train-fusion", "--data", str(data), "--output", str(weights), "--workdir",
                 str(tmp_path / "run"), "--epochs", "1", "--crop", "32", "--batch-size", "2",
                 "--threads", "1", "--target-weight", "0", "--pair-type", "SPECT-MRI"]) == 0
    entry = json.loads((weights.parent / "MANIFEST.json").read_text())[weights.name]
    assert "SPECT-MRI" in entry["validation"] and "CT-MRI" not in entry["validation"]
    assert "--pair-type SPECT-MRI" in entry["command"]


@needs_data
def test_fine_tuning_on_the_metric_objective_starts_from_the_given_weights(tmp_path, capsys):
    from ClinicalFMambaLib.cli.main import main
    from ClinicalFMambaLib.fusion.inference import BUNDLED_MODELS
    from ClinicalFMambaLib.io.weights import bundled, load_weights, sha256_of

    data = _spect_subset(tmp_path)
    weights = tmp_path / "w" / "fusion2d.safetensors"
    args = ["train-fusion", "--data", str(data), "--output", str(weights), "--workdir",
            str(tmp_path / "run"), "--epochs", "1", "--crop", "64", "--batch-size", "2",
            "--threads", "1", "--objective", "metrics", "--deficit-weight", "2",
            "--metric-weight", "MI=0", "--metric-weight", "VIF=2",
            "--target-weight", "0", "--lr", "1e-5", "--init-weights", str(bundled(BUNDLED_MODELS[2]))]
    assert main(args) == 0
    start, start_config = load_weights(bundled(BUNDLED_MODELS[2]))
    tuned, config = load_weights(weights)
    # The start's stem stride and emphasis conditioning are kept without being named.
    assert start_config["stem_stride"] == config["stem_stride"] == 4
    assert start_config["emphasis"] and config["emphasis"]
    assert start_config["detail_gain"] == config["detail_gain"] == 1.0
    # One small step away from the start, not a fresh random network.
    changes = [(tuned[k] - start[k]).abs().max().item() for k in start]
    assert 0 < max(changes) < 1e-2
    entry = json.loads((weights.parent / "MANIFEST.json").read_text())[weights.name]
    assert entry["objective"] == "metrics" and entry["deficit_weight"] == 2
    assert entry["metric_weights"] == {"MI": 0, "VIF": 2}
    assert entry["init_weights"]["sha256"] == sha256_of(bundled(BUNDLED_MODELS[2]))
    assert "set_detail_gain.py" in entry["init_weights"]["command"]
    # A 3D network's weights cannot seed the 2D one.
    assert main(args[:-1] + [str(bundled(BUNDLED_MODELS[3])), "--workdir",
                             str(tmp_path / "r2")]) == 2
    assert "another configuration" in capsys.readouterr().err


@needs_data
def test_a_pixel_mlp_added_to_trained_weights_starts_from_their_fusion(tmp_path):
    from ClinicalFMambaLib.cli.main import main
    from ClinicalFMambaLib.fusion.inference import (BUNDLED_MODELS, fuse_normalized,
                                                    load_fusion_model)
    from ClinicalFMambaLib.io.weights import bundled, load_weights
    from ClinicalFMambaLib.training.harvard_data import find_pairs, load_luma_pair

    data = _spect_subset(tmp_path)
    start = bundled(BUNDLED_MODELS[2])
    weights = tmp_path / "w" / "fusion2d.safetensors"
    assert main(["train-fusion", "--data", str(data), "--output", str(weights), "--workdir",
                 str(tmp_path / "run"), "--epochs", "1", "--crop", "64", "--batch-size", "2",
                 "--threads", "1", "--objective", "metrics", "--target-weight", "0",
                 "--lr", "1e-5", "--pixel-mlp", "8", "--init-weights", str(start)]) == 0
    tuned, config = load_weights(weights)
    assert config["pixel_mlp"] == 8 and tuned["pixel.0.weight"].shape == (8, 3, 1, 1)
    # The only new tensors are the MLP's, and one small step from the start keeps its fusion.
    base, _ = load_weights(start)
    assert all(k.startswith("pixel.") for k in set(tuned) - set(base))
    pair = find_pairs(data)[0]
    before = fuse_normalized(load_fusion_model(start, device="cpu"), *load_luma_pair(pair))
    after = fuse_normalized(load_fusion_model(weights, device="cpu"), *load_luma_pair(pair))
    assert 0 < np.abs(after - before).max() < 0.05


@needs_data
def test_an_emphasis_conditioned_quarter_resolution_network_starts_from_trained_weights(
        tmp_path):
    from ClinicalFMambaLib.cli.main import main
    from ClinicalFMambaLib.io.weights import load_weights, save_weights
    from ClinicalFMambaLib.networks.fusion_net import FusionNet

    data = _spect_subset(tmp_path)
    torch.manual_seed(0)
    plain = FusionNet()  # stride 2, no emphasis: the start
    start = tmp_path / "start" / "fusion2d.safetensors"
    save_weights(plain.state_dict(), start, plain.cfg.to_dict())
    weights = tmp_path / "w" / "fusion2d.safetensors"
    assert main(["train-fusion", "--data", str(data), "--output", str(weights), "--workdir",
                 str(tmp_path / "run"), "--epochs", "1", "--crop", "64", "--batch-size", "2",
                 "--threads", "1", "--objective", "metrics", "--target-weight", "0",
                 "--lr", "1e-5", "--stem-stride", "4", "--emphasis-conditioned",
                 "--init-weights", str(start)]) == 0
    tuned, config = load_weights(weights)
    assert config["emphasis"] is True and config["stem_stride"] == 4
    assert set(tuned) - set(plain.state_dict()) == {"film.0.weight", "film.0.bias",
                                                    "film.2.weight", "film.2.bias"}
    changes = [(tuned[k] - v).abs().max().item() for k, v in plain.state_dict().items()]
    assert 0 < max(changes) < 1e-2  # one small step from the start
    assert tuned["film.2.weight"].abs().max() > 0  # the conditioning was trained


@needs_data
def test_metric_optima_targets_are_cached_per_starting_weights(tmp_path, capsys):
    from ClinicalFMambaLib.cli.main import main
    from ClinicalFMambaLib.fusion.inference import (BUNDLED_MODELS, fuse_normalized,
                                                    load_fusion_model)
    from ClinicalFMambaLib.io.weights import bundled, sha256_of
    from ClinicalFMambaLib.training.harvard_data import find_pairs, load_luma_pair

    data = _spect_subset(tmp_path)
    start = bundled(BUNDLED_MODELS[2])
    weights, cache = tmp_path / "w" / "fusion2d.safetensors", tmp_path / "targets"
    args = ["train-fusion", "--data", str(data), "--output", str(weights), "--workdir",
            str(tmp_path / "run"), "--epochs", "1", "--crop", "64", "--batch-size", "2",
            "--threads", "1", "--objective", "metrics", "--deficit-weight", "3",
            "--targets", "metric-optima", "--target-steps", "3", "--target-cache", str(cache),
            "--lr", "1e-5", "--init-weights", str(start)]
    assert main(args) == 0
    source = json.loads((cache / "SOURCE.json").read_text())
    assert source["start_weights"] == sha256_of(start) and source["steps"] == 3
    entry = json.loads((weights.parent / "MANIFEST.json").read_text())[weights.name]
    assert entry["targets"] == "metric-optima"
    # One target per training pair (every 2nd slice), a few steps away from the starting model's output.
    pair = next(p for p in find_pairs(data) if p.name.endswith("10012"))
    target = np.load(target_file(cache, pair))
    fused = fuse_normalized(load_fusion_model(start, device="cpu"), *load_luma_pair(pair))
    assert len(list(cache.glob("*.npy"))) == 1  # every 2nd training slice: 10012 only
    assert 0 < np.abs(target - fused).max() < 0.2
    # Targets optimised from other weights are not reused under these.
    assert main(args[:-1] + [str(weights), "--workdir", str(tmp_path / "r2")]) == 2
    assert "holds targets computed from" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--targets", "metric-optima", "--objective", "metrics"], "need --dim 2, --objective metrics"),
    (["--targets", "metric-optima", "--init-weights", "w.safetensors"], "need --dim 2"),
    (["--deficit-weight", "3"], "apply to --objective metrics only"),
    (["--metric-weight", "MI=0"], "apply to --objective metrics only"),
    (["--axial-only-scan"], "--dim 3 only"),
    (["--pixel-mlp", "-1"], "--pixel-mlp must be 0 or a positive width"),
    (["--emphasis-conditioned"], "--emphasis-conditioned applies to --dim 2 with --objective"),
    (["--stem-stride", "3"], "--stem-stride must be 2 or 4"),
    (["--pair-type", "XR-MRI"], "unknown --pair-type XR-MRI"),
    (["--dim", "3", "--pair-type", "CT-MRI"], "--pair-type applies to --dim 2 only"),
])
def test_train_fusion_refuses_options_that_would_be_ignored(tmp_path, capsys, options, message):
    from ClinicalFMambaLib.cli.main import main

    assert main(["train-fusion", "--workdir", str(tmp_path), *options]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("option, message", [
    ("PSNR=1", "unknown metric 'PSNR'"), ("MI=-1", "must be >= 0"), ("MI=x", "expected NAME=W")])
def test_train_fusion_refuses_a_bad_metric_weight(capsys, option, message):
    from ClinicalFMambaLib.cli.main import main

    with pytest.raises(SystemExit):
        main(["train-fusion", "--objective", "metrics", "--metric-weight", option])
    assert message in capsys.readouterr().err
