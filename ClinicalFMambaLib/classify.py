"""Tumour classification of (fused) images and volumes, with class-activation heatmaps.

Typical use::

    model = load_classifier()                       # bundled weights, loaded once
    probs = classify_images(model, [image])         # (N, C) probabilities
    heat = gradcam(model, image)                    # (H, W) in [0, 1]
    result = classify_volume(model, volume)         # (z, y, x) array, e.g. a fused volume

Heatmaps: the network ends in global average pooling and one linear layer, so Grad-CAM of a
class equals its class activation map (CAM): ReLU(sum_k w_ck A_k) over the last-stage
feature maps A_k (of the image and its left-right mirror, averaged; of every member of an
ensemble, side by side). It is computed in the same forward pass as the probabilities (no
backward pass) and upsampled bilinearly to the input's resolution.

Volumes: see ``classify_volume`` for the slice orientation and how the tumour-evidence
network (``tumour_evidence``) and the classifier combine into the volume verdict.

Scope: with the bundled weights a scope guard (``scope_guard``) refuses inputs that are not
brain MRI: their results have ``in_scope`` False, a ``reason`` and no prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .classifier_images import check_image, colourfulness, prepare_image, to_original
from .classifier_model import TumourEnsemble, TumourNet, build_model
from .classifier_volumes import (MIN_BRAIN_FRACTION, brain_mask, prepare_volume_sizes,
                                 slices_to_volume)
from .scope_guard import ScopeGuard, image_problem, load_scope_guard
from .tumour_evidence import (TumourEvidence, load_tumour_evidence, slice_evidence,
                              tumour_verdict, volume_tumour_probability)
from .weights import bundled, load_network

__all__ = ["Cancelled", "Classifier", "ImageResult", "VolumeResult", "aggregate_slices",
           "brain_mask", "classify_image", "classify_images", "classify_volume", "gradcam",
           "heatmap_overlay", "load_classifier", "prepared_probabilities", "result_record",
           "save_heatmap_png", "save_heatmap_volume"]

BUNDLED_NAME = "classifier2d.safetensors"
BUNDLED_GUARD = "scope_guard.safetensors"
# Stages of the classifier whose statistics the scope guard reads.
SCOPE_STAGES = 3
# A volume is brain MRI when at least this share of its eligible slices passes the guard.
MIN_IN_SCOPE_SLICES = 0.5


class Cancelled(RuntimeError):
    """The caller's ``cancel()`` returned True."""


@dataclass
class Classifier:
    """A loaded network with the config that describes its classes and inputs."""

    net: TumourNet | TumourEnsemble
    config: dict
    device: torch.device
    guard: ScopeGuard | None = None          # refuses inputs that are not brain MRI
    evidence: TumourEvidence | None = None   # tumour / no tumour on volumes

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def input_size(self) -> int:
        return int(self.config["input_size"])

    @property
    def no_tumour_index(self) -> int | None:
        name = self.config.get("no_tumour_class")
        return self.classes.index(name) if name in self.classes else None

    def normalise(self, images01: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, S, S) in [0, 1] -> network input (N, 1, S, S) on the model's device."""
        norm = self.config["normalisation"]
        x = torch.as_tensor(images01, dtype=torch.float32)[:, None]
        return ((x - norm["mean"]) / norm["std"]).to(self.device)


_LOADED: dict[tuple, Classifier] = {}


