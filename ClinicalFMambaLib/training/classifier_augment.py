"""Augmentation of classifier training batches (geometry, imitated skull stripping,
intensity changes that imitate other MRI contrasts and fused images), in torch on whole
batches."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..clinical.volumes import BRAIN_BOX_MARGIN


def _random_curve(n: int, knots: int, monotonic: bool, generator: torch.Generator) -> torch.Tensor:
    """(n, knots) intensity look-up curves on [0, 1]."""
    if monotonic:
        steps = torch.rand(n, knots - 1, generator=generator) + 0.1
        curve = torch.cat([torch.zeros(n, 1), steps.cumsum(1)], 1)
        return curve / curve[:, -1:]
    # Background (0) stays black, as in fused images.
    return torch.cat([torch.zeros(n, 1), torch.rand(n, knots - 1, generator=generator)], 1)


def _apply_curve(x: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    knots = curve.shape[1]
    position = x.clamp(0, 1) * (knots - 1)
    low = position.floor().long().clamp(max=knots - 2)
    frac = position - low
    flat = low.flatten(1)
    c0 = torch.gather(curve, 1, flat).view_as(x)
    c1 = torch.gather(curve, 1, flat + 1).view_as(x)
    return c0 + frac * (c1 - c0)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-grid ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def _span_mask(foreground: torch.Tensor) -> torch.Tensor:
    """Filled silhouette: pixels between the first and last foreground pixel of both their
    row and their column (holes and concavities of a head are filled)."""
    def inside(fg: torch.Tensor) -> torch.Tensor:  # along the last axis
        index = torch.arange(fg.shape[-1]).expand_as(fg)
        first = torch.where(fg, index, fg.shape[-1]).amin(-1, keepdim=True)
        last = torch.where(fg, index, -1).amax(-1, keepdim=True)
        return (index >= first) & (index <= last)

    return inside(foreground) & inside(foreground.transpose(-1, -2)).transpose(-1, -2)


def strip_skull(batch: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Imitate skull stripping: zero all within ``depth`` pixels (per image) of the head's
    outline. Returns the stripped batch and each image's remaining-brain bounding box as
    (cy, cx, half side) in normalised [-1, 1] coordinates, square with BRAIN_BOX_MARGIN."""
    mask = _span_mask(batch[:, 0] > 0.1).float()[:, None]
    for step in range(int(depth.max())):
        eroded = -F.max_pool2d(-mask, 3, 1, 1)
        mask = torch.where((step < depth).view(-1, 1, 1, 1), eroded, mask)
    def extent(occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised centre and size of the occupied range along the last axis."""
        size = occupied.shape[-1]
        first = occupied.float().argmax(-1)
        last = size - 1 - occupied.flip(-1).float().argmax(-1)
        return (first + last + 1).float() / size - 1, (last - first + 1).float() / size

    cy, height = extent(mask[:, 0].amax(2) > 0)
    cx, width = extent(mask[:, 0].amax(1) > 0)
    half = (torch.maximum(height, width) * (1 + 2 * BRAIN_BOX_MARGIN)).clamp(max=1.0)
    box = torch.stack([cy, cx, half], 1)
    empty = mask.flatten(1).amax(1) == 0
    box[empty] = torch.tensor([0.0, 0.0, 1.0])
    return batch * mask, box


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random geometry and intensity changes of a (N, 1, H, W) batch in [0, 1].

    Skull stripping (then zoom to the brain, as ``prepare_volume`` crops) imitates the
    skull-stripped BraTS-style volumes that get fused. Intensity remapping (monotonic
    curves, gamma, contrast) and mixing with a non-monotonic remap of the image imitate other
    MRI contrasts and fused images; blur and noise imitate the smoother look of fused images
    and other scanners.
    """
    n = batch.shape[0]

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) < p).view(n, 1, 1, 1)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    x, box = batch.clone(), torch.tensor([[0.0, 0.0, 1.0]]).repeat(n, 1)
    strip = torch.nonzero(torch.rand(n, generator=generator) < 0.35).flatten()
    depth = (uniform(0.03, 0.1)[strip] * batch.shape[-1]).round()
    if len(strip):
        x[strip], box[strip] = strip_skull(batch[strip], depth)

    # Geometry: rotation, isotropic scale, translation, left-right flip in one affine warp,
    # composed with the zoom onto the stripped brain's box.
    angle = uniform(-15, 15) * math.pi / 180
    scale = uniform(0.85, 1.15) / box[:, 2]
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift_x = uniform(-0.08, 0.08) * box[:, 2] + box[:, 1]
    shift_y = uniform(-0.08, 0.08) * box[:, 2] + box[:, 0]
    theta = torch.stack([torch.stack([cos * flip, -sin, shift_x], 1),
                         torch.stack([sin * flip, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    x = torch.where(chance(0.4), _apply_curve(x, _random_curve(n, 6, True, generator)), x)
    mix = uniform(0.2, 0.5).view(n, 1, 1, 1)
    remix = (1 - mix) * x + mix * _apply_curve(x, _random_curve(n, 4, False, generator))
    x = torch.where(chance(0.2), remix, x)
    gamma = torch.exp(uniform(math.log(0.6), math.log(1.6))).view(n, 1, 1, 1)
    x = torch.where(chance(0.4), x.clamp_min(0) ** gamma, x)
    contrast = uniform(0.75, 1.25).view(n, 1, 1, 1)
    brightness = uniform(-0.05, 0.05).view(n, 1, 1, 1)
    x = torch.where(chance(0.4), x * contrast + brightness, x)
    sigma = float(uniform(0.4, 1.2)[0])
    x = torch.where(chance(0.25), _gaussian_blur(x, sigma), x)
    noise = torch.randn(x.shape, generator=generator) * uniform(0.0, 0.04).view(n, 1, 1, 1)
    x = torch.where(chance(0.2), x + noise, x)
    return x.clamp(0, 1)
