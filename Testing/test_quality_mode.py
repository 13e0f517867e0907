"""fuse --quality: fast is the network alone, byte for byte; best refines each 2D fused image
on the metric objective (fusion/refine.py), on real Harvard pairs through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ClinicalFMambaLib.cli.main import main
from ClinicalFMambaLib.core.intensity import split_luma, ycbcr_to_rgb
from ClinicalFMambaLib.fusion.inference import (BUNDLED_MODELS, fuse_images, fuse_normalized,
                                                load_fusion_model)
from ClinicalFMambaLib.fusion.refine import RefineSettings
from ClinicalFMambaLib.io.images import read_image, write_image
from ClinicalFMambaLib.io.weights import bundled
from ClinicalFMambaLib.networks.fusion_net import image_batch

torch.set_num_threads(1)  # other jobs share the CPU

ROOT = Path(__file__).resolve().parents[1]
HARVARD = ROOT.parent / "shared" / "data" / "harvard"
CT_PAIR = (HARVARD / "CT-MRI" / "MRI" / "2013.png", HARVARD / "CT-MRI" / "CT" / "2013.png")
SPECT_PAIR = (HARVARD / "SPECT-MRI" / "MRI" / "9027.png",
              HARVARD / "SPECT-MRI" / "SPECT" / "9027.png")
VOLUMES = ROOT / "Resources" / "sample" / "volume"
pytestmark = [
    pytest.mark.skipif(not HARVARD.is_dir(), reason=f"real data not found: {HARVARD}"),
    pytest.mark.skipif(not bundled(BUNDLED_MODELS[2]).exists(), reason="no bundled 2D weights")]


def fuse_cli(pair: tuple[Path, Path], out: Path, *extra: str) -> int:
    return main(["fuse", str(pair[0]), str(pair[1]), "-o", str(out), "--device", "cpu", *extra])


def network_alone(pair: tuple[Path, Path], out: Path) -> Path:
    """The plain network's image of ``pair`` written as before the quality mode existed:
    its output on the lumas, the colour input's Cb/Cr put back."""
    (ya, chroma_a), (yb, chroma_b) = (split_luma(read_image(p)[0]) for p in pair)
    fused = fuse_normalized(load_fusion_model(device="cpu"), ya, yb)
    chroma = chroma_a if chroma_a is not None else chroma_b
    write_image(out, fused if chroma is None else ycbcr_to_rgb(fused, chroma))
    return out


def objective_loss(pair: tuple[Path, Path], fused: Path) -> float:
    """The quality mode's objective (lower is better) of a written fused image's luma."""
    a, b, f = (split_luma(read_image(p)[0])[0] for p in (*pair, fused))
    objective = RefineSettings().objective()
    terms, best = objective.prepare(image_batch(a), image_batch(b))
    return objective.loss(terms.metrics(image_batch(f)), best, per_image=True)[0].item()


def ycbcr(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("YCbCr")).astype(int)


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """Both pairs fused fast (by default and named), best, and by the network alone."""
    out = tmp_path_factory.mktemp("quality")
    codes = {}
    for name, pair in (("ct", CT_PAIR), ("spect", SPECT_PAIR)):
        codes[f"{name}_default"] = fuse_cli(pair, out / f"{name}_default.png")
        codes[f"{name}_fast"] = fuse_cli(pair, out / f"{name}_fast.png", "--quality", "fast")
        codes[f"{name}_best"] = fuse_cli(pair, out / f"{name}_best.png", "--quality", "best")
        network_alone(pair, out / f"{name}_network.png")
    return out, codes


def test_every_run_succeeds(fused):
    assert set(fused[1].values()) == {0}


@pytest.mark.parametrize("name", ["ct", "spect"])
def test_fast_mode_is_the_network_alone_byte_for_byte(fused, name):
    out, _ = fused
    network = (out / f"{name}_network.png").read_bytes()
    assert (out / f"{name}_default.png").read_bytes() == network
    assert (out / f"{name}_fast.png").read_bytes() == network


@pytest.mark.parametrize("name, pair", [("ct", CT_PAIR), ("spect", SPECT_PAIR)])
def test_best_mode_differs_and_improves_the_objective(fused, name, pair):
    out, _ = fused
    fast, best = (ycbcr(out / f"{name}_{q}.png")[..., 0] for q in ("fast", "best"))
    change = np.abs(best - fast)
    assert change.mean() > 0.2 and change.mean() < 8  # a refinement, not another image
    assert objective_loss(pair, out / f"{name}_best.png") < \
        objective_loss(pair, out / f"{name}_fast.png") - 0.3


