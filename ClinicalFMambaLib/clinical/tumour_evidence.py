"""Tumour evidence on the axial slices of a brain volume: per-pixel heatmap, calibrated
per-slice probability and the volume rule (see docs/classifier.md, "Volume verdict").

The evidence network (``tumour_seg_model``) was trained on labelled skull-stripped MRI
volumes of every contrast and on fused pairs. A slice's probability is a logistic function of
two classical cues computed on the input slice: the left-right asymmetry of its brightest
voxels (``asymmetry.asymmetry_scores``) and the share of one-sided bright pixels
(``asymmetry.one_sided_share``), each smoothed along the slice axis (a Gaussian
of ``slice_smoothing_mm``, stored with the weights: a tumour spans several millimetres of
slices, noise in one slice's cues does not), with weights fitted on leave-one-case-out
slices and stored with the network. The network's own slice score is reported and not used:
joined with the cues it lowered the slice AUC of a calibration fitted without the held-out
case (docs/classifier.md); the network gives the heatmap. The
volume's tumour probability is the ``VOLUME_RANK``-th highest slice probability among the
slices that hold enough brain: a tumour spans several slices, a single suspicious slice does
not make one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from ..io.weights import bundled, load_network
from ..networks.tumour_net import TumourSegNet, build_seg_model, slice_logits
from .asymmetry import asymmetry_scores, one_sided_pixels, one_sided_share
from .volumes import MIN_BRAIN_FRACTION, VolumeSlices, prepare_volume, slices_to_volume

BUNDLED_EVIDENCE = "tumour_evidence.safetensors"
VOLUME_RANK = 3
# Voxels whose tumour probability is below HEATMAP_FLOOR are left out of the heatmap: it shows
# the region the network calls tumour, weighted by its probability, not a faint haze over the
# whole brain (which would hold most of the map's mass).
HEATMAP_FLOOR = 0.5
# The heatmap is also weighted by the one-sided bright pixels (the slice cue's), smoothed by
# a Gaussian of HEATMAP_SPREAD prepared pixels (about 2.5 mm): it shows where the network and
# the classical cue agree. This leaves out the network's false positives where nothing is
# one-sided (docs/classifier.md, "Heatmap"), and a lesion symmetric about the midline too.
HEATMAP_SPREAD = 1.0
# Volume tumour probability at or above TUMOUR_AT: a tumour; at or below NO_TUMOUR_AT: none;
# in between the verdict is "uncertain".
TUMOUR_AT = 0.7
NO_TUMOUR_AT = 0.3
ASYMMETRY_OFFSET = 1e-3


@dataclass
class TumourEvidence:
    net: TumourSegNet
    config: dict

    @property
    def input_size(self) -> int:
        return int(self.config["input_size"])

    def calibrate(self, asymmetry: np.ndarray, one_sided: np.ndarray,
                  slice_spacing: float) -> np.ndarray:
        """Slice cues of consecutive slices ``slice_spacing`` mm apart -> calibrated tumour
        probabilities."""
        # Weights calibrated before the smoothing existed have no entry: unsmoothed.
        smoothing_mm = float(self.config.get("slice_smoothing_mm", 0.0))
        return calibrated(slice_features(asymmetry, one_sided, smoothing_mm, slice_spacing),
                          self.config["calibration"])


def calibrated(features: np.ndarray, calibration) -> np.ndarray:
    """(Z, F) calibration features -> tumour probabilities, by the weights and bias."""
    weights = np.asarray(calibration, np.float64)
    return 1.0 / (1.0 + np.exp(-(features @ weights[:-1] + weights[-1])))


def slice_features(asymmetry: np.ndarray, one_sided: np.ndarray, smoothing_mm: float = 0.0,
                   slice_spacing: float = 1.0) -> np.ndarray:
    """(Z, 2) features of the calibration: the logs of the asymmetry and of the one-sided
    share (both shares of the largest slice's brain area; the offset keeps the log of an empty
    slice finite), smoothed along slices ``slice_spacing`` mm apart by a Gaussian of
    ``smoothing_mm``."""
    logs = np.log(np.stack([np.asarray(asymmetry, np.float64),
                            np.asarray(one_sided, np.float64)], 1) + ASYMMETRY_OFFSET)
    if smoothing_mm <= 0:
        return logs
    return ndimage.gaussian_filter1d(logs, smoothing_mm / slice_spacing, axis=0, mode="nearest")


@dataclass(frozen=True)
class SliceEvidence:
    logits: np.ndarray          # (Z,) the network's slice scores (reported, not calibrated)
    asymmetry: np.ndarray       # (Z,) left-right asymmetry of the brightest voxels
    one_sided: np.ndarray       # (Z,) share of one-sided bright pixels
    probabilities: np.ndarray   # (Z,) calibrated tumour probability per axial slice
    heatmap: np.ndarray         # input's shape, per-voxel tumour probability, 0 outside brain
    brain_area: np.ndarray      # (Z,)
    eligible: np.ndarray        # (Z,) slices that take part in the volume verdict
    slice_spacing: float        # mm between the slices


_LOADED: dict[tuple, TumourEvidence] = {}


def load_tumour_evidence(path: str | Path | None = None, verify: bool = True) -> TumourEvidence:
    """Load (once per file) the evidence network; default: the bundled one."""
    path = Path(path) if path is not None else bundled(BUNDLED_EVIDENCE)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, verify)
    if key not in _LOADED:
        net, config = load_network(path, "TumourSegNet", "a tumour-evidence network",
                                   build_seg_model, verify)
        _LOADED[key] = TumourEvidence(net, config)
    return _LOADED[key]


@torch.no_grad()
def pixel_logits(net: TumourSegNet, images: np.ndarray) -> torch.Tensor:
    """(N, S, S) prepared slices -> (N, 1, S, S) logits."""
    return net(torch.from_numpy(np.ascontiguousarray(images, np.float32))[:, None])


def slice_evidence(evidence: TumourEvidence, slices: VolumeSlices, batch_size: int = 32
                   ) -> SliceEvidence:
    """Calibrated slice probabilities and the voxel heatmap of a volume prepared at the
    network's ``input_size``."""
    # On the prepared slices the crop is centred on the brain and zero outside it.
    brain = slices.images > 0
    bright = one_sided_pixels(slices.images, brain)
    agreement = torch.from_numpy(ndimage.gaussian_filter(
        bright.astype(np.float32), (0, HEATMAP_SPREAD, HEATMAP_SPREAD)))
    logits, maps = [], []
    for start in range(0, len(slices.images), batch_size):
        pixel = pixel_logits(evidence.net, slices.images[start:start + batch_size])
        logits.append(slice_logits(pixel))
        probabilities = torch.sigmoid(pixel[:, 0])
        maps.append(probabilities * (probabilities >= HEATMAP_FLOOR)
                    * agreement[start:start + batch_size])
    heatmap = slices_to_volume(torch.cat(maps), slices)
    area = slices.brain_area
    eligible = area >= MIN_BRAIN_FRACTION * area.max()
    raw = torch.cat(logits).numpy()
    asymmetry = asymmetry_scores(slices.images, brain)
    one_sided = one_sided_share(bright, brain)
    return SliceEvidence(raw, asymmetry, one_sided,
                         evidence.calibrate(asymmetry, one_sided, slices.slice_spacing),
                         heatmap, area, eligible, slices.slice_spacing)


def volume_evidence(evidence: TumourEvidence, volume: np.ndarray, direction=None,
                    space: str = "LPS", spacing: Sequence[float] | None = None
                    ) -> SliceEvidence:
    """``slice_evidence`` of a (z, y, x) volume (``spacing``: (i, j, k), as in
    ``classify_volume``)."""
    return slice_evidence(evidence, prepare_volume(volume, evidence.input_size, direction,
                                                   space, spacing))


def tumour_verdict(probability: float) -> str:
    """The volume rule's word for a tumour probability: "tumour", "uncertain" or "no tumour"."""
    if probability >= TUMOUR_AT:
        return "tumour"
    return "no tumour" if probability <= NO_TUMOUR_AT else "uncertain"


def volume_tumour_probability(slice_probabilities: np.ndarray, eligible: np.ndarray) -> float:
    """The VOLUME_RANK-th highest slice probability among eligible slices."""
    values = np.sort(np.asarray(slice_probabilities)[np.asarray(eligible, bool)])[::-1]
    if len(values) == 0:
        raise ValueError("no slice holds enough brain for a volume verdict")
    return float(values[min(VOLUME_RANK, len(values)) - 1])
