"""The verdict on a volume: every axial slice through the classifier and the tumour-evidence
network, combined into the volume's prediction, calibrated tumour probability and heatmap
(docs/classifier.md, "Volume verdict")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..core.errors import Cancelled
from .classifier import Classifier, class_activation_maps, forward_views, scope_decisions
from .tumour_evidence import slice_evidence, tumour_verdict, volume_tumour_probability
from .volumes import MIN_BRAIN_FRACTION, noise_problem, prepare_volume_sizes, slices_to_volume

# A volume is brain MRI when at least this share of its eligible slices passes the guard.
MIN_IN_SCOPE_SLICES = 0.5
# The tumour evidence's verdicts, as a volume record names them; its two classes.
VOLUME_VERDICTS = {"tumour": "tumour", "no tumour": "notumor", "uncertain": "uncertain"}
EVIDENCE_CLASSES = ("notumor", "tumour")


# --------------------------------------------------------------------------- volumes

def aggregate_slices(slice_probs: np.ndarray, brain_area: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Volume probabilities (C,) from per-slice probabilities; also the eligible-slice mask.

    Eligible slices hold at least MIN_BRAIN_FRACTION of the largest slice's brain area, so
    edge slices with a sliver of brain never decide; the volume probabilities are the
    brain-area-weighted mean over them. (The alternative, the mean of the most suspicious
    slices, was measured and rejected: on skull-stripped volumes a few false-positive
    skull-base slices put it above 0.9 even for tumour-free brain; docs/classifier.md.)
    """
    area = np.asarray(brain_area, np.float64)
    if area.max() <= 0:
        raise ValueError("no slice contains brain")
    eligible = area >= MIN_BRAIN_FRACTION * area.max()
    weights = np.where(eligible, area, 0.0)
    return (weights[:, None] * slice_probs).sum(0) / weights.sum(), eligible


@dataclass
class VolumeResult:
    """Classification of every axial slice of a volume and the volume verdict.

    Slice arrays run along ``axial_axis`` of the input, in the input's slice order. With a
    tumour-evidence network, the no-tumour column is 1 - the calibrated tumour probability
    and the tumour columns share the rest as the classifier splits it among tumour types.
    """

    classes: list[str]
    slice_probabilities: np.ndarray  # (Z, C)
    brain_area: np.ndarray           # (Z,) brain pixels per slice
    eligible: np.ndarray             # (Z,) slices that take part in the verdict
    probabilities: np.ndarray        # (C,) volume probabilities
    heatmap: np.ndarray | None       # input's shape, [0, 1], zero outside the brain
    heatmap_class: str | None
    axial_axis: int
    in_scope: bool = True
    reason: str | None = None
    tumour_probability: float | None = None  # calibrated, from the evidence network

    @property
    def prediction(self) -> str | None:
        """With the tumour evidence: "tumour", "notumor" or "uncertain" (a tumour type is not
        named: no type model is validated on volumes, ``tumour_type``); with a classifier
        trained on volumes alone: its most likely class. None out of scope."""
        if not self.in_scope:
            return None
        if self.tumour_probability is not None:
            return VOLUME_VERDICTS[tumour_verdict(self.tumour_probability)]
        return self.classes[int(np.argmax(self.probabilities))]

    @property
    def tumour_type(self) -> str | None:
        """The tumour's type where a type model validated on volumes gives it: none does yet
        (the 2D classifier's type named every brain3d glioma meningioma, docs/classifier.md)."""
        return None


