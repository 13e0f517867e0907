"""Shapes of the ``mamba_ssm`` selective-scan contract, checked once for every scan path."""

from __future__ import annotations

import torch


def grouped_shapes(u, delta, A, B, C) -> tuple[torch.Tensor, torch.Tensor, int]:
    """B and C as (batch, G, N, L) views and G, after checking every shape of the contract."""
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (batch, dim, L); got {tuple(u.shape)} "
                         f"and {tuple(delta.shape)}")
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (dim={dim}, N); got {tuple(A.shape)}")
    Bg, Cg = (B.unsqueeze(1), C.unsqueeze(1)) if B.dim() == 3 else (B, C)
    groups = Bg.shape[1] if Bg.dim() == 4 else 0
    if (Bg.shape != (batch, groups, A.shape[1], length) or Cg.shape != Bg.shape or not groups
            or dim % groups):
        raise ValueError(f"B and C must be (batch, N, L) or (batch, G, N, L) with dim % G == 0; "
                         f"got B {tuple(B.shape)}, C {tuple(C.shape)}, dim {dim}, N {A.shape[1]}")
    return Bg, Cg, groups
