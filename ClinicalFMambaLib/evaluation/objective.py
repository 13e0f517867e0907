"""A training objective that rewards what the field's 8-bit fusion metrics measure.

The paper's loss (training/losses.py) pulls the fused image towards the voxel-wise maximum and the
sources' strongest gradients; its optimum sits close to max fusion and loses to the classical
baselines on most of the ten metrics used to compare fusion methods (metrics.py). This module
gives differentiable versions of nine of them (all but PSNR, which is maximised by the mean of
the sources alone; histograms are soft-binned) that agree with metrics.py on 8-bit images, and
an objective that, per training image, scores the network's output against the best of the
mean / max / Laplacian baselines on that same image. Each metric's reward stops at a small
margin above the best baseline, so no single metric (e.g. sharpness) can be bought by giving
up the others.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..core.filters import DIFF, SMOOTH, blur, filter1d, ssim
from ..fusion.baselines import BASELINES
from .metrics import (QABF_DA, QABF_DG, QABF_KA, QABF_KG, QABF_TA, QABF_TG, VIF_NOISE_VAR,
                      VIF_SCALES, _gauss_1d)

OBJECTIVE_METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")
# An emphasis value e in [0, 1] trades the detail metrics against the others (fidelity to the
# sources): the detail terms weigh DETAIL_WEIGHT[0] at e = 0 up to DETAIL_WEIGHT[1] at e = 1
# and their gain is rewarded up to ``margin`` + e * EXTRA_MARGIN over the best baseline
# (published methods lead the baselines by 5-16 % on them, docs/results.md); the fidelity
# terms keep their weights and are rewarded up to ``margin`` + (1 - e) * EXTRA_MARGIN. With
# the fixed margin alone, metrics already past it resist nothing and the two ends barely
# differ.
DETAIL_METRICS = ("EN", "SF", "AG", "Qabf")
DETAIL_WEIGHT = (0.25, 2.0)
EXTRA_MARGIN = 0.27


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


def mutual_information(source: torch.Tensor, grey: torch.Tensor,
                       grey_entropy: torch.Tensor | None = None) -> torch.Tensor:
    """MI in bits between an 8-bit ``source`` and ``grey`` from 256-bin marginals and the
    256x256 joint histogram, ``grey`` soft-binned (as metrics.mutual_information on 8-bit
    values). ``grey_entropy``: ``entropy(grey)`` if the caller has it already."""
    levels = torch.floor(source.detach().clamp(0, 255) + 0.5)  # as metrics.to_gray8
    joint = _soft_histogram(grey, offset=levels.flatten(1).long() * 257)
    marginal = _soft_histogram(levels)[:, :256]
    if grey_entropy is None:
        grey_entropy = entropy(grey)
    return (_entropy_bits(marginal) + grey_entropy - _entropy_bits(joint)).clamp_min(0)


def vifp(ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Pixel-domain multi-scale VIF of ``dist`` against ``ref`` (grey levels), as metrics.vifp."""
    num = den = 0
    for scale in range(VIF_SCALES):
        size = 2 ** (VIF_SCALES - scale) + 1
        taps = _gauss_1d(size, size / 5).tolist()  # filtered 'valid', as in metrics.vifp
        if scale > 0:
            ref = blur(ref, taps)[..., ::2, ::2]
            dist = blur(dist, taps)[..., ::2, ::2]
        if min(ref.shape[-2:]) < size:
            break
        mx, my = blur(ref, taps), blur(dist, taps)
        vx = (blur(ref * ref, taps) - mx ** 2).clamp_min(0)
        vy = (blur(dist * dist, taps) - my ** 2).clamp_min(0)
        cov = blur(ref * dist, taps) - mx * my
        gain = (cov / (vx + 1e-10)).clamp_min(0)
        noise = (vy - gain * cov).clamp_min(1e-10)
        num = num + _sum_hw(torch.log10(1 + gain ** 2 * vx / (noise + VIF_NOISE_VAR)))
        den = den + _sum_hw(torch.log10(1 + vx / VIF_NOISE_VAR))
    return num / den.clamp_min(1e-10)


