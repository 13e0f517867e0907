"""The ClinicalFMamba fusion network (2D and 3D share one definition).

shared dilated-gated CNN encoder -> per-modality latent Mamba stage -> cross-modal fusion
Mamba -> decoder (Mamba blocks, upsampling convs, cross-modal channel-attention skips) ->
1-channel sigmoid output, predicted as a correction to max(A, B) in logit space.
``spatial_dims`` picks Conv2d/Conv3d and the scan orders.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.filters import blur, gaussian_window
from .mamba_blocks import AXIAL_ONLY, CrossModalFusionMamba, MambaBlock


@dataclass(frozen=True)
class FusionConfig:
    """Defaults are the shipped, CPU-lean widths and depths (the default configurations, with
    their stem strides, are ``DEFAULT_CONFIGS``); the paper's is widths (32, 64, 128),
    latent_blocks 5 (see docs/results.md for the speed of each)."""

    spatial_dims: int = 2
    widths: tuple[int, int, int] = (16, 32, 64)
    dilations: tuple[int, int, int] = (1, 3, 5)
    latent_blocks: int = 2
    decoder_blocks: int = 1
    d_state: int = 8
    expand: int = 2
    # 2 runs the whole network at half resolution and upsamples its (smooth) correction to
    # the max-fusion prior, which keeps full-resolution detail: for volumes, full-resolution
    # 3x3x3 convolutions would otherwise dominate the cost.
    stem_stride: int = 1
    # 3D only, for the ablation: scan the axial raster alone instead of all three planes.
    axial_only_scan: bool = False
    # Hidden width of a full-resolution per-pixel MLP (1x1 convolutions) on the correction and
    # both inputs, added to the correction; 0 leaves it out. The metric optima of single images
    # owe their MI gain to a fine function of the two grey levels at each pixel, which the 3x3
    # refinement's eight channels cannot express (measured, and not bundled: docs/results.md).
    pixel_mlp: int = 0
    # Conditioned on an emphasis value e in [0, 1] (0: faithful to the sources, 1: sharper):
    # a small MLP of e scales and shifts the last decoder features and the full-resolution
    # refine stage's hidden features (FiLM). Trained with the detail metrics' terms of the
    # objective weighted by e (objective.metric_objective.MetricObjective, ``emphasis``).
    emphasis: bool = False
    # The sources' finest detail (at each pixel the larger-magnitude of their high-pass
    # residuals, Gaussian sigma DETAIL_SIGMA pixels: the Laplacian pyramid's choice on its
    # finest level) is added to the fused image with gain detail_gain, times e with the
    # emphasis. In 2D the network alone does not move its edge metrics with the objective's
    # weights (docs/results.md, "Emphasis"); the detail layer gives the control its range.
    detail_gain: float = 0.0
    # Each source's residual is first soft-thresholded at detail_shrink times its noise scale
    # (wavelet shrinkage), so edges pass and the sources' noise does not: 3D volumes are noisy
    # enough for unshrunk detail to bring back the grain (docs/results.md, "3D detail layer").
    detail_shrink: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "FusionConfig":
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
                  if k in cls.__dataclass_fields__}
        return cls(**values)


# The emphasis a conditioned network uses when none is given: the value with the best mean
# rank on the validation cases (docs/results.md, "Emphasis": with the bundled detail layer,
# 0.25 and 0.5 tie; without it, 0, 0.25 and 0.5 did).
DEFAULT_EMPHASIS = 0.25
DETAIL_SIGMA = 1.0
# The configurations train-fusion builds by default. The bundled 3D weights are this one;
# the bundled 2D weights are this one fine-tuned to stem stride 4 with an emphasis
# conditioning (train-fusion --stem-stride 4 --emphasis-conditioned; their file records it,
# Resources/weights/fusion2d.md). 3D keeps its full-resolution work to one strided stem
# convolution (`python scripts/benchmarks/profile_blocks.py --dim 3` times each stage).
DEFAULT_CONFIGS = {
    2: FusionConfig(stem_stride=2),
    3: FusionConfig(spatial_dims=3, widths=(16, 16, 32), stem_stride=2),
}


def image_batch(x: np.ndarray) -> torch.Tensor:
    """An image or volume as the networks' input layout: a (1, 1, *shape) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


