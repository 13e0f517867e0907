"""Differentiable versions of nine of the field's ten 8-bit fusion metrics (all but PSNR,
which the mean of the sources alone maximises), equal to evaluation.metrics on 8-bit images
(histograms soft-binned, so that they have gradients in between).

What a metric needs of the two sources alone (their grey levels and histograms, Sobel edges,
SSIM moments, VIF's reference statistics) is computed once per pair (``SourceTerms``) and
shared by every fused image scored against them: the objective scores three baselines and
the network's output on one pair, and a per-image refinement scores one image per step.
Terms of the fused image that two metrics share (its entropy, VIF's and SSIM's local moments)
are computed once, several images at a time as channels of one filter call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.filters import DIFF, SMOOTH, blur, filter1d, gaussian_window, local_moments, ssim_map
from ..core.metric_constants import (QABF_DA, QABF_DG, QABF_KA, QABF_KG, QABF_TA, QABF_TG,
                                     VIF_NOISE_VAR, VIF_SCALES, gauss_1d)

OBJECTIVE_METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")
# VIF's window per scale: 17, 9, 5, 3 taps, sigma = size / 5 ('valid' filtering).
VIF_TAPS = [gauss_1d(2 ** (VIF_SCALES - s) + 1, (2 ** (VIF_SCALES - s) + 1) / 5).tolist()
            for s in range(VIF_SCALES)]
SSIM_WINDOW = gaussian_window()


def _sum_hw(x: torch.Tensor) -> torch.Tensor:
    return x.sum((-2, -1))


def _mean_hw(x: torch.Tensor) -> torch.Tensor:
    return x.mean((-2, -1))


def _soft_histogram(grey: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image histogram of grey levels over 257 bins, each pixel split between its two
    nearest levels (equal to the hard histogram on 8-bit values, differentiable in between).
    ``offset`` (a multiple of 257 per pixel: another image's level) makes it a joint histogram."""
    values = grey.flatten(1).clamp(0, 255)
    low = values.detach().floor().long()
    frac = values - low
    if offset is not None:
        low = low + offset
    size = 257 if offset is None else 256 * 257
    hist = torch.zeros(values.shape[0], size, dtype=values.dtype, device=values.device)
    return hist.scatter_add(1, low, 1 - frac).scatter_add(1, low + 1, frac) / values.shape[1]


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log2(p + 1e-12)).sum(1)


def entropy(grey: torch.Tensor) -> torch.Tensor:
    """EN in bits of the 256-bin histogram of grey levels (soft binning, _soft_histogram)."""
    return _entropy_bits(_soft_histogram(grey)[:, :256])


def _source_levels(source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(joint-histogram offsets, entropy of the 256-bin marginal) of an 8-bit ``source``."""
    levels = torch.floor(source.detach().clamp(0, 255) + 0.5)  # as metrics.to_gray8
    return levels.flatten(1).long() * 257, _entropy_bits(_soft_histogram(levels)[:, :256])


def _mutual_information(levels: tuple[torch.Tensor, torch.Tensor], grey: torch.Tensor,
                        grey_entropy: torch.Tensor) -> torch.Tensor:
    offset, source_entropy = levels
    joint = _soft_histogram(grey, offset=offset)
    return (source_entropy + grey_entropy - _entropy_bits(joint)).clamp_min(0)


def mutual_information(source: torch.Tensor, grey: torch.Tensor,
                       grey_entropy: torch.Tensor | None = None) -> torch.Tensor:
    """MI in bits between an 8-bit ``source`` and ``grey`` from 256-bin marginals and the
    256x256 joint histogram, ``grey`` soft-binned (as metrics.mutual_information on 8-bit
    values). ``grey_entropy``: ``entropy(grey)`` if the caller has it already."""
    return _mutual_information(_source_levels(source), grey,
                               entropy(grey) if grey_entropy is None else grey_entropy)


def _vif_reference(ref: torch.Tensor) -> tuple[list, torch.Tensor]:
    """VIF's statistics of a reference (grey levels): per scale (ref, local mean, local
    variance), and the denominator (its information), as metrics.vifp."""
    scales, den = [], 0
    for scale, taps in enumerate(VIF_TAPS):
        if scale > 0:
            ref = blur(ref, taps)[..., ::2, ::2]
        if min(ref.shape[-2:]) < len(taps):
            break
        mean, square = blur(torch.cat([ref, ref * ref], 1), taps).split(1, 1)
        variance = (square - mean ** 2).clamp_min(0)
        scales.append((ref, mean, variance))
        den = den + _sum_hw(torch.log10(1 + variance / VIF_NOISE_VAR))
    return scales, torch.as_tensor(den).clamp_min(1e-10)


def _vif(references: tuple, dist: torch.Tensor) -> torch.Tensor:
    """VIFp(A, F) + VIFp(B, F) from both references' statistics (_vif_reference)."""
    (scales_a, den_a), (scales_b, den_b) = references
    nums = [0, 0]
    for scale, ((ra, mxa, vxa), (rb, mxb, vxb)) in enumerate(zip(scales_a, scales_b)):
        taps = VIF_TAPS[scale]
        if scale > 0:
            dist = blur(dist, taps)[..., ::2, ::2]
        my, square, cross_a, cross_b = blur(
            torch.cat([dist, dist * dist, ra * dist, rb * dist], 1), taps).split(1, 1)
        vy = (square - my ** 2).clamp_min(0)
        for i, (mx, vx, cross) in enumerate(((mxa, vxa, cross_a), (mxb, vxb, cross_b))):
            cov = cross - mx * my
            gain = (cov / (vx + 1e-10)).clamp_min(0)
            noise = (vy - gain * cov).clamp_min(1e-10)
            nums[i] = nums[i] + _sum_hw(torch.log10(1 + gain ** 2 * vx / (noise + VIF_NOISE_VAR)))
    return nums[0] / den_a + nums[1] / den_b


