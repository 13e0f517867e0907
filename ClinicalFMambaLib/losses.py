"""The unsupervised fusion loss: intensity, gradient and SSIM terms (2D and 3D)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_WEIGHTS = {2: (2.0, 10.0, 5.0), 3: (2.0, 10.0, 1.0)}  # (intensity, gradient, SSIM)


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter over every spatial axis ('valid' borders, as in SSIM)."""
    dims = x.dim() - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    for axis in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = window.numel()
        x = conv(x, window.view(shape).to(x))
    return x


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of (B, 1, *grid) tensors, Gaussian window 11, sigma 1.5."""
    window = _gaussian()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _blur(x, window), _blur(y, window)
    vx = _blur(x * x, window) - mx ** 2
    vy = _blur(y * y, window) - my ** 2
    cov = _blur(x * y, window) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.mean()


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of every 2D plane: in 2D the image; in 3D the slices of all three axes,
    summed, so edges across slices count as much as edges within them."""
    smooth, diff = torch.tensor([1.0, 2.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0])
    kernel = (smooth[:, None] * diff[None, :]).to(x)  # responds to changes along the 2nd axis
    if x.dim() == 4:
        gx = F.conv2d(x, kernel.view(1, 1, 3, 3), padding=1)
        gy = F.conv2d(x, kernel.t().reshape(1, 1, 3, 3), padding=1)
        return gx.abs() + gy.abs()
    total = 0
    for plane in ((1, 2), (0, 2), (0, 1)):  # (D,H,W) axes spanning each slice orientation
        for k in (kernel, kernel.t()):
            shape = [1, 1, 1, 1, 1]
            shape[2 + plane[0]], shape[2 + plane[1]] = 3, 3
            padding = [1 if a in plane else 0 for a in range(3)]
            total = total + F.conv3d(x, k.reshape(shape), padding=padding).abs()
    return total


def fusion_loss(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Total loss and its terms (floats) for logging."""
    w_int, w_grad, w_ssim = LOSS_WEIGHTS[fused.dim() - 2]
    l_int = (fused - torch.maximum(a, b)).abs().mean()
    l_grad = (sobel_magnitude(fused) - torch.maximum(sobel_magnitude(a), sobel_magnitude(b))).abs().mean()
    l_ssim = 1 - 0.5 * (ssim(fused, a) + ssim(fused, b))
    total = w_int * l_int + w_grad * l_grad + w_ssim * l_ssim
    return total, {"int": l_int.item(), "grad": l_grad.item(), "ssim": l_ssim.item()}
