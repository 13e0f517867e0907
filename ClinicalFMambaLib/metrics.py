"""Image-fusion quality metrics (numpy / scipy / scikit-image only).

Two protocols are provided.

**The usual 8-bit protocol of the field** (:func:`fusion_metrics`). Sources ``A``, ``B`` and
the fused image ``F`` are 2D arrays, converted to 8-bit grey by :func:`to_gray8` (float in
[0, 1] -> ``floor(255 * x + 0.5)``, i.e. round half up as MATLAB's ``im2uint8``; integer
input must already lie in 0..255). Every metric is then computed on grey levels 0..255 in
float64. Higher is better for all ten.

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

METRIC_NAMES: tuple[str, ...] = (
    "EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "PSNR",
)
HIGHER_IS_BETTER: dict[str, bool] = {name: True for name in METRIC_NAMES}
# The 3D results table (volume_fusion.volume_table_metrics): ``volume_metrics`` of the whole
# volume, then the 2D metrics averaged over axial slices.
VOLUME_TABLE_COLUMNS: tuple[str, ...] = ("PSNR", "SSIM", "MS-SSIM", "EN",
                                         *(f"2D {k}" for k in METRIC_NAMES))


def beats_best_baseline(ours: dict[str, float], baselines: list[dict[str, float]],
                        columns: tuple[str, ...] = METRIC_NAMES) -> list[str]:
    """The ``columns`` on which ``ours`` scores higher than every one of ``baselines``
    (every metric here is higher-is-better)."""
    return [c for c in columns if ours[c] > max(b[c] for b in baselines)]


def is_better(metric: str, x: float, y: float) -> bool:
    """Whether ``x`` is strictly better than ``y`` on ``metric`` (``HIGHER_IS_BETTER``)."""
    return x > y if HIGHER_IS_BETTER[metric] else x < y


def metric_wins(ours: dict[str, float], other: dict[str, float],
                columns: tuple[str, ...] = METRIC_NAMES) -> list[str]:
    """The ``columns`` on which ``ours`` is strictly better than ``other``; a tie is no win."""
    return [c for c in columns if is_better(c, ours[c], other[c])]


def mean_ranks(table: dict[str, dict[str, float]],
               columns: tuple[str, ...] = METRIC_NAMES) -> dict[str, float]:
    """Each method's rank among all methods of ``table`` ({method: {metric: value}}) on each
    of ``columns`` (1 = best, in the direction of ``HIGHER_IS_BETTER``), averaged over the
    columns. Exactly equal values share the mean of the ranks they span (fractional ranking:
    two methods tied for best both rank 1.5), so every column's ranks sum to n(n + 1) / 2."""
    if any(np.isnan(v[c]) for v in table.values() for c in columns):
        raise ValueError("cannot rank NaN metric values")

    def rank(method: str, column: str) -> float:
        value = table[method][column]
        others = [v[column] for m, v in table.items() if m != method]
        return (1 + sum(is_better(column, o, value) for o in others)
                + sum(o == value for o in others) / 2)

    return {m: float(np.mean([rank(m, c) for c in columns])) for m in table}

# Float inputs this close outside [0, 1] are rounding noise, not wrong scaling.
_RANGE_TOL = 1e-6
_EPS = 1e-10

# Xydeas & Petrovic sigmoid constants (edge strength g, orientation a).
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8
QABF_L = 1.0

# Sheikh & Bovik pixel-domain VIF: HVS noise variance in grey levels^2.
_VIF_NOISE_VAR = 2.0
_VIF_SCALES = 4

# SSIM as in Wang et al. 2004 with a Gaussian window of 11 (skimage truncates at 3.5 sigma).
_SSIM_SIGMA = 1.5


# ----------------------------------------------------------------------------- input handling

def _check_finite(x: np.ndarray) -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError("image contains NaN or infinite values")


