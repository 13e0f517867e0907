"""Image-fusion quality metrics (numpy / scipy / scikit-image only).

Two protocols are provided.

**The usual 8-bit protocol of the field** (:func:`fusion_metrics`). Sources ``A``, ``B`` and
the fused image ``F`` are 2D arrays, converted to 8-bit grey by ``core.intensity.to_gray8``
(float in [0, 1] -> ``floor(255 * x + 0.5)``, i.e. round half up as MATLAB's ``im2uint8``;
integer input must already lie in 0..255). Every metric is then computed on grey levels
0..255 in float64. Higher is better for all ten.

========  ===========================================================  ===================
key       definition                                                   convention
========  ===========================================================  ===================
EN        Shannon entropy of F's 256-bin histogram, ``-sum p log2 p``  bits; F only
SD        ``sqrt(mean((F - mean F)^2))``                               ddof=0; grey levels
SF        ``sqrt(RF^2 + CF^2)``; RF, CF = RMS of horizontal, vertical  grey levels; mean
          first differences                                            over M(N-1), (M-1)N
AG        mean of ``sqrt((dx^2 + dy^2) / 2)``, dx, dy forward          grey levels; mean
          differences                                                  over (M-1)(N-1)
MI        ``MI(A,F) + MI(B,F)``, ``MI(X,F) = H(X) + H(F) - H(X,F)``    bits; sum; 256x256
                                                                       joint histogram
SCD       ``corr(F-B, A) + corr(F-A, B)`` (Aslantas & Bendes 2015),    sum, in [-2, 2];
          Pearson                                                      constant image -> 0
VIF       ``VIFp(A,F) + VIFp(B,F)``: pixel-domain multi-scale VIF of   sum; VIFp(X,X) = 1;
          Sheikh & Bovik (4 scales, Gaussian windows 17/9/5/3,         flat source -> 0
          sigma_n^2 = 2); NOT the fusion VIF of Han et al. 2013
Qabf      Xydeas & Petrovic edge preservation, Sobel gradients,        in [0, 0.9748];
          Tg=0.9994, kg=-15, Dg=0.5, Ta=0.9879, ka=-22, Da=0.8, L=1;   no source edge -> 0
          edge orientation taken modulo pi
SSIM      ``SSIM(A,F) + SSIM(B,F)``, Gaussian window 11, sigma 1.5,    sum, in [-2, 2];
          K1=0.01, K2=0.03, mean over the map minus a 5-pixel border   data range 255
PSNR      ``10 log10(255^2 / ((MSE(A,F) + MSE(B,F)) / 2))``            dB; ``inf`` (no
                                                                       cap) if F==A==B
========  ===========================================================  ===================

With the standard Qabf constants the best attainable value (F == A == B) is
``Tg / (1 + exp(kg (1 - Dg))) * Ta / (1 + exp(ka (1 - Da))) ~= 0.9748``, not 1.

**The paper's protocol** (:func:`paper_metrics`): float images in [0, 1] (2D or 3D, no 8-bit
conversion); SSIM (Gaussian window 11, sigma 1.5, data range 1) and PSNR (data range 1,
``10 log10(1 / MSE)``) of F against each source, each averaged (mean, not sum) over the two
sources. Identical images give SSIM 1 and PSNR ``inf``. The paper's other figures (FMI,
FSIM, EN of float images) are not computed here.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

from ..core.intensity import RANGE_TOLERANCE, require_finite, to_gray8
from ..core.metric_constants import (QABF_DA, QABF_DG, QABF_KA, QABF_KG, QABF_L, QABF_TA,
                                     QABF_TG, VIF_NOISE_VAR, VIF_SCALES, gauss_1d)

METRIC_NAMES: tuple[str, ...] = (
    "EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "PSNR",
)
HIGHER_IS_BETTER: dict[str, bool] = {name: True for name in METRIC_NAMES}
_EPS = 1e-10
# SSIM as in Wang et al. 2004 with a Gaussian window of 11 (skimage truncates at 3.5 sigma).
SSIM_SIGMA = 1.5


def _grey(img: np.ndarray) -> np.ndarray:
    return to_gray8(img).astype(np.float64)


def check_same_shape(*imgs: np.ndarray) -> None:
    shapes = [np.shape(x) for x in imgs]
    if len(set(shapes)) != 1:
        raise ValueError(f"images must have one shape, got {', '.join(map(str, shapes))}")


def _grey_triplet(a: np.ndarray, b: np.ndarray, f: np.ndarray):
    check_same_shape(a, b, f)
    return _grey(a), _grey(b), _grey(f)


# ----------------------------------------------------------------------------- F-only metrics

def entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(np.sum(p * np.log2(1.0 / p)))  # log2(1/p) keeps a constant image at +0.0


def entropy(f: np.ndarray) -> float:
    """EN: entropy (bits) of the 256-bin grey histogram of ``f``."""
    g = to_gray8(f)
    return entropy_bits(np.bincount(g.ravel(), minlength=256))


def standard_deviation(f: np.ndarray) -> float:
    """SD: population standard deviation (ddof=0) of ``f`` in grey levels."""
    return float(_grey(f).std())


def spatial_frequency(f: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2) in grey levels.

    RF^2 is the mean squared difference of horizontally adjacent pixels, CF^2 of vertically
    adjacent ones, each averaged over the M(N-1) or (M-1)N differences that exist.
    """
    g = _grey(f)
    rf2 = np.mean(np.diff(g, axis=1) ** 2) if g.shape[1] > 1 else 0.0
    cf2 = np.mean(np.diff(g, axis=0) ** 2) if g.shape[0] > 1 else 0.0
    return float(np.sqrt(rf2 + cf2))