def _edges(grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel strength and orientation folded into [-pi/2, pi/2) (reflect border)."""
    padded = F.pad(grey, (1, 1, 1, 1), mode="reflect")
    gx = filter1d(filter1d(padded, DIFF, axis=1), SMOOTH, axis=0)
    gy = filter1d(filter1d(padded, DIFF, axis=0), SMOOTH, axis=1)
    angle = torch.remainder(torch.atan2(gy, gx) + math.pi / 2, math.pi) - math.pi / 2
    return torch.sqrt(gx ** 2 + gy ** 2 + 1e-6), angle


def _qabf(edges_a: tuple, edges_b: tuple, grey: torch.Tensor) -> torch.Tensor:
    """Qabf of Xydeas & Petrovic (grey levels) from the sources' edges, as metrics.qabf."""
    sf, of = _edges(grey)

    def preserved(strength: torch.Tensor, orientation: torch.Tensor) -> torch.Tensor:
        ratio = torch.minimum(strength, sf) / torch.maximum(strength, sf)
        parallel = torch.abs(torch.abs(orientation - of) - math.pi / 2) / (math.pi / 2)
        return (QABF_TG / (1 + torch.exp(QABF_KG * (ratio - QABF_DG)))
                * QABF_TA / (1 + torch.exp(QABF_KA * (parallel - QABF_DA))))

    (sa, oa), (sb, ob) = edges_a, edges_b
    return _sum_hw(preserved(sa, oa) * sa + preserved(sb, ob) * sb) / _sum_hw(sa + sb)


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - _mean_hw(x)[..., None, None]


def _correlation(x: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of ``x`` with ``yc``, an image already centred."""
    xc = _centred(x)
    return _sum_hw(xc * yc) / torch.sqrt(_sum_hw(xc ** 2) * _sum_hw(yc ** 2) + 1e-6)


class SourceTerms:
    """The two sources' own terms of the metrics, for (N, 1, H, W) images in [0, 1]; score
    fused images against them with ``metrics``."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        with torch.no_grad():
            self.a, self.b = a, b
            self.grey = (a * 255, b * 255)
            self.centred = tuple(_centred(g) for g in self.grey)
            self.levels = tuple(_source_levels(g) for g in self.grey)
            self.vif = tuple(_vif_reference(g) for g in self.grey)
            self.edges = tuple(_edges(g) for g in self.grey)
            self.moments = tuple(local_moments(x, SSIM_WINDOW) for x in (a, b))

    def metrics(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        """The metrics of ``OBJECTIVE_METRICS`` of fused images ``f`` (N, 1, H, W) in [0, 1]:
        one value per image, on the 8-bit protocol's scale (metrics.fusion_metrics)."""
        (ga, gb), gf = self.grey, f * 255
        dx, dy = gf[..., :, 1:] - gf[..., :, :-1], gf[..., 1:, :] - gf[..., :-1, :]
        fused_entropy = entropy(gf)  # shared by EN and both MI terms
        mean, square, cross_a, cross_b = blur(
            torch.cat([f, f * f, f * self.a, f * self.b], 1), SSIM_WINDOW).split(1, 1)
        variance = square - mean ** 2
        values = {
            "EN": fused_entropy,
            "SD": gf.flatten(1).std(1, unbiased=False),
            "SF": torch.sqrt(_mean_hw(dx ** 2) + _mean_hw(dy ** 2)),
            "AG": _mean_hw(torch.sqrt((dy[..., :, :-1] ** 2 + dx[..., :-1, :] ** 2) / 2 + 1e-6)),
            "MI": sum(_mutual_information(levels, gf, fused_entropy) for levels in self.levels),
            "SCD": _correlation(gf - gb, self.centred[0]) + _correlation(gf - ga, self.centred[1]),
            "VIF": _vif(self.vif, gf),
            "Qabf": _qabf(*self.edges, gf),
            "SSIM": sum(_mean_hw(ssim_map(mean, variance, ms, vs, cross - mean * ms))
                        for (ms, vs), cross in zip(self.moments, (cross_a, cross_b))),
        }
        return {name: value.reshape(len(f)) for name, value in values.items()}


def metric_surrogates(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> dict[str, torch.Tensor]:
    """The metrics of ``OBJECTIVE_METRICS`` of ``f`` against sources ``a`` and ``b`` ((N, 1,
    H, W) images in [0, 1]): one value per image, on the 8-bit protocol's scale."""
    return SourceTerms(a, b).metrics(f)