def _edges(grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel strength and orientation folded into [-pi/2, pi/2) (reflect border)."""
    padded = F.pad(grey, (1, 1, 1, 1), mode="reflect")
    gx = filter1d(filter1d(padded, DIFF, axis=1), SMOOTH, axis=0)
    gy = filter1d(filter1d(padded, DIFF, axis=0), SMOOTH, axis=1)
    angle = torch.remainder(torch.atan2(gy, gx) + math.pi / 2, math.pi) - math.pi / 2
    return torch.sqrt(gx ** 2 + gy ** 2 + 1e-6), angle


def qabf(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Qabf of Xydeas & Petrovic (grey levels), as metrics.qabf."""
    (sa, oa), (sb, ob), (sf, of) = _edges(a), _edges(b), _edges(f)

    def preserved(strength: torch.Tensor, orientation: torch.Tensor) -> torch.Tensor:
        ratio = torch.minimum(strength, sf) / torch.maximum(strength, sf)
        parallel = torch.abs(torch.abs(orientation - of) - math.pi / 2) / (math.pi / 2)
        return (QABF_TG / (1 + torch.exp(QABF_KG * (ratio - QABF_DG)))
                * QABF_TA / (1 + torch.exp(QABF_KA * (parallel - QABF_DA))))

    return _sum_hw(preserved(sa, oa) * sa + preserved(sb, ob) * sb) / _sum_hw(sa + sb)


def _correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xc, yc = x - _mean_hw(x)[..., None, None], y - _mean_hw(y)[..., None, None]
    return _sum_hw(xc * yc) / torch.sqrt(_sum_hw(xc ** 2) * _sum_hw(yc ** 2) + 1e-6)


def metric_surrogates(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> dict[str, torch.Tensor]:
    """The metrics of ``OBJECTIVE_METRICS`` for (N, 1, H, W) images in [0, 1]: one value
    per image, on the 8-bit protocol's grey-level scale (metrics.fusion_metrics)."""
    ga, gb, gf = a * 255, b * 255, f * 255
    dx, dy = gf[..., :, 1:] - gf[..., :, :-1], gf[..., 1:, :] - gf[..., :-1, :]
    fused_entropy = entropy(gf)  # shared by EN and both MI terms
    values = {
        "EN": fused_entropy,
        "SD": gf.flatten(1).std(1, unbiased=False),
        "SF": torch.sqrt(_mean_hw(dx ** 2) + _mean_hw(dy ** 2)),
        "AG": _mean_hw(torch.sqrt((dy[..., :, :-1] ** 2 + dx[..., :-1, :] ** 2) / 2 + 1e-6)),
        "MI": (mutual_information(ga, gf, fused_entropy)
               + mutual_information(gb, gf, fused_entropy)),
        "SCD": _correlation(gf - gb, ga) + _correlation(gf - ga, gb),
        "VIF": vifp(ga, gf) + vifp(gb, gf),
        "Qabf": qabf(ga, gb, gf),
        "SSIM": torch.stack([ssim(f[i:i + 1], a[i:i + 1]) + ssim(f[i:i + 1], b[i:i + 1])
                             for i in range(len(f))]),
    }
    return {name: value.reshape(len(f)) for name, value in values.items()}


def axial_slices(x: torch.Tensor, step: int) -> torch.Tensor:
    """(N, 1, D, H, W) volumes as (N * ceil(D / step), 1, H, W) images: every ``step``-th
    slice of the first spatial axis (the axial slices of a (z, y, x) volume)."""
    return x[:, :, ::step].transpose(1, 2).flatten(0, 1)


class MetricObjective:
    """Loss = minus the sum over ``OBJECTIVE_METRICS`` of each metric's gain over the best
    baseline on the same image, relative to that baseline's batch mean and capped at
    ``margin``; a shortfall counts ``deficit_weight`` times (above 1, the metrics still behind
    a baseline pull harder than those already ahead). ``metric_weights`` scales single
    metrics' terms (e.g. {"MI": 0} leaves MI out; unnamed metrics count once). 3D batches are
    scored on every ``slice_step``-th axial slice, the baselines being computed on the whole
    patch (as they are on whole volumes)."""

    def __init__(self, margin: float = 0.03, slice_step: int = 4, deficit_weight: float = 1.0,
                 metric_weights: dict[str, float] | None = None):
        unknown = set(metric_weights or {}) - set(OBJECTIVE_METRICS)
        if unknown:
            raise ValueError(f"unknown metric(s) {sorted(unknown)}: the objective has "
                             f"{', '.join(OBJECTIVE_METRICS)}")
        self.margin, self.slice_step, self.deficit_weight = margin, slice_step, deficit_weight
        self.metric_weights = {k: 1.0 for k in OBJECTIVE_METRICS} | dict(metric_weights or {})

    def __call__(self, fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                 emphasis: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """``emphasis``: weight the DETAIL_METRICS' terms by it (above); None: as given."""
        with torch.no_grad():
            sources = [x.detach().cpu().numpy()[:, 0] for x in (a, b)]
            references = [torch.from_numpy(np.stack([fn(x, y) for x, y in zip(*sources)]))[:, None]
                          for fn in BASELINES.values()]
        if fused.dim() == 5:
            fused, a, b, *references = (axial_slices(x, self.slice_step)
                                        for x in (fused, a, b, *references))
        with torch.no_grad():
            scores = [metric_surrogates(a, b, r.to(a)) for r in references]
            best = {k: torch.stack([s[k] for s in scores]).max(0).values for k in OBJECTIVE_METRICS}
        ours = metric_surrogates(a, b, fused)
        gains = {k: ((ours[k] - best[k]) / (best[k].abs().mean() + 1e-6)).mean()
                 for k in OBJECTIVE_METRICS}
        weights, margins = dict(self.metric_weights), dict.fromkeys(gains, self.margin)
        if emphasis is not None:
            low, high = DETAIL_WEIGHT
            for k in gains:
                detail = k in DETAIL_METRICS
                weights[k] *= low + (high - low) * emphasis if detail else 1.0
                margins[k] += EXTRA_MARGIN * (emphasis if detail else 1.0 - emphasis)
        loss = -sum(weights[k]
                    * (g.clamp(max=margins[k]) + (self.deficit_weight - 1) * g.clamp(max=0))
                    for k, g in gains.items())
        return loss, {k: g.item() for k, g in gains.items()}
