"""Grain in flat regions: how much voxel-scale texture a fused volume has where both sources
are flat (no edge, no structure), measured against the sources' own.

A fusion that sharpens indiscriminately (e.g. trained to raise SF and AG) amplifies the sources'
noise there, which reads as a mottled, grainy texture. The measure: the standard deviation of
the high-pass residual (the volume minus a Gaussian-smoothed copy) over the voxels where both
sources' smoothed gradient magnitude is in the lowest ``FLAT_QUANTILE`` of the brain. The same
residual in torch (``high_pass``, ``noise_excess``) penalises grain during training.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

FLAT_QUANTILE = 30.0  # percent of the brain's voxels, per source, counted as flat
GRADIENT_SIGMA = 1.5  # voxels: scale at which "flat" is judged (above the noise)
HIGH_PASS_SIGMA = 1.0  # voxels: the residual x - G(x) keeps the voxel-scale texture
ERODE = 3  # voxels: the brain's rim (an edge against the background) is not flat
_RADIUS = 4  # Gaussian taps each side (scipy's default truncate=4 at sigma 1)


def flat_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Voxels inside the (eroded) signal of ``a`` or ``b`` where both are flat (above)."""
    if a.shape != b.shape:
        raise ValueError(f"sources differ in shape: {a.shape} vs {b.shape}")
    brain = ndimage.binary_erosion((a > 0) | (b > 0), iterations=ERODE)
    mask = brain.copy()
    if not brain.any():
        return mask
    for source in (a, b):
        gradient = ndimage.gaussian_gradient_magnitude(source.astype(np.float32), GRADIENT_SIGMA)
        mask &= gradient < np.percentile(gradient[brain], FLAT_QUANTILE)
    return mask


def flat_noise(x: np.ndarray, mask: np.ndarray) -> float:
    """Standard deviation of ``x - G(x)`` (Gaussian, ``HIGH_PASS_SIGMA``) over ``mask``."""
    if not mask.any():
        raise ValueError("no flat voxels to measure")
    x = x.astype(np.float32)
    residual = x - ndimage.gaussian_filter(x, HIGH_PASS_SIGMA, mode="mirror")
    return float(residual[mask].std())


def _taps() -> torch.Tensor:
    x = torch.arange(-_RADIUS, _RADIUS + 1, dtype=torch.float32)
    taps = torch.exp(-0.5 * (x / HIGH_PASS_SIGMA) ** 2)
    return taps / taps.sum()


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """``x - G(x)`` of (N, 1, D, H, W) volumes, as ``flat_noise``'s residual (mirror border)."""
    taps, smooth = _taps().to(x), x
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(taps)
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = _RADIUS  # F.pad lists W first
        smooth = F.conv3d(F.pad(smooth, pad, mode="reflect"), taps.view(shape))
    return x - smooth


def noise_excess(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of max(0, flat noise of ``fused`` / flat noise of max(A, B) - 1):
    grain beyond the max fusion's (the network's prior), which passes the sources' own noise.
    ``mask``: (N, 1, D, H, W) bool of ``flat_mask``; a volume without flat voxels counts 0."""
    def rms(x: torch.Tensor) -> torch.Tensor:
        residual = high_pass(x) * mask
        count = mask.flatten(1).sum(1).clamp_min(1)
        mean = residual.flatten(1).sum(1) / count
        return ((residual.flatten(1) ** 2).sum(1) / count - mean ** 2).clamp_min(1e-12).sqrt()

    with torch.no_grad():
        reference = rms(torch.maximum(a, b))
    ratio = rms(fused) / reference.clamp_min(1e-6)
    has_flat = mask.flatten(1).any(1)
    return torch.where(has_flat, (ratio - 1).clamp_min(0), torch.zeros_like(ratio)).mean()
