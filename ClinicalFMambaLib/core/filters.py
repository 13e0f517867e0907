"""Differentiable image filters in torch for 2D and 3D batches (B, 1, *grid): separable
Gaussian blur as sums of shifted slices (faster on the CPU than single-channel
convolutions), SSIM and its local moments, Sobel gradient magnitude."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_window(size: int = 11, sigma: float = 1.5) -> list[float]:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).tolist()


def _pad_axis(x: torch.Tensor, dim: int, pad: int) -> torch.Tensor:
    return F.pad(x, [0, 0] * (x.dim() - 1 - dim) + [pad, pad])


def _shifted_sum(x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """sum_k taps[k] * x shifted by k: each product then each sum rounded as written out,
    into two buffers (fewer allocations, the same values)."""
    length = x.shape[dim] - len(taps) + 1
    out = term = None
    for offset, tap in enumerate(taps):
        if tap:
            piece = x.narrow(dim, offset, length)
            if out is None:
                out = tap * piece
            else:
                term = torch.mul(piece, tap, out=term)
                out.add_(term)
    return out


class _Correlate(torch.autograd.Function):
    """'Valid' correlation along one dimension whose backward pass is the correlation of the
    zero-padded gradient with the reversed taps: autograd's own backward of the slices
    would fill a zero image per tap, which costs twice the forward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
        ctx.taps, ctx.dim = taps, dim
        return _shifted_sum(x, taps, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        taps = ctx.taps[::-1]
        padded = _pad_axis(grad, ctx.dim, len(taps) - 1)
        length = padded.shape[ctx.dim] - len(taps) + 1
        out = torch.zeros_like(padded.narrow(ctx.dim, 0, length))
        for offset, tap in enumerate(taps):
            if tap:  # one fused pass per tap (a gradient need not round as the forward does)
                out.add_(padded.narrow(ctx.dim, offset, length), alpha=tap)
        return out, None, None


def filter1d(x: torch.Tensor, taps: list[float], axis: int, pad: int = 0) -> torch.Tensor:
    """Correlate ``x`` with ``taps`` along spatial ``axis`` (zero padding ``pad``; 0 keeps
    only the 'valid' part). A sum of shifted slices: on the CPU, single-channel
    convolutions take a slow im2col path, several times slower than this."""
    dim = 2 + axis
    if pad:
        x = _pad_axis(x, dim, pad)
    return _Correlate.apply(x, taps, dim)


def blur(x: torch.Tensor, window: list[float]) -> torch.Tensor:
    """Separable Gaussian filter over every spatial axis ('valid' borders, as in SSIM)."""
    for axis in range(x.dim() - 2):
        x = filter1d(x, window, axis)
    return x


def local_moments(x: torch.Tensor, window: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Local mean and variance of x under the SSIM window."""
    mean = blur(x, window)
    return mean, blur(x * x, window) - mean ** 2


def ssim_map(mx, vx, my, vy, cov, data_range: float = 1.0) -> torch.Tensor:
    """SSIM at every pixel from the local means, variances and covariance."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))


def ssim_from_moments(x, mx, vx, y, my, vy, window, data_range: float = 1.0) -> torch.Tensor:
    return ssim_map(mx, vx, my, vy, blur(x * y, window) - mx * my, data_range).mean()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of (B, 1, *grid) tensors, Gaussian window 11, sigma 1.5."""
    window = gaussian_window()
    return ssim_from_moments(x, *local_moments(x, window), y, *local_moments(y, window), window,
                              data_range)


SMOOTH, DIFF = [1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of every 2D plane (3x3 Sobel, zero padding): in 2D the image; in 3D the
    slices of all three axes, summed, so edges across slices count as much as edges within
    them."""
    planes = ((0, 1),) if x.dim() == 4 else ((1, 2), (0, 2), (0, 1))  # spatial axes per plane
    total = 0
    for first, second in planes:
        for smooth_axis, diff_axis in ((first, second), (second, first)):
            g = filter1d(filter1d(x, DIFF, diff_axis, pad=1), SMOOTH, smooth_axis, pad=1)
            total = total + g.abs()
    return total