def to_gray8(img: np.ndarray) -> np.ndarray:
    """Convert one 2D image to 8-bit grey.

    Float input must lie in [0, 1] (up to 1e-6, clipped) and becomes ``floor(255 * x + 0.5)``
    (round half up, as MATLAB ``im2uint8``). Integer input must lie in 0..255 and is kept.
    Raises ValueError for non-2D input, NaN/inf, out-of-range values or other dtypes.
    """
    x = np.asarray(img)
    if x.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError("integer image values must lie in 0..255")
        return x.astype(np.uint8)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"unsupported dtype {x.dtype}; use float in [0, 1] or uint8")
    _check_finite(x)
    if x.size and (x.min() < -_RANGE_TOL or x.max() > 1 + _RANGE_TOL):
        raise ValueError("float image values must lie in [0, 1]; rescale first")
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _grey(img: np.ndarray) -> np.ndarray:
    return to_gray8(img).astype(np.float64)


def _check_same_shape(*imgs: np.ndarray) -> None:
    shapes = [np.shape(x) for x in imgs]
    if len(set(shapes)) != 1:
        raise ValueError(f"images must have one shape, got {', '.join(map(str, shapes))}")


def _grey_triplet(a: np.ndarray, b: np.ndarray, f: np.ndarray):
    _check_same_shape(a, b, f)
    return _grey(a), _grey(b), _grey(f)


# ----------------------------------------------------------------------------- F-only metrics

def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(np.sum(p * np.log2(1.0 / p)))  # log2(1/p) keeps a constant image at +0.0


def entropy(f: np.ndarray) -> float:
    """EN: entropy (bits) of the 256-bin grey histogram of ``f``."""
    g = to_gray8(f)
    return _entropy_bits(np.bincount(g.ravel(), minlength=256))


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
    _check_same_shape(x, y)
    gx, gy = (to_gray8(img).ravel().astype(np.intp) for img in (x, y))
    joint = np.bincount(gx * 256 + gy, minlength=256 * 256)
    h_x = _entropy_bits(np.bincount(gx, minlength=256))
    h_y = _entropy_bits(np.bincount(gy, minlength=256))
    # Clamp the ~1e-16 negative rounding residue of independent images.
    return max(h_x + h_y - _entropy_bits(joint), 0.0)