def load_classifier(path: str | Path | None = None, device: str = "cpu",
                    verify: bool = True, companions: bool = True) -> Classifier:
    """Load (once per file and device) a classifier; default: the bundled one, with the
    bundled scope guard and tumour-evidence network (fitted for it; ``companions=False``
    leaves them out, as when fitting them).

    The file's SHA-256 must match the MANIFEST.json beside it unless ``verify`` is False.
    """
    path = Path(path) if path is not None else bundled(BUNDLED_NAME)
    if not path.exists():
        raise FileNotFoundError(f"classifier weights not found: {path}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(device), verify, companions)
    if key not in _LOADED:
        net, config = load_network(path, "TumourNet", "a tumour classifier", build_model, verify)
        model = Classifier(net.to(device), config, torch.device(device))
        if companions and path.resolve() == bundled(BUNDLED_NAME).resolve():
            model.guard = load_scope_guard(bundled(BUNDLED_GUARD), verify=verify)
            model.evidence = load_tumour_evidence(verify=verify)
        _LOADED[key] = model
    return _LOADED[key]


def _scope_summary(stages: list[torch.Tensor]) -> torch.Tensor:
    """The scope guard's summary (N, D): the channel means and standard deviations of the
    first three stages, image statistics from edges to textures. (Of four summaries measured
    in docs/classifier.md, the only one that refused every sample photo at the same false-
    refusal rate; the last stage's tumour-level features place some photos among MRI.)"""
    return torch.cat([torch.cat([stage.mean(dim=(2, 3)), stage.std(dim=(2, 3))], 1)
                      for stage in stages[:SCOPE_STAGES]], 1)


@torch.no_grad()
def _forward(model: Classifier, images01: np.ndarray | torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Probabilities (N, C), class-evidence maps (N, K, h, w) and the scope guard's summary
    (N, D) of prepared images.

    Probabilities and maps are those of the image and its left-right mirror averaged (the
    classifier was trained with left-right flips, and a tumour is as likely on either side):
    the head is affine in the pooled maps, so the mirror's maps, flipped back and averaged
    with the image's, give the mean of the two views' logits and its class activation map.
    The summary is the image's own."""
    x = model.normalise(images01)
    stages = model.net.stage_outputs(x)
    features = (stages[-1] + model.net.features(x.flip(-1)).flip(-1)) / 2
    probs = torch.softmax(model.net.classify_features(features), dim=1)
    return probs.cpu(), features, _scope_summary(stages).cpu()


@torch.no_grad()
def scope_features(model: Classifier, images01: np.ndarray, batch_size: int = 64
                   ) -> torch.Tensor:
    """The scope guard's summary (N, D) of prepared images."""
    return torch.cat([
        _scope_summary(model.net.stage_outputs(model.normalise(images01[i:i + batch_size]))).cpu()
        for i in range(0, len(images01), batch_size)])


def prepared_probabilities(model: Classifier, images01: np.ndarray, batch_size: int = 32
                           ) -> np.ndarray:
    """Class probabilities (N, C) of images already prepared (``prepare_image``, in [0, 1])."""
    return np.concatenate([_forward(model, images01[i:i + batch_size])[0].numpy()
                           for i in range(0, len(images01), batch_size)])


@torch.no_grad()
def _cam(model: Classifier, features: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """Raw class activation maps (N, S, S) at the model's input resolution."""
    weight = model.net.class_weights()[class_index.to(features.device)]  # (N, K)
    cam = F.relu(torch.einsum("nk,nkhw->nhw", weight, features))
    size = model.input_size
    return F.interpolate(cam[:, None], size=(size, size), mode="bilinear",
                         align_corners=False)[:, 0].cpu()


def classify_images(model: Classifier, images: Sequence[np.ndarray],
                    batch_size: int = 32) -> np.ndarray:
    """Class probabilities (N, C) of 2D images (grey (H, W) or colour (H, W, 3), any size,
    any intensity range); columns follow ``model.classes``."""
    if isinstance(images, np.ndarray) and images.ndim == 2:
        raise ValueError("images must be a list of 2D images, not a single 2D array")
    if len(images) == 0:
        raise ValueError("no images to classify")
    prepared = np.stack([prepare_image(image, model.input_size)[0] for image in images])
    return prepared_probabilities(model, prepared, batch_size)


def _scope(model: Classifier, prepared: np.ndarray, summary: torch.Tensor,
           colour: Sequence[float] | None = None) -> tuple[np.ndarray, list[str | None]]:
    """Per prepared image: in scope (bool) and, when not, why."""
    colour = colour if colour is not None else [0.0] * len(prepared)
    problems = [image_problem(image, c) for image, c in zip(prepared, colour)]
    far = np.zeros(len(prepared), bool)
    if model.guard is not None:
        far = ~model.guard.in_scope(summary).numpy()
    reasons = [problem or ("it does not look like brain MRI (far from the classifier's "
                           "training images)" if outside else None)
               for problem, outside in zip(problems, far)]
    return np.array([reason is None for reason in reasons]), reasons


@dataclass
class ImageResult:
    """Classification of one 2D image; no prediction when it is out of scope."""

    classes: list[str]
    probabilities: np.ndarray  # (C,)
    in_scope: bool
    reason: str | None

    @property
    def prediction(self) -> str | None:
        return self.classes[int(np.argmax(self.probabilities))] if self.in_scope else None


def classify_image(model: Classifier, image: np.ndarray) -> ImageResult:
    """Class probabilities of one 2D image (grey, or (H, W, 3) colour as read), with the
    scope guard's decision."""
    prepared, _ = prepare_image(image, model.input_size)
    probs, _, summary = _forward(model, prepared[None])
    in_scope, reasons = _scope(model, prepared[None], summary, [colourfulness(image)])
    return ImageResult(model.classes, probs[0].numpy(), bool(in_scope[0]), reasons[0])


def gradcam(model: Classifier, image: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Heatmap (H, W) in [0, 1] of where ``image`` shows evidence for ``class_index``
    (default: the predicted class), at the image's own resolution."""
    prepared, geometry = prepare_image(image, model.input_size)
    probs, features, _ = _forward(model, prepared[None])
    if class_index is None:
        class_index = int(probs[0].argmax())
    if not 0 <= class_index < len(model.classes):
        raise ValueError(f"class_index {class_index} out of range for {len(model.classes)} classes")
    cam = _cam(model, features, torch.tensor([class_index]))[0]
    peak = float(cam.max())
    return np.clip(to_original(cam / peak if peak > 0 else cam, geometry), 0.0, 1.0)


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
        """A class; "uncertain" when the tumour evidence is neither strong nor absent;
        None out of scope."""
        if not self.in_scope:
            return None
        if self.tumour_probability is not None and \
                tumour_verdict(self.tumour_probability) == "uncertain":
            return "uncertain"
        return self.classes[int(np.argmax(self.probabilities))]


def _tumour_type_split(model: Classifier, slice_probs: np.ndarray, tumour: np.ndarray
                       ) -> np.ndarray:
    """(Z, C) probabilities: 1 - ``tumour`` for no tumour, ``tumour`` shared among the
    tumour classes in the classifier's proportions."""
    index = model.no_tumour_index
    types = slice_probs.copy()
    types[:, index] = 0.0
    types /= np.maximum(types.sum(1, keepdims=True), 1e-12)
    out = types * tumour[:, None]
    out[:, index] = 1.0 - tumour
    return out


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
        batch_probs, batch_features, batch_summary = _forward(
            model, slices.images[start:start + batch_size])
        probs.append(batch_probs)
        summaries.append(batch_summary)
        if heatmap:
            features.append(batch_features)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    slice_probs = torch.cat(probs).numpy()
    volume_probs, eligible = aggregate_slices(slice_probs, slices.brain_area)
    in_scope, reason = _volume_scope(model, slices.images, torch.cat(summaries), eligible)
    if not in_scope:
        return VolumeResult(model.classes, slice_probs, slices.brain_area, eligible,
                            volume_probs, None, None, int(slices.orientation.axes[0]),
                            False, reason)
    if with_evidence:
        if cancel is not None and cancel():
            raise Cancelled("volume classification cancelled")
        evidence = slice_evidence(model.evidence, evidence_slices[0])
        tumour = volume_tumour_probability(evidence.probabilities, evidence.eligible)
        weights = np.where(evidence.eligible, evidence.probabilities, 0.0)
        if weights.sum() <= 0:
            weights = evidence.eligible.astype(np.float64)
        type_mix = (weights[:, None] * slice_probs).sum(0) / weights.sum()
        return VolumeResult(model.classes,
                            _tumour_type_split(model, slice_probs, evidence.probabilities),
                            evidence.brain_area, evidence.eligible,
                            _tumour_type_split(model, type_mix[None], np.array([tumour]))[0],
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
        maps = torch.cat([_cam(model, f, torch.full((len(f),), class_index)) for f in features])
        maps *= torch.from_numpy(slice_probs[:, class_index]).float()[:, None, None]
        heat = slices_to_volume(maps, slices)
        peak = float(heat.max())
        if peak > 0:
            heat /= peak
    return VolumeResult(model.classes, slice_probs, slices.brain_area, eligible, volume_probs,
                        heat, heat_class, int(slices.orientation.axes[0]))


def _volume_scope(model: Classifier, images: np.ndarray, summary: torch.Tensor,
                  eligible: np.ndarray) -> tuple[bool, str | None]:
    """Brain MRI when most eligible slices pass the scope guard."""
    in_scope, _ = _scope(model, images[eligible], summary[torch.from_numpy(eligible)])
    share = float(in_scope.mean()) if len(in_scope) else 0.0
    if share >= MIN_IN_SCOPE_SLICES:
        return True, None
    return False, (f"it does not look like brain MRI: {share:.0%} of its slices resemble the "
                   "classifier's training images")


def result_record(result: ImageResult | VolumeResult, slices: bool = False) -> dict:
    """The JSON-ready verdict shared by the CLI, fusion reports and the Slicer module."""
    record = {"in_scope": result.in_scope, "reason": result.reason,
              "prediction": result.prediction,
              "probabilities": ({name: round(float(p), 6) for name, p in
                                 zip(result.classes, result.probabilities)}
                                if result.in_scope else None)}
    if isinstance(result, VolumeResult):
        record.update({"tumour_probability": (None if result.tumour_probability is None
                                              else round(result.tumour_probability, 6)),
                       "heatmap_class": result.heatmap_class,
                       "slices": int(len(result.slice_probabilities)),
                       "eligible_slices": int(result.eligible.sum())})
        if slices and result.in_scope:
            record["slice_probabilities"] = [
                {name: round(float(p), 6) for name, p in zip(result.classes, row)}
                for row in result.slice_probabilities]
    return record


# --------------------------------------------------------------------------- outputs

def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """RGB uint8 overlay of a [0, 1] heatmap (black-red-yellow-white) on a grey image."""
    from .classifier_images import window

    grey = window(check_image(image))
    colour = np.stack([np.clip(3 * heatmap, 0, 1), np.clip(3 * heatmap - 1, 0, 1),
                       np.clip(3 * heatmap - 2, 0, 1)], -1)
    alpha = 0.6 * heatmap[..., None]
    return np.round(255 * ((1 - alpha) * grey[..., None] + alpha * colour)).astype(np.uint8)


def save_heatmap_png(image: np.ndarray, heatmap: np.ndarray, path: str | Path) -> Path:
    """Write the heatmap overlaid on the image as an RGB PNG."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(heatmap_overlay(image, heatmap)).save(path)
    return path


def save_heatmap_volume(heatmap: np.ndarray, reference: str | Path, path: str | Path) -> Path:
    """Write a heatmap volume with the geometry (origin, spacing, direction) of ``reference``."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    reader.ReadImageInformation()
    image = sitk.GetImageFromArray(heatmap.astype(np.float32))
    image.SetOrigin(reader.GetOrigin())
    image.SetSpacing(reader.GetSpacing())
    image.SetDirection(reader.GetDirection())
    path = Path(path)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path
