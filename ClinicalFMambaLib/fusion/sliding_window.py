"""Patch-wise volume inference with overlap and Gaussian blending (bounded memory, no seams)."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np
import torch

from ..core.errors import Cancelled
from ..networks.fusion_net import image_batch
from .gpu import (MEMORY_SHARE, SMALLEST_PATCH, free_memory, inference_context, patch_for_memory,
                  retry_smaller_on_oom)

# Network memory one patch may take on the CPU (gpu.BYTES_PER_VOXEL a voxel): a
# whole 240x240x155 volume fits, so a brain volume is fused in one pass, 6.4x faster than in
# 128^3 patches (whose overlaps are fused two to eight times) and without seams; peak RSS of
# the command stays under 4 GB (docs/results.md, "3D speed and memory").
CPU_PATCH_BYTES = 3 * 2 ** 30


class FusionCancelled(Cancelled):
    """The caller's ``cancel()`` returned True; nothing was produced."""


def patch_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets covering [0, size) with patches of ``patch`` overlapping by ``overlap``."""
    if patch >= size:
        return [0]
    stride = max(1, int(round(patch * (1 - overlap))))
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def gaussian_weight(shape: tuple[int, ...], sigma_fraction: float = 0.125) -> np.ndarray:
    """Separable Gaussian importance map: patch centres count more than their borders."""
    weight = np.ones(shape, dtype=np.float32)
    for axis, size in enumerate(shape):
        x = np.arange(size, dtype=np.float32) - (size - 1) / 2
        profile = np.exp(-0.5 * (x / max(size * sigma_fraction, 1e-3)) ** 2)
        weight *= profile.reshape([-1 if i == axis else 1 for i in range(len(shape))])
    return np.maximum(weight, 1e-3)  # borders of the volume are covered by one patch only


def _patch_corners(shape: tuple[int, ...], patch: int | tuple[int, ...],
                   overlap: float) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """(patch size clipped to ``shape``, the corner of every patch)."""
    patch = (patch,) * len(shape) if isinstance(patch, int) else tuple(patch)
    patch = tuple(min(p, s) for p, s in zip(patch, shape))
    return patch, list(product(*(patch_starts(s, p, overlap) for s, p in zip(shape, patch))))


def default_patch(shape: tuple[int, ...], device: torch.device) -> tuple[int, ...]:
    """The largest patch that the memory holds: ``CPU_PATCH_BYTES`` on the CPU, the free GPU
    memory on CUDA (the whole volume when it fits)."""
    free = free_memory(device)
    return patch_for_memory(shape, CPU_PATCH_BYTES / MEMORY_SHARE if free is None else free)


def patch_count(shape: tuple[int, ...], patch: int | tuple[int, ...] | None = None,
                overlap: float = 0.25, device: torch.device = torch.device("cpu")) -> int:
    """How many patches ``sliding_window_fuse`` runs for a volume of ``shape`` on ``device``
    (before any out-of-memory retry)."""
    return len(_patch_corners(shape, patch or default_patch(shape, device), overlap)[1])


def sliding_window_fuse(model: torch.nn.Module, a: np.ndarray, b: np.ndarray,
                        patch: int | tuple[int, ...] | None = None, overlap: float = 0.25,
                        progress: Callable[[float], None] | None = None,
                        cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """Fuse two normalised float [0, 1] volumes of one shape patch by patch.

    ``patch`` None: the largest patch that the memory holds (``default_patch``: the whole
    volume when it fits); on CUDA halved after an out-of-memory error.
    """
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"expected two 3D volumes of one shape, got {a.shape} and {b.shape}")
    device = next(model.parameters()).device
    if patch is not None or device.type != "cuda":
        return _fuse_patches(model, a, b, patch or default_patch(a.shape, device), overlap,
                             progress, cancel)
    side = max(default_patch(a.shape, device))
    return retry_smaller_on_oom(
        lambda size: _fuse_patches(model, a, b, size, overlap, progress, cancel),
        side, SMALLEST_PATCH, "patches")


def _fuse_patches(model, a, b, patch, overlap, progress, cancel) -> np.ndarray:
    patch, corners = _patch_corners(a.shape, patch, overlap)
    device = next(model.parameters()).device
    weight = gaussian_weight(patch)
    total = np.zeros(a.shape, dtype=np.float32)
    norm = np.zeros(a.shape, dtype=np.float32)
    for done, corner in enumerate(corners):
        if cancel is not None and cancel():
            raise FusionCancelled("fusion was cancelled")
        region = tuple(slice(c, c + p) for c, p in zip(corner, patch))
        ta, tb = (image_batch(x[region]).to(device) for x in (a, b))
        with inference_context(device):
            total[region] += model(ta, tb)[0, 0].float().cpu().numpy() * weight
        norm[region] += weight
        if progress is not None:
            progress((done + 1) / len(corners))
    return total / norm
