"""Multi-directional Mamba blocks on 2D and 3D token grids.

A grid of tokens is flattened in several orders (2D: row-major and column-major; 3D tri-plane:
axial raster and the two orders in which the slice index runs fastest), each scanned forward
and backward by one grouped selective-scan call, mapped back to grid order and averaged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .scan.dispatch import selective_scan_fn

# Axis orders (slowest to fastest) of the flattened token grid, per spatial dimensionality.
AXIS_ORDERS = {
    2: ((0, 1), (1, 0)),                      # row-major, column-major
    3: ((0, 1, 2), (1, 2, 0), (2, 1, 0)),     # axial raster; slice index fastest (x2)
}
AXIAL_ONLY = ((0, 1, 2),)  # 3D ablation: the axial raster alone, forward and backward


def flatten_in_orders(x: torch.Tensor, axis_orders) -> torch.Tensor:
    """(B, C, *grid) -> (B, K, C, L): the tokens in each scan order, forward then backward."""
    seqs = []
    for order in axis_orders:
        flat = x.permute(0, 1, *(2 + a for a in order)).flatten(2)
        seqs += [flat, flat.flip(-1)]
    return torch.stack(seqs, dim=1)


def unflatten_orders(seq: torch.Tensor, grid: tuple[int, ...], axis_orders) -> torch.Tensor:
    """(B, K, C, L) -> (B, K, C, *grid): each scan mapped back to grid order (exact inverse)."""
    batch, _, channels, _ = seq.shape
    out = []
    for k, order in enumerate(axis_orders):
        permuted_grid = [grid[a] for a in order]
        back = [0, 1, *(2 + order.index(a) for a in range(len(grid)))]
        for s in (seq[:, 2 * k], seq[:, 2 * k + 1].flip(-1)):
            out.append(s.reshape(batch, channels, *permuted_grid).permute(back))
    return torch.stack(out, dim=1)


class DirectionalSSM(nn.Module):
    """Selective-scan mixer over a token grid, scanned in every order of ``AXIS_ORDERS``.

    ``forward(x, cond)``: the scanned input u and the gate z come from ``x``; the
    input-dependent parameters (delta, B, C) come from ``cond`` (``x`` itself by default).
    Passing the other modality as ``cond`` gives the cross-modal fusion scan.
    """

    def __init__(self, d_model: int, spatial_dims: int, d_state: int = 8, expand: int = 2,
                 dt_rank: int | None = None, axis_orders: tuple | None = None):
        super().__init__()
        d_inner = expand * d_model
        self.axis_orders = axis_orders or AXIS_ORDERS[spatial_dims]
        self.n_dirs = 2 * len(self.axis_orders)
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        # A depthwise spatial conv replaces Mamba's causal 1D conv: it is the same for every
        # scan order, so it is computed once per grid rather than once per direction.
        self.local_conv = conv(d_inner, d_inner, 3, padding=1, groups=d_inner)
        k, r = self.n_dirs, self.dt_rank
        self.x_proj = nn.Parameter(torch.randn(k, r + 2 * d_state, d_inner) * d_inner ** -0.5)
        self.dt_proj = nn.Parameter(torch.randn(k, d_inner, r) * r ** -0.5)
        # delta starts log-uniform in [1e-3, 1e-1] (softplus-inverse bias), as in Mamba.
        dt = torch.exp(torch.rand(k, d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1).float()).repeat(k * d_inner, 1))
        self.D = nn.Parameter(torch.ones(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def _branch(self, x: torch.Tensor):
        u, z = self.in_proj(x.movedim(1, -1)).chunk(2, dim=-1)
        return F.silu(self.local_conv(u.movedim(-1, 1))), z

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        u, z = self._branch(x)
        c = u if cond is None else self._branch(cond)[0]
        batch, grid = u.shape[0], u.shape[2:]
        orders, length = self.axis_orders, math.prod(grid)
        u_seq = flatten_in_orders(u, orders)                             # (B, K, Ci, L)
        c_seq = u_seq if cond is None else flatten_in_orders(c, orders)
        params = torch.einsum("bkcl,krc->bkrl", c_seq, self.x_proj)
        dts, Bs, Cs = params.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        deltas = torch.einsum("bkrl,kcr->bkcl", dts, self.dt_proj)
        y = selective_scan_fn(
            u_seq.reshape(batch, -1, length), deltas.reshape(batch, -1, length),
            -torch.exp(self.A_log), Bs.contiguous(), Cs.contiguous(), self.D,
            delta_bias=self.dt_bias.flatten(), delta_softplus=True)
        y = y.view(batch, self.n_dirs, self.d_inner, length)
        y = unflatten_orders(y, tuple(grid), orders).mean(1).flatten(2)  # (B, Ci, L)
        y = self.out_norm(y.transpose(1, 2)) * F.silu(z.flatten(1, -2))  # (B, L, Ci)
        out = self.out_proj(y)                                            # (B, L, C)
        return out.transpose(1, 2).reshape(batch, -1, *grid)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (B, C, *grid) tensor."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class MambaBlock(nn.Module):
    """Pre-norm residual block: x + SSM(LN(x))."""

    def __init__(self, channels: int, spatial_dims: int, d_state: int = 8, expand: int = 2,
                 axis_orders: tuple | None = None):
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.mixer = DirectionalSSM(channels, spatial_dims, d_state, expand,
                                    axis_orders=axis_orders)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))


class CrossModalFusionMamba(nn.Module):
    """Fuses two latent grids: each modality scanned with the other's (delta, B, C), averaged."""

    def __init__(self, channels: int, spatial_dims: int, d_state: int = 8, expand: int = 2,
                 axis_orders: tuple | None = None):
        super().__init__()
        self.norm_a = ChannelLayerNorm(channels)
        self.norm_b = ChannelLayerNorm(channels)
        self.mixer = DirectionalSSM(channels, spatial_dims, d_state, expand,
                                    axis_orders=axis_orders)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.proj = conv(channels, channels, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        na, nb = self.norm_a(a), self.norm_b(b)
        mixed = 0.5 * (self.mixer(na, cond=nb) + self.mixer(nb, cond=na))
        return self.proj(mixed) + 0.5 * (a + b)
