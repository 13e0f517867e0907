"""Tumour classification of (fused) images and volumes, with class-activation heatmaps.

Typical use::

    model = load_classifier()                       # bundled weights, loaded once
    probs = classify_images(model, [image])         # (N, C) probabilities
    heat = gradcam(model, image)                    # (H, W) in [0, 1]
    result = classify_volume(model, volume)         # (z, y, x) array, e.g. a fused volume

Heatmaps: the network ends in global average pooling and one linear layer, so Grad-CAM of a
class equals its class activation map (CAM): ReLU(sum_k w_ck A_k) over the last-stage
feature maps A_k. It is computed in the same forward pass as the probabilities (no backward
pass) and upsampled bilinearly to the input's resolution.

Volumes: see ``classify_volume`` for the slice orientation and ``aggregate_slices`` for how
slice probabilities become the volume verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .classifier_data import (MIN_BRAIN_FRACTION, brain_mask, check_image, prepare_image,
                              prepare_volume, slices_to_volume, to_original)
from .classifier_model import TumourNet, build_model
from .weights import bundled, load_weights

__all__ = ["Cancelled", "Classifier", "VolumeResult", "aggregate_slices", "brain_mask",
           "classify_images", "classify_volume", "gradcam", "heatmap_overlay",
           "load_classifier", "save_heatmap_png", "save_heatmap_volume"]

BUNDLED_NAME = "classifier2d.safetensors"


class Cancelled(RuntimeError):
    """The caller's ``cancel()`` returned True."""


@dataclass
class Classifier:
    """A loaded network with the config that describes its classes and inputs."""

    net: TumourNet
    config: dict
    device: torch.device

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
                    verify: bool = True) -> Classifier:
    """Load (once per file and device) a classifier; default: the bundled one.

    The file's SHA-256 must match the MANIFEST.json beside it unless ``verify`` is False.
    """
    path = Path(path) if path is not None else bundled(BUNDLED_NAME)
    if not path.exists():
        raise FileNotFoundError(f"classifier weights not found: {path}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(device), verify)
    if key not in _LOADED:
        state, config = load_weights(path, verify=verify)
        if config.get("model") != "TumourNet":
            raise ValueError(f"{path} is not a tumour classifier (config model "
                             f"{config.get('model')!r})")
        net = build_model(config)
        net.load_state_dict(state)
        _LOADED[key] = Classifier(net.to(device).eval(), config, torch.device(device))
    return _LOADED[key]


@torch.no_grad()
def _forward(model: Classifier, images01: np.ndarray | torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (N, C) and last-stage features (N, K, h, w) of prepared images."""
    features = model.net.features(model.normalise(images01))
    probs = torch.softmax(model.net.classify_features(features), dim=1)
    return probs.cpu(), features


@torch.no_grad()
def _cam(model: Classifier, features: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """Raw class activation maps (N, S, S) at the model's input resolution."""
    weight = model.net.head[-1].weight[class_index.to(features.device)]  # (N, K)
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
    return np.concatenate([_forward(model, prepared[i:i + batch_size])[0].numpy()
                           for i in range(0, len(prepared), batch_size)])


def gradcam(model: Classifier, image: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Heatmap (H, W) in [0, 1] of where ``image`` shows evidence for ``class_index``
    (default: the predicted class), at the image's own resolution."""
    prepared, geometry = prepare_image(image, model.input_size)
    probs, features = _forward(model, prepared[None])
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

    Slice arrays run along ``axial_axis`` of the input, in the input's slice order.
    """

    classes: list[str]
    slice_probabilities: np.ndarray  # (Z, C)
    brain_area: np.ndarray           # (Z,) brain pixels per slice
    eligible: np.ndarray             # (Z,) slices that take part in the verdict
    probabilities: np.ndarray        # (C,) volume probabilities
    heatmap: np.ndarray | None       # input's shape, [0, 1], zero outside the brain
    heatmap_class: str | None
    axial_axis: int

    @property
    def prediction(self) -> str:
        return self.classes[int(np.argmax(self.probabilities))]


def classify_volume(model: Classifier, volume: np.ndarray, batch_size: int = 16,
                    progress: Callable[[int, int], None] | None = None,
                    cancel: Callable[[], bool] | None = None, direction=None,
                    space: str = "LPS", heatmap: bool = True,
                    class_index: int | None = None) -> VolumeResult:
    """Classify every axial slice of ``volume`` (a (z, y, x) = (k, j, i) array) in batches.

    Orientation: with ``direction=None`` the array is taken as axial slices whose rows run
    anterior -> posterior and columns patient right -> left, which is how SimpleITK returns
    BraTS-convention NIfTI files (identity direction). Otherwise pass the 3x3 direction
    matrix of the i, j, k axes: SimpleITK's ``GetDirection()`` (LPS), or Slicer's
    ``GetIJKToRASDirections`` with ``space="RAS"``. Slices are then permuted/flipped to
    that radiological view (anterior up, patient right on the left), as in the training
    JPEGs; the intensity window is taken over the whole brain and each slice is cropped to
    the brain's in-plane bounding box.

    ``progress(done, total)`` is called after each batch; ``cancel()`` returning True stops
    with ``Cancelled``. The heatmap is the class activation map of ``class_index`` (default:
    the most likely tumour class, or the predicted class for models without a no-tumour
    class), weighted per slice by that slice's probability of the class, scaled to [0, 1]
    over the volume and zero outside the brain mask.
    """
    slices = prepare_volume(volume, model.input_size, direction, space)
    total = len(slices.images)
    probs, features = [], []
    for start in range(0, total, max(1, batch_size)):
        if cancel is not None and cancel():
            raise Cancelled("volume classification cancelled")
        batch_probs, batch_features = _forward(model, slices.images[start:start + batch_size])
        probs.append(batch_probs)
        if heatmap:
            features.append(batch_features)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    slice_probs = torch.cat(probs).numpy()
    volume_probs, eligible = aggregate_slices(slice_probs, slices.brain_area)
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


# --------------------------------------------------------------------------- outputs

def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """RGB uint8 overlay of a [0, 1] heatmap (black-red-yellow-white) on a grey image."""
    from .classifier_data import window

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
