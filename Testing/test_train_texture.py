"""scripts/build/train_fusion3d_texture.py on the real brain3d cases: the cached stages reproduce the
network, a step changes the refinement alone, and a tiny run completes with its history."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ClinicalFMambaLib.fusion.inference import BUNDLED_MODELS, load_fusion_model
from ClinicalFMambaLib.io.weights import bundled
from ClinicalFMambaLib.objective.metric_objective import MetricObjective
from ClinicalFMambaLib.training.brain3d_data import load_case

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "brain3d"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/brain3d not present")
torch.set_num_threads(1)


def script():
    spec = importlib.util.spec_from_file_location(
        "train_fusion3d_texture", ROOT / "scripts" / "build" / "train_fusion3d_texture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_step_on_cached_stages_changes_the_refinement_alone():
    texture = script()
    volumes = load_case(DATA / "AURORA")
    region = (slice(60, 92), slice(90, 122), slice(90, 122))
    a, b = (torch.from_numpy(volumes[c][region].copy())[None, None] for c in ("t2", "flair"))
    model = load_fusion_model(bundled(BUNDLED_MODELS[3]), dims=3, device="cpu")
    model.requires_grad_(False)
    model.refine.requires_grad_(True)
    batch = texture.FrozenStages(model)(a, b)  # raises if it does not reproduce forward
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, objective, excess = texture.loss_terms(model, MetricObjective(), batch, 3.0)
    assert torch.isclose(loss, objective + 3 * excess)
    loss.backward()
    torch.optim.SGD(model.refine.parameters(), lr=0.01).step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("refine.") for k in changed)


def test_tiny_run_completes_with_its_history(tmp_path):
    command = [sys.executable, "scripts/build/train_fusion3d_texture.py", "--data", str(DATA),
               "--init-weights", str(bundled(BUNDLED_MODELS[3])), "--epochs", "1",
               "--patches", "2", "--crop", "32", "--val-crop", "32",
               "--workdir", str(tmp_path / "run"),
               "--output", str(tmp_path / "w" / "f.safetensors")]
    # The progress bars are UTF-8; the caller's locale may be ASCII (a bare CI shell).
    done = subprocess.run(command, cwd=ROOT, capture_output=True, encoding="utf-8",
                          errors="replace", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    assert set(history[0]["validation"]) == {"loss", "objective", "noise_excess",
                                             "flat_noise_ratio"}
