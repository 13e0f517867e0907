"""Scores of fused image files against their sources and the classical baselines (the
``evaluate`` command): metrics on grey [0, 1] images, colour compared by its luma."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.intensity import is_colour, split_luma
from ..fusion.image_files import Batch, load_pair
from ..io.images import read_image
from ..objective.baselines import BASELINES
from .metrics import fusion_metrics, paper_metrics

MODEL_NAME = "ClinicalFMamba"


def unit_luma(image: np.ndarray) -> np.ndarray:
    """Grey [0, 1] view of a fused image: luma of colour, float [0, 1] as is, other grey
    normalised like a fusion input."""
    if (not is_colour(image) and np.issubdtype(image.dtype, np.floating)
            and image.size and image.min() >= 0.0 and image.max() <= 1.0):
        return image.astype(np.float32, copy=False)
    return split_luma(image)[0]


def _grey_metrics(ya: np.ndarray, yb: np.ndarray, yf: np.ndarray) -> dict[str, float]:
    paper = {f"paper_{k}": v for k, v in paper_metrics(ya, yb, yf).items()}
    return {**fusion_metrics(ya, yb, yf), **paper}


def evaluate_batch(batch: Batch) -> list[tuple[Path, dict[str, dict[str, float]]]]:
    """(fused path, metrics per method) for every (A, B, fused) job: the fused image's
    under ``MODEL_NAME`` and each classical baseline's on the same pair."""
    results = []
    for path_a, path_b, path_fused in batch.jobs:
        a, b, _ = load_pair(path_a, path_b)
        results.append((path_fused, compare_with_baselines(a, b, read_image(path_fused)[0])))
    return results


def compare_with_baselines(a: np.ndarray, b: np.ndarray,
                           fused: np.ndarray) -> dict[str, dict[str, float]]:
    """Metrics of the network's result and of each classical baseline, per method."""
    ya, yb = split_luma(a)[0], split_luma(b)[0]
    results = {MODEL_NAME: unit_luma(fused)} | {name: fuse(ya, yb)
                                               for name, fuse in BASELINES.items()}
    return {method: _grey_metrics(ya, yb, yf) for method, yf in results.items()}
