"""Fusing two co-registered volumes, and bringing a volume onto another's grid.

Volumes are numpy arrays in (k, j, i) order (SimpleITK's and Slicer's ``arrayFromVolume``),
grey ``(k, j, i)`` of any numeric type or 8-bit RGB ``(k, j, i, 3)`` (PET/SPECT colour maps).
Each input is normalised once over the whole volume (percentile window over its
foreground, the voxels above the background, so a zero background does not count), so that
every slice of one volume shares one intensity mapping. The 2D network then fuses the axial
slices (array axis 0) in batches; slices where both inputs are empty stay 0. The 3D network
fuses the box around the signal in one pass where the memory allows (a whole brain volume on
the CPU), else in overlapping patches blended with Gaussian weights (``sliding_window.py``);
voxels empty in both inputs stay 0. A colour input
is fused on its luma and its chroma is put back, as for 2D images.

Geometry helpers work in physical space (SimpleITK, LPS); ``image_from_array`` takes Slicer's
IJK-to-RAS matrix so MRML volumes can be resampled without Slicer's own image filters.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from ..core.intensity import normalize_intensity, rgb_to_ycbcr, signal_box, ycbcr_to_rgb
from ..io.weights import bundled
from ..networks.fusion_net import FusionNet
from .gpu import run_network, slice_batch
from .inference import BUNDLED_MODELS, check_finite, check_model_dims, load_fusion_model
from .sliding_window import FusionCancelled, patch_count, sliding_window_fuse

MODEL_KINDS = ("auto", "2d", "3d")
BATCH_SLICES = 8
BOX_MARGIN = 8  # voxels of context kept around the signal box for the 3D network
# Slicer's RAS and ITK's LPS differ by the sign of their first two axes.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class FusedVolume:
    """Result of ``fuse_volumes``.

    ``fused``: (k, j, i) float32 in [0, 1], or (k, j, i, 3) uint8 RGB when an input is colour.
    ``luma``: (k, j, i) float32 in [0, 1], the fused grey values (equal to ``fused`` for grey
    inputs); this is what a classifier reads.
    """

    fused: np.ndarray
    luma: np.ndarray


def is_colour_volume(volume: np.ndarray) -> bool:
    """True for a (k, j, i, 3|4) RGB(A) volume."""
    return volume.ndim == 4 and volume.shape[-1] in (3, 4)


def volume_luma(volume: np.ndarray, name: str = "volume") -> tuple[np.ndarray, np.ndarray | None]:
    """(grey [0, 1] normalised over the whole volume, (k, j, i, 2) uint8 CbCr or None)."""
    volume = np.asarray(volume)
    if is_colour_volume(volume):
        if volume.dtype != np.uint8:
            raise ValueError(f"{name}: colour volumes must be 8-bit RGB, not {volume.dtype}")
        ycc = np.stack([rgb_to_ycbcr(plane) for plane in volume])
        return ycc[..., 0].astype(np.float32) / 255.0, ycc[..., 1:]
    if volume.ndim != 3:
        raise ValueError(f"{name} must be a (k, j, i) grey or (k, j, i, 3) RGB volume, "
                         f"got shape {volume.shape}")
    return normalize_intensity(volume), None


def load_volume_model(kind: str = "auto", device: str = "auto",
                      weights: str | Path | None = None) -> FusionNet:
    """The bundled fusion network for volumes: '3d' the tri-plane 3D model, '2d' the 2D
    model applied slice by slice (for thick-slice volumes; slower on a CPU: it runs at full
    resolution), 'auto' the 3D model where it is bundled. ``weights``: that file instead
    (2D or 3D; 'auto' takes either, '2d'/'3d' must match it)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model must be one of {', '.join(MODEL_KINDS)}, not {kind!r}")
    if weights is not None:
        network = load_fusion_model(weights, device=device)
        return network if kind == "auto" else check_model_dims(network, int(kind[0]), weights)
    path = bundled(BUNDLED_MODELS[3])
    if kind == "3d" or (kind == "auto" and path.exists()):
        if not path.exists():
            raise FileNotFoundError(f"the 3D fusion model is not bundled yet ({path} is "
                                    "missing); use model 'auto' or '2d' (slice by slice)")
        return load_fusion_model(path, dims=3, device=device)
    return load_fusion_model(dims=2, device=device)


def fuse_volumes(model: FusionNet, a: np.ndarray, b: np.ndarray,
                 batch_size: int = BATCH_SLICES,
                 progress: Callable[[float], None] | None = None,
                 cancel: Callable[[], bool] | None = None,
                 units: Callable[[int, str], None] | None = None) -> FusedVolume:
    """Fuse two co-registered volumes on one grid (see the module notes); inputs unchanged.

    ``progress(fraction)`` is called after each batch of slices; ``cancel()`` returning True
    stops before the next batch with ``FusionCancelled``; ``units(total, name)`` is told
    once how many slices or patches the work counts. A network output with NaN/Inf raises
    ``InvalidResultError``.
    """
    if is_colour_volume(np.asarray(a)) and is_colour_volume(np.asarray(b)):
        raise ValueError("both volumes are colour; one must be the grey anatomical volume")
    (ya, chroma_a), (yb, chroma_b) = volume_luma(a, "volume A"), volume_luma(b, "volume B")
    if ya.shape != yb.shape:
        raise ValueError(f"volumes differ in grid size: {ya.shape} vs {yb.shape} (k, j, i); "
                         "resample B onto A first (resample_onto)")
    if model.cfg.spatial_dims == 3:
        luma = _fuse_whole_volume(model, ya, yb, progress, cancel, units)
    else:
        luma = _fuse_slices(model, ya, yb, max(1, batch_size), progress, cancel, units)
    check_finite(luma)
    chroma = chroma_a if chroma_a is not None else chroma_b
    if chroma is None:
        return FusedVolume(luma, luma)
    return FusedVolume(np.stack([ycbcr_to_rgb(y, c) for y, c in zip(luma, chroma)]), luma)


