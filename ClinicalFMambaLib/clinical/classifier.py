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

Volumes: see ``volume_verdict.classify_volume`` for the slice orientation and how the
tumour-evidence
network (``tumour_evidence``) and the classifier combine into the volume verdict.

Scope: with the bundled weights a scope guard (``scope_guard``) refuses inputs that are not
brain MRI: their results have ``in_scope`` False, a ``reason`` and no prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..io.weights import bundled, load_network
from ..networks.classifier_net import TumourEnsemble, TumourNet, build_model
from .images import colourfulness, prepare_image, to_original
from .scope_guard import ScopeGuard, image_problem, load_scope_guard
from .tumour_evidence import TumourEvidence, load_tumour_evidence

BUNDLED_NAME = "classifier2d.safetensors"
BUNDLED_GUARD = "scope_guard.safetensors"
# Stages of the classifier whose statistics the scope guard reads.
SCOPE_STAGES = 3


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
def forward_views(model: Classifier, images01: np.ndarray | torch.Tensor
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
    return np.concatenate([forward_views(model, images01[i:i + batch_size])[0].numpy()
                           for i in range(0, len(images01), batch_size)])


@torch.no_grad()
def class_activation_maps(model: Classifier, features: torch.Tensor,
                          class_index: torch.Tensor) -> torch.Tensor:
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


def scope_decisions(model: Classifier, prepared: np.ndarray, summary: torch.Tensor,
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
    probs, _, summary = forward_views(model, prepared[None])
    in_scope, reasons = scope_decisions(model, prepared[None], summary, [colourfulness(image)])
    return ImageResult(model.classes, probs[0].numpy(), bool(in_scope[0]), reasons[0])


def gradcam(model: Classifier, image: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Heatmap (H, W) in [0, 1] of where ``image`` shows evidence for ``class_index``
    (default: the predicted class), at the image's own resolution."""
    prepared, geometry = prepare_image(image, model.input_size)
    probs, features, _ = forward_views(model, prepared[None])
    if class_index is None:
        class_index = int(probs[0].argmax())
    if not 0 <= class_index < len(model.classes):
        raise ValueError(f"class_index {class_index} out of range for {len(model.classes)} classes")
    cam = class_activation_maps(model, features, torch.tensor([class_index]))[0]
    peak = float(cam.max())
    return np.clip(to_original(cam / peak if peak > 0 else cam, geometry), 0.0, 1.0)