def average_gradient(f: np.ndarray) -> float:
    """AG: mean over the (M-1)x(N-1) grid of sqrt((dx^2 + dy^2) / 2), forward differences."""
    g = _grey(f)
    if min(g.shape) < 2:
        return 0.0
    dx = g[1:, :-1] - g[:-1, :-1]
    dy = g[:-1, 1:] - g[:-1, :-1]
    return float(np.mean(np.sqrt((dx**2 + dy**2) / 2.0)))


# ----------------------------------------------------------------------------- source-vs-fused

def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """MI(x, y) in bits from 256-bin marginal and 256x256 joint histograms of 8-bit grey."""
    check_same_shape(x, y)
    gx, gy = (to_gray8(img).ravel().astype(np.intp) for img in (x, y))
    joint = np.bincount(gx * 256 + gy, minlength=256 * 256)
    h_x = entropy_bits(np.bincount(gx, minlength=256))
    h_y = entropy_bits(np.bincount(gy, minlength=256))
    # Clamp the ~1e-16 negative rounding residue of independent images.
    return max(h_x + h_y - entropy_bits(joint), 0.0)


def fusion_mi(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """MI = MI(A, F) + MI(B, F), in bits (summed over the two sources)."""
    check_same_shape(a, b, f)
    return mutual_information(a, f) + mutual_information(b, f)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc**2).sum() * (yc**2).sum())
    # A constant image has no correlation with anything; report 0 rather than NaN.
    return float((xc * yc).sum() / denom) if denom > 0 else 0.0