class DilatedGatedBlock(nn.Module):
    """(3x3 conv) * LeakyReLU(1x1 conv) -> dilated 3x3 conv, plus a residual path."""

    def __init__(self, dims: int, cin: int, cout: int, dilation: int):
        super().__init__()
        conv = _conv(dims)
        self.value = conv(cin, cout, 3, padding=1)
        self.gate = conv(cin, cout, 1)
        self.dilated = conv(cout, cout, 3, padding=dilation, dilation=dilation)
        self.skip = conv(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.value(x) * F.leaky_relu(self.gate(x), 0.1)
        return F.leaky_relu(self.dilated(h), 0.1) + self.skip(x)


class Encoder(nn.Module):
    """Stem then three gated blocks with stride-2 downsampling between them."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        conv, (c1, c2, c3), (d1, d2, d3) = _conv(cfg.spatial_dims), cfg.widths, cfg.dilations
        self.stem = conv(1, c1, 3, stride=cfg.stem_stride, padding=1)
        self.block1 = DilatedGatedBlock(cfg.spatial_dims, c1, c1, d1)
        self.down1 = conv(c1, c2, 3, stride=2, padding=1)
        self.block2 = DilatedGatedBlock(cfg.spatial_dims, c2, c2, d2)
        self.down2 = conv(c2, c3, 3, stride=2, padding=1)
        self.block3 = DilatedGatedBlock(cfg.spatial_dims, c3, c3, d3)

    def forward(self, x: torch.Tensor):
        s1 = self.block1(F.leaky_relu(self.stem(x), 0.1))
        s2 = self.block2(F.leaky_relu(self.down1(s1), 0.1))
        s3 = self.block3(F.leaky_relu(self.down2(s2), 0.1))
        return s1, s2, s3


class CrossModalChannelAttention(nn.Module):
    """Skip connection: both modalities' shallow features, gated per channel by
    sigmoid(MLP(avg-pool) + MLP(max-pool)), projected to the decoder width."""

    def __init__(self, dims: int, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(4, 2 * channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * channels))
        self.proj = _conv(dims)(2 * channels, channels, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        both = torch.cat([a, b], dim=1)
        flat = both.flatten(2)
        weights = torch.sigmoid(self.mlp(flat.mean(-1)) + self.mlp(flat.amax(-1)))
        return self.proj(both * weights.view(*weights.shape, *([1] * (both.dim() - 2))))


class UpBlock(nn.Module):
    """Upsample x2, conv to the skip's width, add the attention skip, refine."""

    def __init__(self, dims: int, cin: int, cout: int):
        super().__init__()
        conv = _conv(dims)
        self.mode = "bilinear" if dims == 2 else "trilinear"
        self.reduce = conv(cin, cout, 3, padding=1)
        self.skip = CrossModalChannelAttention(dims, cout)
        self.refine = conv(cout, cout, 3, padding=1)

    def forward(self, x, skip_a, skip_b):
        x = F.interpolate(x, size=skip_a.shape[2:], mode=self.mode, align_corners=False)
        x = F.leaky_relu(self.reduce(x), 0.1) + self.skip(skip_a, skip_b)
        return F.leaky_relu(self.refine(x), 0.1)


class FusionNet(nn.Module):
    """Fuses two co-registered single-channel images/volumes in [0, 1] into one in [0, 1]."""

    def __init__(self, cfg: FusionConfig = DEFAULT_CONFIGS[2]):
        super().__init__()
        self.cfg = cfg
        dims, (c1, c2, c3) = cfg.spatial_dims, cfg.widths
        self.encoder = Encoder(cfg)
        if cfg.axial_only_scan and dims != 3:
            raise ValueError("axial_only_scan applies to 3D networks only")
        orders = AXIAL_ONLY if cfg.axial_only_scan else None

        def stage(n):
            return nn.Sequential(*[MambaBlock(c3, dims, cfg.d_state, cfg.expand, orders)
                                   for _ in range(n)])

        self.latent_a, self.latent_b = stage(cfg.latent_blocks), stage(cfg.latent_blocks)
        self.fusion = CrossModalFusionMamba(c3, dims, cfg.d_state, cfg.expand, orders)
        self.decoder_mamba = stage(cfg.decoder_blocks)
        self.up2 = UpBlock(dims, c3, c2)
        self.up1 = UpBlock(dims, c2, c1)
        # The head predicts a correction, in logit space, to the element-wise maximum of the
        # inputs, so the network learns what to change about max fusion rather than the
        # whole image. (A zero-initialised head barely moves: every layer before it starts
        # without gradient.)
        self.head = _conv(dims)(c1, 1, 3, padding=1)
        # With a strided stem the correction above is made at half resolution and is smooth;
        # a light full-resolution stage sees it with both inputs, so voxel-scale edges (what
        # the gradient term of the loss asks for) can be corrected too.
        self.refine = None
        if cfg.stem_stride > 1:
            conv = _conv(dims)
            self.refine = nn.Sequential(conv(3, 8, 3, padding=1), nn.LeakyReLU(0.1),
                                        conv(8, 1, 3, padding=1))
        self.film = None
        self.emphasis = DEFAULT_EMPHASIS  # what forward uses when it is given none
        if cfg.emphasis:
            if self.refine is None:
                raise ValueError("emphasis needs the full-resolution refine stage (stem_stride > 1)")
            self.film_channels = (c1, self.refine[0].out_channels)
            self.film = nn.Sequential(nn.Linear(1, 16), nn.SiLU(),
                                      nn.Linear(16, 2 * sum(self.film_channels)))
            # Zero output at first: scale 1, shift 0, the unconditioned network's features.
            nn.init.zeros_(self.film[-1].weight)
            nn.init.zeros_(self.film[-1].bias)
        if cfg.detail_gain < 0 or cfg.detail_shrink < 0:
            raise ValueError(f"detail_gain and detail_shrink must be at least 0, got "
                             f"{cfg.detail_gain} and {cfg.detail_shrink}")
        self.pixel = None
        if cfg.pixel_mlp:
            conv, width = _conv(dims), cfg.pixel_mlp
            self.pixel = nn.Sequential(conv(3, width, 1), nn.LeakyReLU(0.1),
                                       conv(width, width, 1), nn.LeakyReLU(0.1),
                                       conv(width, 1, 1))
            # Zero output at first: added to trained weights, it starts from their fusion.
            nn.init.zeros_(self.pixel[-1].weight)
            nn.init.zeros_(self.pixel[-1].bias)

    @property
    def multiple(self) -> int:
        """Input sizes must be multiples of this (``forward`` pads and crops for you)."""
        return 4 * self.cfg.stem_stride

    def _modulations(self, emphasis, batch: int, like: torch.Tensor) -> list[tuple]:
        """(scale, shift) per modulated stage for ``emphasis`` (a number, or one per image)."""
        e = torch.as_tensor(emphasis, dtype=like.dtype, device=like.device).reshape(-1, 1)
        if ((e < 0) | (e > 1)).any() or not torch.isfinite(e).all():
            raise ValueError(f"emphasis must lie in [0, 1], got {emphasis}")
        params = self.film(e.expand(batch, 1)).split(
            [n for c in self.film_channels for n in (c, c)], dim=1)
        shape = (batch, -1, *([1] * self.cfg.spatial_dims))
        return [(1 + params[2 * i].view(shape), params[2 * i + 1].view(shape))
                for i in range(len(self.film_channels))]

    def forward(self, a: torch.Tensor, b: torch.Tensor,
                emphasis: float | torch.Tensor | None = None) -> torch.Tensor:
        """``emphasis`` in [0, 1] (default ``self.emphasis``) for a conditioned network
        (``cfg.emphasis``); an unconditioned one refuses any."""
        if self.film is None and emphasis is not None:
            raise ValueError("this fusion network is not conditioned on an emphasis value")
        if a.shape != b.shape or a.dim() != self.cfg.spatial_dims + 2 or a.shape[1] != 1:
            raise ValueError(f"expected two (batch, 1, *grid) tensors of one shape with "
                             f"{self.cfg.spatial_dims} spatial dims; got {tuple(a.shape)} "
                             f"and {tuple(b.shape)}")
        grid = a.shape[2:]
        pad = []
        for size in reversed(grid):  # F.pad lists the last axis first
            pad += [0, -size % self.multiple]
        if any(pad):
            mode = "replicate"
            a, b = F.pad(a, pad, mode=mode), F.pad(b, pad, mode=mode)
        emphasis = self.emphasis if emphasis is None else emphasis
        film = None if self.film is None else self._modulations(emphasis, a.shape[0], a)
        a1, a2, a3 = self.encoder(a)
        b1, b2, b3 = self.encoder(b)
        fused = self.fusion(self.latent_a(a3), self.latent_b(b3))
        x = self.up2(self.decoder_mamba(fused), a2, b2)
        x = self.up1(x, a1, b1)
        if film is not None:
            x = x * film[0][0] + film[0][1]
        correction = self.head(x)
        if self.refine is not None:
            correction = F.interpolate(correction, size=a.shape[2:], mode=self.up1.mode,
                                       align_corners=False)
            hidden = self.refine[0](torch.cat([correction, a, b], dim=1))
            if film is not None:
                hidden = hidden * film[1][0] + film[1][1]
            correction = correction + self.refine[2](self.refine[1](hidden))
        if self.pixel is not None:
            correction = correction + self.pixel(torch.cat([correction, a, b], dim=1))
        out = self.output(correction, a, b, emphasis)
        return out[(..., *[slice(0, s) for s in grid])]

    def output(self, correction: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
               emphasis: float | torch.Tensor | None = None) -> torch.Tensor:
        """The fused image from the network's logit-space ``correction`` to max(A, B), with
        the detail layer (``cfg.detail_gain``) where there is one."""
        prior = torch.logit(torch.maximum(a, b).clamp(1e-3, 1 - 1e-3))
        out = torch.sigmoid(correction + prior)
        if not self.cfg.detail_gain:
            return out
        gain = self.cfg.detail_gain
        if self.film is not None:
            emphasis = self.emphasis if emphasis is None else emphasis
            gain = gain * torch.as_tensor(emphasis, dtype=a.dtype, device=a.device).reshape(
                -1, *[1] * (a.dim() - 1))
        detail = source_detail(a, b, shrink=self.cfg.detail_shrink)
        return (out + gain * detail).clamp(0, 1)


def _high_pass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, 1, *grid) minus its Gaussian smoothing (reflected edges, radius 4 sigma)."""
    radius = int(4 * sigma + 0.5)
    padded = F.pad(x, (radius,) * (2 * (x.dim() - 2)), mode="reflect")
    return x - blur(padded, gaussian_window(2 * radius + 1, sigma))


def _soft_threshold(detail: torch.Tensor, signal: torch.Tensor, k: float) -> torch.Tensor:
    """``detail`` shrunk towards 0 by k times its noise scale, per image: the median absolute
    residual over the pixels with signal, times 1.4826 (the standard deviation of Gaussian
    noise; Donoho and Johnstone's robust estimate)."""
    shrunk = []
    for d, inside in zip(detail, signal):
        values = d[inside]
        scale = 1.4826 * values.abs().median() if values.numel() else d.new_zeros(())
        shrunk.append(torch.sign(d) * (d.abs() - k * scale).clamp(min=0))
    return torch.stack(shrunk)


def source_detail(a: torch.Tensor, b: torch.Tensor, sigma: float = DETAIL_SIGMA,
                  shrink: float = 0.0) -> torch.Tensor:
    """At each pixel, the larger-magnitude of the two sources' high-pass residuals, each first
    soft-thresholded at ``shrink`` times its noise scale (0: as is)."""
    da, db = _high_pass(a, sigma), _high_pass(b, sigma)
    if shrink:
        signal = (a > 0) | (b > 0)
        da, db = _soft_threshold(da, signal, shrink), _soft_threshold(db, signal, shrink)
    return torch.where(da.abs() >= db.abs(), da, db)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
