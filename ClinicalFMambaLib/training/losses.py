"""The unsupervised fusion loss: intensity, gradient and SSIM terms (2D and 3D)."""

from __future__ import annotations

import torch

from ..core.filters import gaussian_window, local_moments, sobel_magnitude, ssim_from_moments

LOSS_WEIGHTS = {2: (2.0, 10.0, 5.0), 3: (2.0, 10.0, 1.0)}  # (intensity, gradient, SSIM)


class FusionLoss:
    """The loss against one fixed pair (A, B): what depends on the sources alone (their
    maximum, Sobel magnitudes, local SSIM moments) is computed once, so minimising over F
    (fusion_targets.py) costs less than half as much per step as ``fusion_loss``."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.weights = LOSS_WEIGHTS[a.dim() - 2]
        self.window = gaussian_window()
        self.sources = [(x, *local_moments(x, self.window)) for x in (a, b)]
        self.max_intensity = torch.maximum(a, b)
        self.max_gradient = torch.maximum(sobel_magnitude(a), sobel_magnitude(b))

    def __call__(self, fused: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Total loss and its terms (floats) for logging."""
        w_int, w_grad, w_ssim = self.weights
        l_int = (fused - self.max_intensity).abs().mean()
        l_grad = (sobel_magnitude(fused) - self.max_gradient).abs().mean()
        moments = local_moments(fused, self.window)
        l_ssim = 1 - 0.5 * sum(ssim_from_moments(fused, *moments, *source, self.window)
                               for source in self.sources)
        total = w_int * l_int + w_grad * l_grad + w_ssim * l_ssim
        return total, {"int": l_int.item(), "grad": l_grad.item(), "ssim": l_ssim.item()}


def fusion_loss(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Total loss and its terms (floats) for logging."""
    return FusionLoss(a, b)(fused)