def classify_volume(model: Classifier, volume: np.ndarray, batch_size: int = 16,
                    progress: Callable[[int, int], None] | None = None,
                    cancel: Callable[[], bool] | None = None, direction=None,
                    space: str = "LPS", heatmap: bool = True,
                    class_index: int | None = None,
                    spacing: Sequence[float] | None = None) -> VolumeResult:
    """Classify every axial slice of ``volume`` (a (z, y, x) = (k, j, i) array) in batches.

    Orientation: with ``direction=None`` the array is taken as axial slices whose rows run
    anterior -> posterior and columns patient right -> left, which is how SimpleITK returns
    BraTS-convention NIfTI files (identity direction). Otherwise pass the 3x3 direction
    matrix of the i, j, k axes: SimpleITK's ``GetDirection()`` (LPS), or Slicer's
    ``GetIJKToRASDirections`` with ``space="RAS"``; ``spacing`` is the (i, j, k) voxel spacing
    (``GetSpacing()``; ``None``: 1 mm). Slices are then permuted/flipped to
    that radiological view (anterior up, patient right on the left), as in the training
    JPEGs; the intensity window is taken over the whole brain and each slice is cropped to
    the brain's in-plane bounding box.

    With the bundled weights, whether a slice shows tumour and where comes from the
    tumour-evidence network (calibrated slice probabilities, the per-voxel heatmap, the
    volume rule in ``tumour_evidence``); the classifier names the tumour type; the scope
    guard refuses volumes that are not brain MRI. Other classifiers: the brain-area-weighted
    mean of slice probabilities (``aggregate_slices``) and class activation maps of
    ``class_index`` (default: the most likely tumour class).

    ``progress(done, total)`` is called after each batch; ``cancel()`` returning True stops
    with ``Cancelled``.
    """
    with_evidence = model.evidence is not None and model.no_tumour_index is not None
    sizes = [model.input_size] + ([model.evidence.input_size] if with_evidence else [])
    slices, *evidence_slices = prepare_volume_sizes(volume, sizes, direction, space, spacing)
    total = len(slices.images)
    probs, features, summaries = [], [], []
    for start in range(0, total, max(1, batch_size)):
        if cancel is not None and cancel():
            raise Cancelled("volume classification cancelled")
        batch_probs, batch_features, batch_summary = forward_views(
            model, slices.images[start:start + batch_size])
        probs.append(batch_probs)
        summaries.append(batch_summary)
        if heatmap:
            features.append(batch_features)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    slice_probs = torch.cat(probs).numpy()
    volume_probs, eligible = aggregate_slices(slice_probs, slices.brain_area)
    in_scope, reason = _volume_scope(model, volume, slices.images, torch.cat(summaries),
                                     eligible)
    if not in_scope:
        return VolumeResult(model.classes, slice_probs, slices.brain_area, eligible,
                            volume_probs, None, None, int(slices.orientation.axes[0]),
                            False, reason)
    if with_evidence:
        if cancel is not None and cancel():
            raise Cancelled("volume classification cancelled")
        evidence = slice_evidence(model.evidence, evidence_slices[0])
        tumour = volume_tumour_probability(evidence.probabilities, evidence.eligible)
        per_slice = np.column_stack([1 - evidence.probabilities, evidence.probabilities])
        return VolumeResult(EVIDENCE_CLASSES, per_slice, evidence.brain_area, evidence.eligible,
                            np.array([1 - tumour, tumour]),
                            evidence.heatmap if heatmap else None,
                            "tumour" if heatmap else None, int(slices.orientation.axes[0]),
                            True, None, tumour)
    heat, heat_class = None, None
    if heatmap:
        if class_index is None:
            candidates = volume_probs.copy()
            if model.no_tumour_index is not None:
                candidates[model.no_tumour_index] = -1.0
            class_index = int(np.argmax(candidates))
        if not 0 <= class_index < len(model.classes):
            raise ValueError(f"class_index {class_index} out of range")
        heat_class = model.classes[class_index]
        maps = torch.cat([class_activation_maps(model, f, torch.full((len(f),), class_index))
                          for f in features])
        maps *= torch.from_numpy(slice_probs[:, class_index]).float()[:, None, None]
        heat = slices_to_volume(maps, slices)
        peak = float(heat.max())
        if peak > 0:
            heat /= peak
    return VolumeResult(model.classes, slice_probs, slices.brain_area, eligible, volume_probs,
                        heat, heat_class, int(slices.orientation.axes[0]))


def _volume_scope(model: Classifier, volume: np.ndarray, images: np.ndarray,
                  summary: torch.Tensor, eligible: np.ndarray) -> tuple[bool, str | None]:
    """Brain MRI when it is no noise and most eligible slices pass the scope guard."""
    problem = noise_problem(volume)
    if problem is not None:
        return False, problem
    in_scope, _ = scope_decisions(model, images[eligible], summary[torch.from_numpy(eligible)])
    share = float(in_scope.mean()) if len(in_scope) else 0.0
    if share >= MIN_IN_SCOPE_SLICES:
        return True, None
    return False, (f"it does not look like brain MRI: {share:.0%} of its slices resemble the "
                   "classifier's training images")