@torch.no_grad()
def _fuse_slices(model: FusionNet, ya: np.ndarray, yb: np.ndarray, batch_size: int,
                 progress: Callable[[float], None] | None,
                 cancel: Callable[[], bool] | None,
                 units: Callable[[int, str], None] | None = None) -> np.ndarray:
    fused = np.zeros_like(ya)
    todo = np.flatnonzero(ya.any(axis=(1, 2)) | yb.any(axis=(1, 2)))
    if units is not None:
        units(len(todo), "slice")
    device = next(model.parameters()).device
    batch_size = slice_batch(device, ya.shape[1:], batch_size)  # larger on a roomy GPU
    for start in range(0, len(todo), batch_size):
        if cancel is not None and cancel():
            raise FusionCancelled("volume fusion cancelled")
        index = todo[start:start + batch_size]
        ta = torch.from_numpy(ya[index])[:, None].to(device)
        tb = torch.from_numpy(yb[index])[:, None].to(device)
        fused[index] = run_network(model, ta, tb)[:, 0].cpu().numpy()
        if progress is not None:
            progress(min(start + batch_size, len(todo)) / len(todo))
    if len(todo) == 0 and progress is not None:
        progress(1.0)
    return fused


def _fuse_whole_volume(model: FusionNet, ya: np.ndarray, yb: np.ndarray,
                       progress: Callable[[float], None] | None,
                       cancel: Callable[[], bool] | None,
                       units: Callable[[int, str], None] | None = None) -> np.ndarray:
    """The 3D network over the box around the voxels with signal, plus a margin of context
    (in one pass, or in patches where the memory would not hold it); background stays 0. Skull-stripped or
    padded volumes are mostly background, so the box saves about half the work."""
    fused = np.zeros_like(ya)
    signal = (ya > 0) | (yb > 0)
    box = signal_box(signal, BOX_MARGIN)
    if box is None:
        if progress is not None:
            progress(1.0)
        return fused
    if units is not None:
        units(patch_count(ya[box].shape, device=next(model.parameters()).device), "patch")
    fused[box] = sliding_window_fuse(model, ya[box], yb[box], progress=progress, cancel=cancel)
    fused[~signal] = 0.0
    return fused


# --------------------------------------------------------------------------- geometry

def axes_of(ijk_to_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 unit directions of the i, j, k axes as columns, RAS; their spacings) of a 4x4
    IJK-to-RAS matrix."""
    columns = np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"IJK-to-RAS matrix has a zero-length axis: {columns.tolist()}")
    return columns / spacing, spacing


def image_from_array(array: np.ndarray, ijk_to_ras: np.ndarray) -> sitk.Image:
    """A SimpleITK image of a (k, j, i[, c]) array placed by a 4x4 IJK-to-RAS matrix."""
    directions, spacing = axes_of(ijk_to_ras)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=array.ndim == 4)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((RAS_TO_LPS @ directions).ravel().tolist())
    image.SetOrigin((RAS_TO_LPS @ np.asarray(ijk_to_ras, dtype=np.float64)[:3, 3]).tolist())
    return image


def same_grid(reference: sitk.Image, moving: sitk.Image, tol: float = 1e-4) -> bool:
    """Same voxel grid in physical space (size, origin, spacing, direction up to ``tol``)."""
    return (reference.GetSize() == moving.GetSize()
            and all(np.allclose(x, y, atol=tol) for x, y in (
                (reference.GetOrigin(), moving.GetOrigin()),
                (reference.GetSpacing(), moving.GetSpacing()),
                (reference.GetDirection(), moving.GetDirection()))))


def _describe(image: sitk.Image) -> str:
    size = "x".join(map(str, image.GetSize()))
    spacing = "x".join(f"{s:g}" for s in image.GetSpacing())
    return f"{size} voxels of {spacing} mm"


def resample_onto(reference: sitk.Image, moving: sitk.Image) -> sitk.Image:
    """``moving`` resampled onto ``reference``'s grid in physical space, with a warning.

    Linear interpolation; points outside ``moving`` become 0, so different extents and
    orientations are handled. Grey images come back as float32, RGB keeps its 8-bit pixels.
    """
    warnings.warn(f"second volume resampled from its grid ({_describe(moving)}) onto the "
                  f"first volume's ({_describe(reference)})", stacklevel=2)
    vector = moving.GetNumberOfComponentsPerPixel() > 1
    pixel = moving.GetPixelID() if vector else sitk.sitkFloat32
    return sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkLinear, 0.0, pixel)


def on_grid_of(reference_array: np.ndarray, reference_ijk_to_ras: np.ndarray,
               moving_array: np.ndarray, moving_ijk_to_ras: np.ndarray) -> np.ndarray:
    """``moving_array`` on the reference's voxel grid: as is when the grids match, otherwise
    resampled in physical space (``resample_onto``, with its warning)."""
    reference = image_from_array(reference_array, reference_ijk_to_ras)
    moving = image_from_array(moving_array, moving_ijk_to_ras)
    if same_grid(reference, moving):
        return moving_array
    return sitk.GetArrayFromImage(resample_onto(reference, moving))