def scd(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """SCD = corr(F - B, A) + corr(F - A, B) (Aslantas & Bendes), Pearson, in [-2, 2].

    A term whose images include a constant one (e.g. F == B) counts as 0.
    """
    ga, gb, gf = _grey_triplet(a, b, f)
    return _corr(gf - gb, ga) + _corr(gf - ga, gb)


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable filtering keeping only the pixels whose window lies inside the image."""
    for axis in range(x.ndim):
        x = ndimage.correlate1d(x, w, axis=axis, mode="nearest")
    r = len(w) // 2
    return x[tuple(slice(r, n - r) for n in x.shape)]


def vifp(ref: np.ndarray, dist: np.ndarray) -> float:
    """Pixel-domain multi-scale VIF of Sheikh & Bovik (2006) of ``dist`` against ``ref``.

    Four scales with Gaussian windows of size 17, 9, 5, 3 (sigma = size / 5), 'valid'
    filtering, dyadic subsampling between scales, HVS noise variance 2 (grey levels^2).
    VIFp(X, X) = 1. Scales whose window no longer fits (images below about 64 pixels a side)
    contribute nothing; a flat reference (no information to preserve) gives 0.
    """
    check_same_shape(ref, dist)
    x, y = _grey(ref), _grey(dist)
    num = den = 0.0
    for scale in range(VIF_SCALES):
        size = 2 ** (VIF_SCALES - scale) + 1
        w = gauss_1d(size, size / 5.0)
        if scale > 0:
            x = _filter_valid(x, w)[::2, ::2]
            y = _filter_valid(y, w)[::2, ::2]
        if min(x.shape) < size:
            break
        mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
        var_x = np.maximum(_filter_valid(x * x, w) - mu_x**2, 0.0)
        var_y = np.maximum(_filter_valid(y * y, w) - mu_y**2, 0.0)
        cov = _filter_valid(x * y, w) - mu_x * mu_y
        # Local model dist = gain * ref + noise; degenerate windows (flat, negative gain)
        # handled as in Sheikh & Bovik's reference code.
        gain = cov / (var_x + _EPS)
        noise = var_y - gain * cov
        flat_x, flat_y = var_x < _EPS, var_y < _EPS
        gain = np.where(flat_x | flat_y, 0.0, gain)
        noise = np.where(flat_x, var_y, noise)
        noise = np.where(flat_y, 0.0, noise)
        var_x = np.where(flat_x, 0.0, var_x)
        noise = np.where(gain < 0, var_y, noise)
        gain = np.maximum(gain, 0.0)
        noise = np.maximum(noise, _EPS)
        num += np.log10(1.0 + gain**2 * var_x / (noise + VIF_NOISE_VAR)).sum()
        den += np.log10(1.0 + var_x / VIF_NOISE_VAR).sum()
    return float(num / den) if den > 0 else 0.0


def fusion_vif(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """VIF = VIFp(A, F) + VIFp(B, F) (Sheikh & Bovik pixel-domain VIF, summed; not Han et al.)."""
    check_same_shape(a, b, f)
    return vifp(a, f) + vifp(b, f)


def _sobel_strength_orientation(g: np.ndarray):
    gx = ndimage.sobel(g, axis=1, mode="reflect")
    gy = ndimage.sobel(g, axis=0, mode="reflect")
    # Edge orientation is defined modulo pi: fold atan2 into [-pi/2, pi/2).
    alpha = np.mod(np.arctan2(gy, gx) + np.pi / 2, np.pi) - np.pi / 2
    return np.hypot(gx, gy), alpha


def _edge_preservation(g_s, a_s, g_f, a_f) -> np.ndarray:
    hi = np.maximum(g_s, g_f)
    strength = np.divide(np.minimum(g_s, g_f), hi, out=np.zeros_like(hi), where=hi > 0)
    # |alpha_s - alpha_f| lies in [0, pi); parallel edges (0 or ~pi apart) score 1.
    orient = np.abs(np.abs(a_s - a_f) - np.pi / 2) / (np.pi / 2)
    q_g = QABF_TG / (1.0 + np.exp(QABF_KG * (strength - QABF_DG)))
    q_a = QABF_TA / (1.0 + np.exp(QABF_KA * (orient - QABF_DA)))
    return q_g * q_a


def qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Qabf (Xydeas & Petrovic 2000): edge information of A and B preserved in F.

    Sobel gradients (reflect border); per-pixel Q^{XF} = Qg * Qa with the standard
    constants (module table); weights w_X = g_X^L with L = 1;
    Qabf = sum(Q^{AF} w_A + Q^{BF} w_B) / sum(w_A + w_B). 0 when neither source has an edge.
    """
    ga, gb, gf = _grey_triplet(a, b, f)
    sa, oa = _sobel_strength_orientation(ga)
    sb, ob = _sobel_strength_orientation(gb)
    sf, of = _sobel_strength_orientation(gf)
    wa, wb = sa**QABF_L, sb**QABF_L
    total = (wa + wb).sum()
    if total <= 0:
        return 0.0
    q = _edge_preservation(sa, oa, sf, of) * wa + _edge_preservation(sb, ob, sf, of) * wb
    return float(q.sum() / total)


def _ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    return float(
        structural_similarity(
            x, y, data_range=data_range, gaussian_weights=True, sigma=SSIM_SIGMA,
            use_sample_covariance=False,
        )
    )


def fusion_ssim(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """SSIM = SSIM(A, F) + SSIM(B, F) on 8-bit grey: Gaussian window 11, sigma 1.5, range 255."""
    ga, gb, gf = _grey_triplet(a, b, f)
    return _ssim(ga, gf, 255.0) + _ssim(gb, gf, 255.0)


def fusion_psnr(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """PSNR = 10 log10(255^2 / ((MSE(A,F) + MSE(B,F)) / 2)) in dB; ``inf`` when F == A == B."""
    ga, gb, gf = _grey_triplet(a, b, f)
    mse = (np.mean((ga - gf) ** 2) + np.mean((gb - gf) ** 2)) / 2.0
    return float(10.0 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf")


def fusion_metrics(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """All ten metrics of the 8-bit protocol (module table), keyed as in ``METRIC_NAMES``.

    ``a``, ``b``, ``f``: 2D arrays of one shape (at least 11x11, the SSIM window; 64x64 or
    more for all four VIF scales), float in [0, 1] or integers in 0..255.
    Raises ValueError on shape mismatch, non-2D input, NaN/inf or out-of-range values.
    """
    check_same_shape(a, b, f)
    ga, gb, gf = to_gray8(a), to_gray8(b), to_gray8(f)
    return {
        "EN": entropy(gf),
        "SD": standard_deviation(gf),
        "SF": spatial_frequency(gf),
        "AG": average_gradient(gf),
        "MI": fusion_mi(ga, gb, gf),
        "SCD": scd(ga, gb, gf),
        "VIF": fusion_vif(ga, gb, gf),
        "Qabf": qabf(ga, gb, gf),
        "SSIM": fusion_ssim(ga, gb, gf),
        "PSNR": fusion_psnr(ga, gb, gf),
    }


# ----------------------------------------------------------------------------- paper protocol

def unit_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"paper_metrics expects float images in [0, 1], got dtype {x.dtype}")
    if x.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D image, got shape {x.shape}")
    require_finite(x)
    if x.min() < -RANGE_TOLERANCE or x.max() > 1 + RANGE_TOLERANCE:
        raise ValueError("float image values must lie in [0, 1]")
    return np.clip(x.astype(np.float64), 0.0, 1.0)


def paper_metrics(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """The paper's protocol on float images in [0, 1] (2D or 3D), no 8-bit conversion.

    Returns ``{"SSIM": (SSIM(A,F) + SSIM(B,F)) / 2, "PSNR": (PSNR(A,F) + PSNR(B,F)) / 2}``
    with SSIM: Gaussian window 11, sigma 1.5, data range 1; PSNR: 10 log10(1 / MSE) in dB,
    ``inf`` for an identical pair (so the mean is ``inf`` if either pair is identical).
    """
    check_same_shape(a, b, f)
    xa, xb, xf = unit_float(a), unit_float(b), unit_float(f)

    def psnr(x: np.ndarray) -> float:
        mse = float(np.mean((x - xf) ** 2))
        return float(10.0 * np.log10(1.0 / mse)) if mse > 0 else float("inf")

    return {
        "SSIM": (_ssim(xa, xf, 1.0) + _ssim(xb, xf, 1.0)) / 2.0,
        "PSNR": (psnr(xa) + psnr(xb)) / 2.0,
    }
