"""Scope guard: is an input brain MRI like the data the classifier was made for?

The tumour classifier gives one of its classes to anything, so a photo would get a
confident tumour verdict. The guard measures how far an image's classifier features (the
channel means and standard deviations of the classifier's first three stages) lie from the
training data: the Mahalanobis distance to the nearest class mean with a shared, shrunk covariance
(Lee et al., NeurIPS 2018, "A simple unified framework for detecting out-of-distribution
samples", which also combines several layers). The refusal threshold is a high quantile of the
fitting data's own distances, so about that share of in-scope images is refused. Plain
checks come first, because a distance says nothing useful about them: a colour image (MRI
is grey), a (nearly) constant image and an image with almost no foreground.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io.weights import load_weights, save_weights

# Share of in-scope fitting images allowed beyond the threshold.
DEFAULT_QUANTILE = 0.995
# Covariance shrinkage towards a scaled identity: 448 features, a few thousand samples.
SHRINKAGE = 0.1
# Prepared images (windowed to [0, 1]) below these are not images of a brain.
MIN_CONTRAST = 0.02       # standard deviation
MIN_FOREGROUND = 0.05     # share of pixels above a tenth of the range
# MRI is grey: the 6,698 JPEGs of the 4-class set (grey stored as RGB) stay below 0.022;
# colour photos measure 0.15-0.5, PET/SPECT colour maps 0.06-0.15.
MAX_COLOURFULNESS = 0.05


@dataclass
class ScopeGuard:
    means: torch.Tensor      # (C, K) class means of the features
    precision: torch.Tensor  # (K, K) inverse of the shared, shrunk covariance
    threshold: float         # distances above it are out of scope

    def distances(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, K) features -> (N,) distance to the nearest class mean."""
        diff = pooled.double()[:, None, :] - self.means.double()[None]   # (N, C, K)
        squared = torch.einsum("nck,kl,ncl->nc", diff, self.precision.double(), diff)
        return squared.clamp_min(0).sqrt().amin(1).float()

    def in_scope(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.distances(pooled) <= self.threshold


def fit_scope_guard(pooled: torch.Tensor, labels: torch.Tensor,
                    quantile: float = DEFAULT_QUANTILE) -> ScopeGuard:
    """Class means, shared shrunk covariance and the ``quantile`` of the fitting distances."""
    pooled, labels = pooled.double(), torch.as_tensor(labels)
    classes = torch.unique(labels)
    means = torch.stack([pooled[labels == c].mean(0) for c in classes])
    centred = pooled - means[torch.searchsorted(classes, labels)]
    covariance = centred.T @ centred / max(1, len(pooled) - len(classes))
    k = covariance.shape[0]
    shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * covariance.trace() / k * torch.eye(
        k, dtype=covariance.dtype)
    guard = ScopeGuard(means.float(), torch.linalg.inv(shrunk).float(), float("inf"))
    guard.threshold = float(torch.quantile(guard.distances(pooled.float()).double(), quantile))
    return guard


def image_problem(prepared: np.ndarray, colour: float = 0.0) -> str | None:
    """Why a prepared image (windowed to [0, 1]) whose original had ``colour``
    (``classifier_images.colourfulness``) cannot be brain MRI, or None."""
    if colour > MAX_COLOURFULNESS:
        return "the image is in colour (a photo or a colour map); brain MRI is grey"
    if float(np.std(prepared)) < MIN_CONTRAST:
        return "the image is constant or nearly constant"
    if float(np.mean(prepared > 0.1)) < MIN_FOREGROUND:
        return "the image is almost empty"
    return None


def stored_tensors(guard: ScopeGuard) -> dict[str, torch.Tensor]:
    """What a guard file holds: the class means and the precision's Cholesky factor L
    (precision = L L^T), its lower triangle packed row by row in float16, a quarter of the
    float32 matrix (docs/research/results.md, "Weight storage")."""
    k = guard.precision.shape[0]
    rows, cols = torch.tril_indices(k, k)
    factor = torch.linalg.cholesky(guard.precision.double())
    return {"means": guard.means, "cholesky": factor[rows, cols].half()}


def _precision(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The precision of a loaded guard file: rebuilt from the packed Cholesky factor, or
    stored whole (guard files written before the factor was)."""
    if "precision" in state:
        return state["precision"]
    k = state["means"].shape[1]
    rows, cols = torch.tril_indices(k, k)
    factor = torch.zeros(k, k, dtype=torch.float64)
    factor[rows, cols] = state["cholesky"].double()
    return factor @ factor.T


def save_scope_guard(guard: ScopeGuard, path: str | Path, extra: dict) -> str:
    """Write ``guard`` (``stored_tensors``) with ``extra`` in its manifest entry; returns
    the file's SHA-256."""
    config = {"model": "ScopeGuard", "threshold": guard.threshold,
              "shrinkage": SHRINKAGE}
    return save_weights(stored_tensors(guard), path, config, extra)


def load_scope_guard(path: str | Path, verify: bool = True) -> ScopeGuard:
    """The guard a file written by ``save_scope_guard`` holds (SHA-256 checked unless
    ``verify`` is False)."""
    state, config = load_weights(path, verify=verify)
    if config.get("model") != "ScopeGuard":
        raise ValueError(f"{path} is not a scope guard (config model {config.get('model')!r})")
    return ScopeGuard(state["means"], _precision(state), float(config["threshold"]))
