"""Inference settings on a GPU: reduced precision, patch and batch sizes from free memory, and
retrying with smaller pieces when CUDA runs out of memory.

On the CPU nothing changes: full float32, the callers' default patch and batch sizes.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")
# Peak memory per voxel of a 3D patch (bytes): twice the measured growth of the CPU float32
# peak of the bundled 3D network between 96^3 and 128^3 patches (about 150 bytes a voxel),
# so that a GPU estimate errs on the safe side; scripts/benchmarks/gpu_check.py prints the GPU
# figure.
BYTES_PER_VOXEL = 300
# Peak memory per pixel of a 2D slice for the 2D network, with the same margin.
BYTES_PER_PIXEL = 600
AUTOCAST_ENV = "CLINICALFMAMBA_AUTOCAST"  # "0": full float32 on the GPU too
MEMORY_SHARE = 0.5  # of the free GPU memory, leaving room for fragmentation and other work
SMALLEST_PATCH = 32


def autocast_dtype() -> torch.dtype:
    """bfloat16 where the GPU supports it (no overflow risk), else float16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def inference_context(device: torch.device) -> Iterator[None]:
    """``torch.inference_mode``, plus autocast on CUDA unless CLINICALFMAMBA_AUTOCAST=0. The
    selective scans keep their state in float32 under autocast (every implementation does)."""
    with torch.inference_mode():
        if device.type == "cuda" and os.environ.get(AUTOCAST_ENV, "1") != "0":
            with torch.autocast("cuda", dtype=autocast_dtype()):
                yield
        else:
            yield


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (``torch.cuda.mem_get_info``); None on the CPU."""
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def patch_for_memory(shape: tuple[int, ...], free_bytes: int,
                     bytes_per_voxel: int = BYTES_PER_VOXEL) -> tuple[int, ...]:
    """The largest patch that fits ``MEMORY_SHARE`` of ``free_bytes``: the whole volume when
    it fits, else a cube whose side is a multiple of 16 (at least ``SMALLEST_PATCH``)."""
    budget = free_bytes * MEMORY_SHARE / bytes_per_voxel
    if math.prod(shape) <= budget:
        return tuple(shape)
    side = max(SMALLEST_PATCH, int(budget ** (1 / 3)) // 16 * 16)
    return tuple(min(side, s) for s in shape)


def batch_for_memory(plane: tuple[int, int], free_bytes: int, default: int,
                     bytes_per_pixel: int = BYTES_PER_PIXEL, largest: int = 256) -> int:
    """Slices per batch for the 2D network: as many as ``MEMORY_SHARE`` of ``free_bytes``
    holds, at least ``default``, at most ``largest``."""
    fits = int(free_bytes * MEMORY_SHARE / (bytes_per_pixel * plane[0] * plane[1]))
    return max(default, min(largest, fits))


def retry_smaller_on_oom(run: Callable[[int], T], size: int, smallest: int, what: str) -> T:
    """``run(size)``; when CUDA runs out of memory, warn and run again with half the size,
    down to ``smallest``, where a RuntimeError says what to do instead."""
    while True:
        try:
            return run(size)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if size <= smallest:
                raise RuntimeError(f"CUDA ran out of memory even with {what} of {smallest}; "
                                   "close other programs using the GPU or run on the CPU "
                                   "(device cpu)") from None
            smaller = max(smallest, size // 2)
            warnings.warn(f"CUDA ran out of memory with {what} of {size}; retrying with "
                          f"{smaller}", RuntimeWarning, stacklevel=2)
            size = smaller


def slice_batch(device: torch.device, plane: tuple[int, int], default: int) -> int:
    """Slices per batch for the 2D network on ``device``: ``default`` on the CPU."""
    free = free_memory(device)
    return default if free is None else batch_for_memory(plane, free, default)


def run_network(model: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``model(a, b)`` on a batch in ``inference_context``, as float32; after a CUDA
    out-of-memory error the batch runs in smaller parts."""
    device = a.device

    def in_parts(size: int) -> torch.Tensor:
        with inference_context(device):
            return torch.cat([model(a[i:i + size], b[i:i + size]).float()
                              for i in range(0, len(a), size)])

    return retry_smaller_on_oom(in_parts, len(a), 1, "batches")
