"""Known-answer tests of the fusion metrics (ClinicalFMambaLib.evaluation) and the baselines
(ClinicalFMambaLib.fusion.baselines)."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from ClinicalFMambaLib.core.intensity import to_gray8
from ClinicalFMambaLib.evaluation import metrics as M
from ClinicalFMambaLib.evaluation.ranking import beats_best_baseline
from ClinicalFMambaLib.evaluation.volume_metrics import (_ssim_and_cs, ms_ssim, ms_ssim_scales,
                                                         volume_metrics)
from ClinicalFMambaLib.objective import baselines as B

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

SQRT2 = math.sqrt(2.0)


def checkerboard(h: int, w: int, lo: int = 0, hi: int = 255) -> np.ndarray:
    ij = np.add.outer(np.arange(h), np.arange(w))
    return np.where(ij % 2 == 0, lo, hi).astype(np.uint8)


def smooth_random(shape, seed: int = 0) -> np.ndarray:
    """Reproducible textured uint8 image (random field, lightly blurred)."""
    from scipy import ndimage

    x = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 1.0)
    x = (x - x.min()) / (x.max() - x.min())
    return to_gray8(x)


# ----------------------------------------------------------------------------- to_gray8

def test_to_gray8_rounds_half_up_and_keeps_uint8():
    x = np.array([[0.0, 0.2, 0.5], [1.0, 0.5 / 255, 1.0 + 1e-9]])
    np.testing.assert_array_equal(to_gray8(x), [[0, 51, 128], [255, 1, 255]])
    u = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert to_gray8(u) is u
    np.testing.assert_array_equal(to_gray8(u.astype(np.int64)), u)


@pytest.mark.parametrize(
    "bad",
    [
        np.full((4, 4), 1.5),
        np.full((4, 4), -0.1),
        np.full((4, 4), 300, dtype=np.int32),
        np.zeros((4, 4), dtype=bool),
        np.zeros((4, 4, 3)),
        np.array([[0.1, np.nan], [0.2, 0.3]]),
    ],
)
def test_to_gray8_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        to_gray8(bad)


# ----------------------------------------------------------------------------- F-only metrics

def test_entropy_known_values():
    assert M.entropy(checkerboard(8, 8)) == pytest.approx(1.0, abs=1e-12)
    assert M.entropy(np.full((8, 8), 77, dtype=np.uint8)) == 0.0
    four_levels = np.repeat(np.array([0, 10, 20, 30], dtype=np.uint8), 16).reshape(8, 8)
    assert M.entropy(four_levels) == pytest.approx(2.0, abs=1e-12)


def test_standard_deviation_is_population_sd():
    assert M.standard_deviation(checkerboard(8, 8)) == pytest.approx(127.5)
    # Float input goes through the same 8-bit conversion.
    assert M.standard_deviation(checkerboard(8, 8) / 255.0) == pytest.approx(127.5)
    assert M.standard_deviation(np.full((5, 5), 0.3)) == 0.0


def test_sf_ag_of_constant_ramp_and_checkerboard():
    const = np.full((9, 7), 100, dtype=np.uint8)
    assert M.spatial_frequency(const) == 0.0
    assert M.average_gradient(const) == 0.0
    ramp = np.tile(np.arange(16, dtype=np.uint8) * 10, (8, 1))  # +10 per column
    assert M.spatial_frequency(ramp) == pytest.approx(10.0)
    assert M.average_gradient(ramp) == pytest.approx(10.0 / SQRT2)
    board = checkerboard(10, 11)
    assert M.spatial_frequency(board) == pytest.approx(255.0 * SQRT2)
    assert M.average_gradient(board) == pytest.approx(255.0)


def test_sf_ag_normalisation_on_single_bright_pixel():
    img = np.zeros((3, 3), dtype=np.uint8)
    img[1, 1] = 255
    # Two non-zero differences out of six along each direction.
    assert M.spatial_frequency(img) == pytest.approx(255.0 * math.sqrt(4.0 / 6.0))
    # Forward differences on the 2x2 grid: 0, 255/sqrt2, 255/sqrt2, 255.
    assert M.average_gradient(img) == pytest.approx(255.0 * (1.0 + SQRT2) / 4.0)


# ----------------------------------------------------------------------------- MI, SCD

def test_mutual_information_known_values():
    a = smooth_random((32, 32))
    assert M.mutual_information(a, a) == pytest.approx(M.entropy(a), abs=1e-9)
    assert M.fusion_mi(a, a, a) == pytest.approx(2.0 * M.entropy(a), abs=1e-9)
    assert M.mutual_information(a, np.zeros_like(a)) == pytest.approx(0.0, abs=1e-12)
    rows = np.array([[0, 0], [255, 255]], dtype=np.uint8)
    assert M.mutual_information(rows, rows.T) == pytest.approx(0.0, abs=1e-12)
    assert M.mutual_information(rows, 255 - rows) == pytest.approx(1.0, abs=1e-12)


def test_scd_sign_behaviour():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 128, (32, 32)).astype(np.uint8)
    b = rng.integers(0, 128, (32, 32)).astype(np.uint8)
    # F - B == A and F - A == B: both correlations are exactly 1.
    assert M.scd(a, b, a + b) == pytest.approx(2.0, abs=1e-12)
    assert M.scd(a, b, 255 - a) < -0.5
    # F == A == B: both differences are constant, counted as 0.
    assert M.scd(a, a, a) == 0.0


# ----------------------------------------------------------------------------- VIF, Qabf

def test_vif_identity_and_lost_information():
    a = smooth_random((64, 64), seed=2)
    assert M.vifp(a, a) == pytest.approx(1.0, abs=1e-6)
    assert M.fusion_vif(a, a, a) == pytest.approx(2.0, abs=1e-6)
    assert M.vifp(a, np.full_like(a, 128)) == 0.0
    noise = np.random.default_rng(3).normal(0.0, 1.0, a.shape)
    mild = np.clip(a + 5 * noise, 0, 255).astype(np.uint8)
    strong = np.clip(a + 40 * noise, 0, 255).astype(np.uint8)
    assert 1.0 > M.vifp(a, mild) > M.vifp(a, strong) > 0.0


def test_qabf_perfect_and_lost_edges():
    # Best attainable value of the standard constants: G = A = 1 everywhere.
    q_max = 0.9994 / (1 + math.exp(-15 * (1 - 0.5))) * 0.9879 / (1 + math.exp(-22 * (1 - 0.8)))
    a = smooth_random((48, 48), seed=4)
    assert M.qabf(a, a, a) == pytest.approx(q_max, abs=1e-12)
    assert q_max == pytest.approx(0.97479, abs=1e-5)
    # Edge orientation is modulo pi: inverting the contrast preserves every edge.
    assert M.qabf(a, a, 255 - a) == pytest.approx(q_max, abs=1e-12)
    assert M.qabf(a, a, np.full_like(a, 128)) < 1e-3
    # Perpendicular edges (horizontal stripes fused into vertical ones) are not preserved.
    stripes = np.repeat(np.tile(np.array([0, 255], dtype=np.uint8), 6), 4)[:, None]
    rows = np.broadcast_to(stripes, (48, 48)).copy()
    assert M.qabf(rows, rows, rows.T) < 1e-3
    flat = np.full_like(a, 50)
    assert M.qabf(flat, flat, a) == 0.0


# ----------------------------------------------------------------------------- SSIM, PSNR

def test_ssim_and_psnr_of_identical_images():
    a = smooth_random((32, 32), seed=5)
    assert M.fusion_ssim(a, a, a) == pytest.approx(2.0, abs=1e-12)
    assert M.fusion_psnr(a, a, a) == math.inf


def test_ssim_is_a_sum_over_sources():
    a, f = smooth_random((32, 32), seed=6), smooth_random((32, 32), seed=7)
    one_pair = M.fusion_ssim(a, a, f) / 2.0
    assert M.fusion_ssim(a, f, f) == pytest.approx(1.0 + one_pair, abs=1e-12)


def test_ssim_data_range_on_constant_images():
    # Flat images: SSIM reduces to (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), C1 = (0.01 L)^2.
    zeros, tens = np.zeros((16, 16), dtype=np.uint8), np.full((16, 16), 10, dtype=np.uint8)
    c1 = (0.01 * 255) ** 2
    assert M.fusion_ssim(zeros, zeros, tens) == pytest.approx(2 * c1 / (100 + c1))
    c1 = 0.01**2
    paper = M.paper_metrics(zeros / 255.0, zeros / 255.0, np.full((16, 16), 0.1))
    assert paper["SSIM"] == pytest.approx(c1 / (0.01 + c1))


def test_psnr_averages_the_two_mse():
    a = np.random.default_rng(8).integers(0, 200, (16, 16)).astype(np.uint8)
    f = a + 10
    assert M.fusion_psnr(a, a, f) == pytest.approx(10 * math.log10(255**2 / 100.0))
    assert M.fusion_psnr(a, f, f) == pytest.approx(10 * math.log10(255**2 / 50.0))


def test_paper_metrics_known_values_2d_and_3d():
    a = smooth_random((32, 32), seed=9) / 255.0
    assert M.paper_metrics(a, a, a) == {"SSIM": pytest.approx(1.0), "PSNR": math.inf}
    dark = a * 0.9
    shifted = dark + 0.1  # MSE 0.01 against `dark`: PSNR 20 dB for each source
    assert M.paper_metrics(dark, dark, shifted)["PSNR"] == pytest.approx(20.0)
    vol = np.random.default_rng(10).random((12, 16, 14))
    assert M.paper_metrics(vol, vol, vol)["SSIM"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.paper_metrics(a, a, (a * 255).astype(np.uint8))


# ----------------------------------------------------------------------------- fusion_metrics

def test_fusion_metrics_keys_and_identity_values():
    a = smooth_random((64, 64), seed=11)
    out = M.fusion_metrics(a, a, a)
    assert list(out) == ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "PSNR"]
    assert set(M.HIGHER_IS_BETTER) == set(out) and all(M.HIGHER_IS_BETTER.values())
    assert all(isinstance(v, float) for v in out.values())
    assert out["MI"] == pytest.approx(2 * out["EN"], abs=1e-9)
    assert out["VIF"] == pytest.approx(2.0, abs=1e-6)
    assert out["SSIM"] == pytest.approx(2.0)
    assert out["PSNR"] == math.inf


@pytest.mark.parametrize(
    "a, b, f",
    [
        (np.zeros((16, 16)), np.zeros((16, 16)), np.zeros((16, 17))),
        (np.zeros((4, 16, 16)), np.zeros((4, 16, 16)), np.zeros((4, 16, 16))),
        (np.zeros((16, 16)), np.full((16, 16), np.nan), np.zeros((16, 16))),
    ],
    ids=["shape-mismatch", "not-2d", "nan"],
)
def test_fusion_metrics_rejects_bad_input(a, b, f):
    with pytest.raises(ValueError):
        M.fusion_metrics(a, b, f)


# ----------------------------------------------------------------------------- baselines

def test_beats_best_baseline_needs_every_baseline_beaten():
    ours = {"EN": 5.0, "SD": 50.0, "MI": 3.0}
    baselines = [{"EN": 4.0, "SD": 60.0, "MI": 2.0}, {"EN": 4.5, "SD": 40.0, "MI": 3.0}]
    # SD loses to the first baseline, MI only ties the second: neither counts.
    assert beats_best_baseline(ours, baselines, ("EN", "SD", "MI")) == ["EN"]


def test_mean_and_max_fusion_exact():
    a = np.array([[0.0, 0.25], [1.0, 0.5]])
    b = np.array([[1.0, 0.75], [0.0, 0.5]])
    np.testing.assert_array_equal(B.mean_fusion(a, b), [[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_array_equal(B.max_fusion(a, b), [[1.0, 0.75], [1.0, 0.5]])
    assert B.mean_fusion(a.astype(np.float32), b.astype(np.float32)).dtype == np.float32
    assert set(B.BASELINES) == {"mean", "max", "laplacian"}
    with pytest.raises(ValueError):
        B.max_fusion(a, b[:1])


@pytest.mark.parametrize("shape", [(37, 53), (19, 24, 11), (64, 64)])
def test_laplacian_of_identical_inputs_is_identity(shape):
    x = np.random.default_rng(12).random(shape).astype(np.float32)
    out = B.laplacian_pyramid_fusion(x, x)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, x, atol=1e-6)


def test_laplacian_keeps_detail_and_range():
    rng = np.random.default_rng(13)
    a = np.full((40, 40), 0.5)
    a[:, :20] = rng.random((40, 20))  # texture only in the left half of A
    b = np.full((40, 40), 0.5)
    lap, mean = B.laplacian_pyramid_fusion(a, b), B.mean_fusion(a, b)
    assert M.spatial_frequency(lap) > 1.5 * M.spatial_frequency(mean)
    assert lap.min() >= 0.0 and lap.max() <= 1.0
    np.testing.assert_allclose(B.laplacian_pyramid_fusion(a, b, levels=0), mean, atol=1e-12)
    with pytest.raises(ValueError):
        B.laplacian_pyramid_fusion(a, b, levels=-1)


def test_detail_transfer_between_unchanged_and_laplacian():
    rng = np.random.default_rng(14)
    a, b = rng.random((2, 45, 38))
    fused = B.max_fusion(a, b)
    np.testing.assert_allclose(B.detail_transfer(a, b, fused, strength=0.0), fused, atol=1e-12)
    np.testing.assert_allclose(B.detail_transfer(a, b, fused, finest_levels=0), fused, atol=1e-12)
    # The mean's pyramid is the mean of the pyramids: replacing all of its band-pass levels
    # gives back the Laplacian pyramid fusion.
    np.testing.assert_allclose(B.detail_transfer(a, b, B.mean_fusion(a, b), finest_levels=4),
                               B.laplacian_pyramid_fusion(a, b), atol=1e-12)
    half = B.detail_transfer(a, b, fused, strength=0.5, finest_levels=1)
    full = B.detail_transfer(a, b, fused, strength=1.0, finest_levels=1)
    assert 0 < np.abs(half - fused).mean() < np.abs(full - fused).mean()
    assert B.detail_transfer(a.astype(np.float32), b.astype(np.float32),
                             fused.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="shape"):
        B.detail_transfer(a, b, fused[:8])


@pytest.mark.parametrize("kwargs", [{"strength": 1.5}, {"strength": -0.1},
                                    {"finest_levels": 5}, {"finest_levels": -1}])
def test_detail_transfer_rejects_bad_options(kwargs):
    a = np.zeros((16, 16))
    with pytest.raises(ValueError):
        B.detail_transfer(a, a, a, **kwargs)


# ----------------------------------------------------------------------------- real data

def _first_ct_mri_pair():
    ct_dir = DATA / "harvard" / "CT-MRI" / "CT"
    for ct in sorted(ct_dir.glob("*.png")) if ct_dir.is_dir() else []:
        mri = ct_dir.parent / "MRI" / ct.name
        if mri.is_file():
            return ct, mri
    return None


def test_metrics_on_a_real_harvard_ct_mri_pair():
    pair = _first_ct_mri_pair()
    if pair is None:
        pytest.skip(f"Harvard CT-MRI data not found under {DATA}")
    from PIL import Image

    ct, mri = (np.asarray(Image.open(p).convert("L"), dtype=np.float64) / 255.0 for p in pair)
    results = {name: M.fusion_metrics(ct, mri, fuse(ct, mri)) for name, fuse in B.BASELINES.items()}
    for name, values in results.items():
        assert all(math.isfinite(v) for v in values.values()), (name, values)
        assert 0.0 < values["Qabf"] < 1.0 and 0.0 < values["SSIM"] < 2.0, (name, values)
    # Max fusion keeps the brighter, higher-contrast tissue of each source; averaging blurs it.
    # (EN is not compared: averaging spreads the histogram, so mean fusion has the higher EN.)
    for key in ("SD", "SF", "AG"):
        assert results["max"][key] > results["mean"][key], key
    paper = M.paper_metrics(ct, mri, B.max_fusion(ct, mri))
    assert 0.0 < paper["SSIM"] < 1.0 and math.isfinite(paper["PSNR"])


def test_ms_ssim_known_values_and_order():
    rng = np.random.default_rng(3)
    x = ndimage.gaussian_filter(rng.random((96, 96)), 2)
    assert ms_ssim(x, x) == pytest.approx(1.0)
    noisy = [np.clip(x + s * rng.standard_normal(x.shape), 0, 1) for s in (0.01, 0.05, 0.2)]
    scores = [ms_ssim(x, n) for n in noisy]
    assert scores[0] > scores[1] > scores[2] > 0
    assert ms_ssim(noisy[1], x) == pytest.approx(scores[1])  # symmetric
    # One scale only (side 40): the plain SSIM with the same window.
    small, small_noisy = x[:40, :40], noisy[1][:40, :40]
    ssim_value, _ = _ssim_and_cs(small, small_noisy, 1.0)
    assert ms_ssim(small, small_noisy) == pytest.approx(ssim_value)
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ms_ssim(x[:8, :8], x[:8, :8])


def test_volume_metrics_on_a_real_volume_crop():
    case = DATA / "brain3d" / "TCGA-DU-7294"
    if not case.is_dir():
        pytest.skip(f"real data not found: {case}")
    from ClinicalFMambaLib.training.brain3d_data import load_case

    volumes = load_case(case)
    crop = (slice(50, 98), slice(80, 144), slice(80, 144))
    t2, flair = volumes["t2"][crop], volumes["flair"][crop]
    same = volume_metrics(t2, t2, t2)
    assert same["SSIM"] == pytest.approx(1) and same["MS-SSIM"] == pytest.approx(1)
    assert same["PSNR"] == math.inf and 0 < same["EN"] <= 8
    mean, maximum = volume_metrics(t2, flair, (t2 + flair) / 2), volume_metrics(
        t2, flair, np.maximum(t2, flair))
    assert mean["PSNR"] > maximum["PSNR"]  # the mean is the volume closest to both sources
    assert 0 < maximum["MS-SSIM"] < 1
    # A volume too thin for a second scale gets no MS-SSIM (it would be SSIM again).
    assert ms_ssim_scales(t2.shape) == 2 and ms_ssim_scales((155, 240, 240)) == 3
    thin = volume_metrics(t2[:40], flair[:40], t2[:40])
    assert ms_ssim_scales((40, 64, 64)) == 1 and set(thin) == {"PSNR", "SSIM", "EN"}