def test_best_mode_keeps_the_colour_inputs_cb_cr(fused):
    out, _ = fused
    with Image.open(out / "spect_best.png") as image:
        assert image.mode == "RGB"
        rgb = np.asarray(image)
    best, spect = ycbcr(out / "spect_best.png"), ycbcr(SPECT_PAIR[1])
    # Where no RGB channel clips, Cb/Cr survive the Y swap up to uint8 rounding.
    unclipped = (rgb.min(axis=-1) > 0) & (rgb.max(axis=-1) < 255)
    coloured = np.abs(spect[..., 1:] - 128).max(axis=-1) > 8
    assert (unclipped & coloured).sum() > 5000
    assert np.abs(best[..., 1:] - spect[..., 1:])[unclipped].max() <= 2


def test_python_api_offers_the_mode():
    a, b = (read_image(p)[0] for p in CT_PAIR)
    model = load_fusion_model(device="cpu")
    fast = fuse_images(model, a, b)
    assert np.array_equal(fuse_images(model, a, b, quality="fast"), fast)
    refined = fuse_images(model, a, b, quality="best", steps=3)
    assert refined.dtype == np.float32 and refined.shape == fast.shape
    assert 0 < np.abs(refined - fast).mean() < 0.05 and 0 <= refined.min() <= refined.max() <= 1
    with pytest.raises(ValueError, match="quality"):
        fuse_images(model, a, b, quality="better")
    with pytest.raises(ValueError, match="quality best"):
        fuse_images(model, a, b, steps=3)
    with pytest.raises(ValueError, match="at least 11 pixels"):  # the SSIM window
        fuse_images(model, a[:10, :10], b[:10, :10], quality="best")


@pytest.mark.parametrize("quality", ["fast", "best"])
def test_the_report_records_the_mode(tmp_path, quality):
    extra = ("--refine-steps", "2") if quality == "best" else ()
    assert fuse_cli(CT_PAIR, tmp_path / "f.png", "--quality", quality, *extra,
                    "--classify") == 0
    report = json.loads((tmp_path / "f_report.json").read_text())
    assert report["quality"] == quality
    assert report["refine_steps"] == (2 if quality == "best" else None)


def test_folders_are_refined_pair_by_pair(tmp_path):
    folder_a, folder_b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    folder_a.mkdir(), folder_b.mkdir()
    for name, (a, b) in {"ct.png": CT_PAIR, "spect.png": SPECT_PAIR}.items():
        (folder_a / name).write_bytes(a.read_bytes())
        (folder_b / name).write_bytes(b.read_bytes())
    assert main(["fuse", str(folder_a), str(folder_b), "-o", str(out), "--device", "cpu",
                 "--quality", "best", "--refine-steps", "2"]) == 0
    single = tmp_path / "single.png"
    assert fuse_cli(CT_PAIR, single, "--quality", "best", "--refine-steps", "2") == 0
    assert (out / "ct.png").read_bytes() == single.read_bytes()
    with Image.open(out / "spect.png") as image:
        assert image.mode == "RGB"


@pytest.mark.parametrize("extra, words", [
    (("--quality", "better"), "quality must be fast"),
    (("--refine-steps", "5"), "--refine-steps applies to --quality best"),
    (("--quality", "best", "--refine-steps", "0"), "whole number from 1"),
    (("--quality", "best", "--refine-steps", "2.5"), "whole number from 1"),
])
def test_bad_options_give_one_line_and_exit_2(tmp_path, capsys, extra, words):
    assert fuse_cli(CT_PAIR, tmp_path / "f.png", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert not (tmp_path / "f.png").exists()


def test_volumes_refuse_best_quality_in_one_line(tmp_path, capsys):
    pair = (VOLUMES / "TCGA-DU-7294_t2.nii.gz", VOLUMES / "TCGA-DU-7294_flair.nii.gz")
    assert fuse_cli(pair, tmp_path / "f.nii.gz", "--quality", "best") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "2D images" in err
    assert not (tmp_path / "f.nii.gz").exists()
