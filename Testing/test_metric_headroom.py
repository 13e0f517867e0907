"""scripts/research/metric_headroom.py: the per-pixel (A, B) function fitted on other images, and one
real run on two held-back CT-MRI pairs ranked among the baselines and published methods."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from peer_results import DATA, ROOT, import_script, needs_data

SCRIPT = ROOT / "scripts" / "research" / "metric_headroom.py"


@pytest.fixture
def headroom(monkeypatch):
    return import_script(monkeypatch, "metric_headroom")


def _images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((128, 128), dtype=np.float32), rng.random((128, 128), dtype=np.float32)


def test_a_rule_of_the_grey_levels_carries_to_other_images_and_noise_does_not(headroom):
    pairs = [_images(seed) for seed in range(3)]
    keys = [headroom.level_pairs(a, b, headroom.TRANSFER_LEVELS).ravel() for a, b in pairs]
    # The same smooth function of both sources' grey levels on every image: fitted on the
    # others, it explains each image's change all but for the spread inside one level pair.
    rule = [(np.sin(6 * a) * b).ravel() for a, b in pairs]
    assert min(headroom.transferred_shares(list(zip(keys, rule)))) > 0.95
    # A change of its own on every image: what the other images fit explains none of it.
    rng = np.random.default_rng(7)
    noise = [rng.normal(size=k.shape) for k in keys]
    assert max(headroom.transferred_shares(list(zip(keys, noise)))) < 0.05


def test_peers_with_brain3d_and_missing_folders_refused_in_one_line():
    for options, message in (
            (["--brain3d", "--peers", str(DATA / "peers")], "--peers has Harvard pairs only"),
            (["--peers", str(ROOT / "no-such-dir")], "no published methods' results folder"),
            (["--brain3d", "--data", str(ROOT / "no-such-dir")], "no brain3d case")):
        done = subprocess.run([sys.executable, str(SCRIPT), *options], cwd=ROOT,
                              capture_output=True, encoding="utf-8", timeout=60)
        assert done.returncode == 2
        assert message in done.stderr and "Traceback" not in done.stderr


@needs_data
def test_real_run_ranks_model_and_optimum_among_the_published_methods():
    done = subprocess.run([sys.executable, str(SCRIPT), "--pair-type", "CT-MRI", "--every", "20",
                           "--steps", "3", "--pointwise", "--threads", "1",
                           "--data", str(DATA / "harvard"), "--peers", str(DATA / "peers")],
                          cwd=ROOT, capture_output=True, encoding="utf-8", timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "CT-MRI (2 images)" in out
    for method in ("GeSeNet", "IFCNN-MAX", "SDNet", "U2Fusion", "EMFusion", "opt(model)"):
        assert any(line.startswith(method) for line in out.splitlines()), method
    ranked = [line for line in out.splitlines() if " as ClinicalFMamba: " in line]
    assert [line.split(" as ")[0] for line in ranked] == ["model", "opt(model)"]
    assert all("place " in line and "of 9" in line for line in ranked)
    assert "pw(model) fitted on the other images (64 levels per source) explains" in out
