"""Fusing arrays with a trained network: model loading, device choice, colour handling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..core.errors import InputError, InvalidResultError
from ..core.intensity import is_colour, split_luma, ycbcr_to_rgb
from ..io.weights import WeightsError, bundled, load_weights
from ..networks.fusion_net import FusionConfig, FusionNet, image_batch
from .gpu import run_network
from .refine import RefineSettings, parse_quality, refine

BUNDLED_MODELS = {2: "fusion2d.safetensors", 3: "fusion3d.safetensors"}


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA GPU is available here; use "
                         "--device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    return torch.device(device)


def load_fusion_model(path: str | Path | None = None, dims: int = 2,
                      device: str = "auto") -> FusionNet:
    """The bundled (or given) fusion network, verified, in eval mode on ``device``."""
    path = Path(path or bundled(BUNDLED_MODELS[dims]))
    state, config = load_weights(path)
    if "classes" in config:
        raise WeightsError(f"{path} holds classifier weights, not fusion weights (classifier "
                           "weights go to classify --model or fuse --classifier)")
    try:
        model = FusionNet(FusionConfig.from_dict(config))
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0][:160]
        raise WeightsError(f"{path} does not hold weights of the fusion network ({first})") \
            from None
    return model.eval().to(resolve_device(device))


def parse_emphasis(value: str | float) -> float:
    """An emphasis value (a number in [0, 1]) from text or a number; else ValueError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:  # also refuses NaN
        raise ValueError(f"emphasis must be a number from 0 (faithful to the sources) to 1 "
                         f"(sharper), got {value!r}")
    return number


def set_emphasis(model: FusionNet, emphasis: str | float | None) -> FusionNet:
    """``model`` fusing with ``emphasis`` from now on (None: its default, networks/fusion_net.py
    DEFAULT_EMPHASIS); weights not trained with an emphasis refuse any."""
    if emphasis is None:
        return model
    value = parse_emphasis(emphasis)
    if model.film is None:
        raise ValueError(f"emphasis applies to fusion networks trained with it "
                         f"(train-fusion --emphasis-conditioned); these "
                         f"{model.cfg.spatial_dims}D weights were not")
    model.emphasis = value
    return model


def emphasis_of(model: FusionNet) -> float | None:
    """The emphasis ``model`` fuses with; None for a network without one (for reports)."""
    return None if model.film is None else model.emphasis


def check_model_dims(model: FusionNet, dims: int, source: str | Path | None) -> FusionNet:
    """``model`` if it is the network for ``dims``-D inputs, else a WeightsError saying so."""
    if model.cfg.spatial_dims != dims:
        kinds = {2: "2D images", 3: "volumes"}
        raise WeightsError(f"{source or 'the model'} holds {model.cfg.spatial_dims}D fusion "
                           f"weights (for {kinds[model.cfg.spatial_dims]}); {kinds[dims]} need "
                           f"{dims}D weights")
    return model


def check_finite(fused: np.ndarray) -> np.ndarray:
    """``fused`` if every value is finite; a network that outputs NaN/Inf (corrupt or
    diverged weights, whatever their origin) must not produce an image."""
    if not np.isfinite(fused).all():
        share = 1.0 - float(np.isfinite(fused).mean())
        raise InvalidResultError(f"the fusion network produced NaN/Inf in {share:.1%} of the "
                                 "output: its weights are corrupt or diverged; nothing written")
    return fused


def fuse_normalized(model: FusionNet, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fuse two float [0, 1] arrays of one shape (a 2D image for a 2D model)."""
    if a.shape != b.shape:
        raise ValueError(f"inputs differ in shape: {a.shape} vs {b.shape}")
    device = next(model.parameters()).device
    fused = run_network(model, image_batch(a).to(device), image_batch(b).to(device))[0, 0].cpu()
    return check_finite(fused.numpy())


def fuse_images(model: FusionNet, a: np.ndarray, b: np.ndarray, quality: str = "fast",
                steps: int | None = None) -> np.ndarray:
    """Fuse two 2D images (grey of any dtype, or 8-bit RGB PET/SPECT).

    Grey inputs are normalised per modality; a colour input is fused on its luma and its
    chroma is put back, so the result is RGB uint8 when either input is colour and float32
    [0, 1] otherwise. Inputs are not modified. ``quality="best"`` refines the network's
    luma on the fusion metrics (fusion/refine.py; ``steps``: its number of steps, default
    RefineSettings.steps), on the model's device.
    """
    if parse_quality(quality) == "fast" and steps is not None:
        raise ValueError("refinement steps apply to quality best only")
    if is_colour(a) and is_colour(b):
        raise ValueError("both inputs are colour; one of them must be the grey anatomical image")
    (ya, cbcr_a), (yb, cbcr_b) = split_luma(a), split_luma(b)
    if ya.shape != yb.shape:
        raise ValueError(f"inputs differ in size: {ya.shape} vs {yb.shape} (resample first)")
    fused = fuse_normalized(model, ya, yb)
    if quality == "best":
        fused = refine(fused, ya, yb, RefineSettings.with_steps(steps),
                       next(model.parameters()).device)
    chroma = cbcr_a if cbcr_a is not None else cbcr_b
    return fused if chroma is None else ycbcr_to_rgb(fused, chroma)
