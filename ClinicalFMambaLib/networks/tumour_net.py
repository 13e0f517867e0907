"""A small 2D U-Net that maps an axial brain slice to per-pixel tumour evidence.

The network sees the slice and its left-right mirror image as two channels: the crop is
centred on the brain, so the mirror puts the other hemisphere at the same pixel and the
network can use the asymmetry that most tumours show. Its output logit map is the heatmap
(after a sigmoid) and, pooled over the most suspicious pixels, the slice's tumour score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_SEG_ARCH = {"widths": [8, 16, 32, 64]}
# Pixels pooled into a slice's score: about 0.2 cm^2 at the usual 1.3 mm per pixel.
TOP_PIXELS = 16


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True))


class TumourSegNet(nn.Module):
    """Encoder of ``len(widths)`` levels (each halving the resolution after the first),
    decoder with skip connections back to the input resolution, one logit per pixel."""

    def __init__(self, widths: list[int] | None = None) -> None:
        super().__init__()
        widths = list(widths or DEFAULT_SEG_ARCH["widths"])
        self.down = nn.ModuleList()
        c_in = 2
        for width in widths:
            self.down.append(_double_conv(c_in, width))
            c_in = width
        self.up = nn.ModuleList(
            _double_conv(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1))
        self.out = nn.Conv2d(widths[0], 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) slices in [0, 1] -> (N, 1, S, S) logits; S divisible by 2^(levels-1)."""
        x = torch.cat([images, images.flip(-1)], 1) * 2 - 1
        skips = []
        for index, block in enumerate(self.down):
            if index:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for index in reversed(range(len(self.up))):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.up[index](torch.cat([x, skips[index]], 1))
        return self.out(x)


def slice_logits(pixel_logits: torch.Tensor, top: int = TOP_PIXELS) -> torch.Tensor:
    """(N, 1, S, S) pixel logits -> (N,) slice logits: the mean of the ``top`` largest."""
    return pixel_logits.flatten(1).topk(top, dim=1).values.mean(1)


def build_seg_model(config: dict) -> TumourSegNet:
    return TumourSegNet(**{**DEFAULT_SEG_ARCH, **config.get("arch", {})})