def fusion_mi(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """MI = MI(A, F) + MI(B, F), in bits (summed over the two sources)."""
    _check_same_shape(a, b, f)
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


def _gauss_1d(size: int, sigma: float) -> np.ndarray:
    t = np.arange(size) - (size - 1) / 2.0
    w = np.exp(-(t**2) / (2.0 * sigma**2))
    return w / w.sum()


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
    _check_same_shape(ref, dist)
    x, y = _grey(ref), _grey(dist)
    num = den = 0.0
    for scale in range(_VIF_SCALES):
        size = 2 ** (_VIF_SCALES - scale) + 1
        w = _gauss_1d(size, size / 5.0)
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
        num += np.log10(1.0 + gain**2 * var_x / (noise + _VIF_NOISE_VAR)).sum()
        den += np.log10(1.0 + var_x / _VIF_NOISE_VAR).sum()
    return float(num / den) if den > 0 else 0.0


def fusion_vif(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """VIF = VIFp(A, F) + VIFp(B, F) (Sheikh & Bovik pixel-domain VIF, summed; not Han et al.)."""
    _check_same_shape(a, b, f)
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
            x, y, data_range=data_range, gaussian_weights=True, sigma=_SSIM_SIGMA,
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
    _check_same_shape(a, b, f)
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

def _unit_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"paper_metrics expects float images in [0, 1], got dtype {x.dtype}")
    if x.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D image, got shape {x.shape}")
    _check_finite(x)
    if x.min() < -_RANGE_TOL or x.max() > 1 + _RANGE_TOL:
        raise ValueError("float image values must lie in [0, 1]")
    return np.clip(x.astype(np.float64), 0.0, 1.0)


def paper_metrics(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """The paper's protocol on float images in [0, 1] (2D or 3D), no 8-bit conversion.

    Returns ``{"SSIM": (SSIM(A,F) + SSIM(B,F)) / 2, "PSNR": (PSNR(A,F) + PSNR(B,F)) / 2}``
    with SSIM: Gaussian window 11, sigma 1.5, data range 1; PSNR: 10 log10(1 / MSE) in dB,
    ``inf`` for an identical pair (so the mean is ``inf`` if either pair is identical).
    """
    _check_same_shape(a, b, f)
    xa, xb, xf = _unit_float(a), _unit_float(b), _unit_float(f)

    def psnr(x: np.ndarray) -> float:
        mse = float(np.mean((x - xf) ** 2))
        return float(10.0 * np.log10(1.0 / mse)) if mse > 0 else float("inf")

    return {
        "SSIM": (_ssim(xa, xf, 1.0) + _ssim(xb, xf, 1.0)) / 2.0,
        "PSNR": (psnr(xa) + psnr(xb)) / 2.0,
    }


# ----------------------------------------------------------------------------- volumes

# Scale weights of multi-scale SSIM (Wang, Simoncelli & Bovik 2003), finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SSIM_RADIUS = 5  # the 11-sample Gaussian window of SSIM


def _ssim_and_cs(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term (Gaussian window 11, sigma 1.5), over the
    map without a window-radius border, for 2D or 3D float64 arrays."""
    def blur(v):
        return ndimage.gaussian_filter(v, _SSIM_SIGMA, truncate=_SSIM_RADIUS / _SSIM_SIGMA)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    cs = (2 * cov + c2) / (vx + vy + c2)
    ssim_map = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1) * cs
    inner = tuple(slice(_SSIM_RADIUS, -_SSIM_RADIUS) for _ in x.shape)
    return float(ssim_map[inner].mean()), float(cs[inner].mean())


def _halve(x: np.ndarray) -> np.ndarray:
    """2x average pooling along every axis (an odd last row/column/slice is dropped)."""
    x = x[tuple(slice(0, n - n % 2) for n in x.shape)]
    for axis in range(x.ndim):
        x = 0.5 * (x.take(np.arange(0, x.shape[axis], 2), axis)
                   + x.take(np.arange(1, x.shape[axis], 2), axis))
    return x


def ms_ssim_scales(shape: tuple[int, ...]) -> int:
    """How many dyadic scales :func:`ms_ssim` uses for an image of ``shape``: up to five, while
    every side still exceeds the 11-sample window plus its border."""
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and min(shape) // 2 ** scales > 4 * _SSIM_RADIUS:
        scales += 1
    return scales


def ms_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """Multi-scale SSIM of two 2D or 3D images: prod_j cs_j^w_j * ssim_M^w_M over up to five
    dyadic scales. Scales stop while every side still exceeds the 11-sample window (plus its
    border), and the weights of the scales used are renormalised to sum to 1, so small
    images and brain-sized volumes (three or four scales) are measured too."""
    _check_same_shape(x, y)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D image, got shape {x.shape}")
    _check_finite(x), _check_finite(y)
    scales = ms_ssim_scales(x.shape)
    if min(x.shape) <= 2 * _SSIM_RADIUS:
        raise ValueError(f"image {x.shape} is smaller than the SSIM window")
    weights = np.array(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    result = 1.0
    for scale, weight in enumerate(weights):
        ssim_value, cs = _ssim_and_cs(x, y, data_range)
        term = ssim_value if scale == scales - 1 else cs
        result *= max(term, 0.0) ** weight
        x, y = _halve(x), _halve(y)
    return float(result)


def volume_metrics(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """Whole-volume quality of a fused volume, float [0, 1] (k, j, i) arrays of one shape:
    the paper's PSNR and SSIM (3D Gaussian window), MS-SSIM (3D) averaged over the two
    sources, and EN of F's 256-bin 8-bit histogram over all its voxels. MS-SSIM is left out
    of volumes too thin for two scales (``ms_ssim_scales``), where it would equal SSIM."""
    paper = paper_metrics(a, b, f)
    xa, xb, xf = _unit_float(a), _unit_float(b), _unit_float(f)
    grey = np.floor(xf * 255.0 + 0.5).astype(np.uint8)
    result = {"PSNR": paper["PSNR"], "SSIM": paper["SSIM"]}
    if ms_ssim_scales(xf.shape) > 1:
        result["MS-SSIM"] = (ms_ssim(xa, xf) + ms_ssim(xb, xf)) / 2.0
    return result | {"EN": _entropy_bits(np.bincount(grey.ravel(), minlength=256))}
