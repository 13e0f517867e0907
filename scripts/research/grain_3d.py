"""Grain of the 3D model's fusion in the flat regions of both sources, and where it comes from.

    python scripts/research/grain_3d.py [--weights W ...] [--pair t2 flair] [--threads 2]

On a contrast pair of the held-back case (brain3d_data.VALIDATION_CASE, whole volumes): the
flat-region grain (evaluation/grain.py) of the two sources and of mean / max / Laplacian fusion, and
for each weights file (default: the bundled 3D model) the model's fusion as ``fuse_volumes``
runs it (one pass over the brain box on the CPU), in overlapping 128^3 patches (the former CPU
tiling, to see whether seams add grain) and with the full-resolution refinement's output set to
zero (to see whether that stage adds it). For the sources, baselines and the one-pass and
no-refinement fusions: the ten 2D metrics over 30 axial slices (as scripts/research/fusion_results_3d.py)
and on how many of them each fusion beats each baseline.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ClinicalFMambaLib.core.intensity import signal_box
from ClinicalFMambaLib.evaluation.grain import flat_mask, flat_noise
from ClinicalFMambaLib.evaluation.metrics import METRIC_NAMES
from ClinicalFMambaLib.evaluation.ranking import metric_wins
from ClinicalFMambaLib.evaluation.volume_metrics import volume_fusion_metrics
from ClinicalFMambaLib.fusion.inference import BUNDLED_MODELS, load_fusion_model
from ClinicalFMambaLib.fusion.sliding_window import sliding_window_fuse
from ClinicalFMambaLib.fusion.volumes import BOX_MARGIN, fuse_volumes
from ClinicalFMambaLib.io.weights import bundled
from ClinicalFMambaLib.objective.baselines import BASELINES
from ClinicalFMambaLib.training.brain3d_data import VALIDATION_CASE, normalise_case


def without_refinement(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose full-resolution refinement adds nothing (last layer zeroed)."""
    model = copy.deepcopy(model)
    torch.nn.init.zeros_(model.refine[-1].weight)
    torch.nn.init.zeros_(model.refine[-1].bias)
    return model


def in_patches(model: torch.nn.Module, a: np.ndarray, b: np.ndarray, patch: int) -> np.ndarray:
    fused = np.zeros_like(a)
    signal = (a > 0) | (b > 0)
    box = signal_box(signal, BOX_MARGIN)
    fused[box] = sliding_window_fuse(model, a[box], b[box], patch=patch)
    fused[~signal] = 0
    return fused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/brain3d")
    parser.add_argument("--weights", type=Path, action="append", default=[])
    parser.add_argument("--pair", nargs=2, default=["t2", "flair"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    case = Path(args.data) / VALIDATION_CASE
    raw = {c: sitk.GetArrayFromImage(sitk.ReadImage(str(case / f"{c}.nii.gz"))) for c in args.pair}
    unit = normalise_case(raw)
    a, b = (unit[c] for c in args.pair)
    flat = flat_mask(a, b)
    print(f"{VALIDATION_CASE} {'+'.join(args.pair)}: {int(flat.sum())} flat voxels")
    scored = {name: fn(a, b) for name, fn in BASELINES.items()}
    grain = {args.pair[0]: flat_noise(a, flat), args.pair[1]: flat_noise(b, flat),
             **{name: flat_noise(f, flat) for name, f in scored.items()}}
    for weights in args.weights or [bundled(BUNDLED_MODELS[3])]:
        model = load_fusion_model(weights, dims=3, device="cpu")
        one_pass = fuse_volumes(model, raw[args.pair[0]], raw[args.pair[1]]).luma
        no_refine = fuse_volumes(without_refinement(model), raw[args.pair[0]],
                                 raw[args.pair[1]]).luma
        scored |= {f"{weights}": one_pass, f"{weights}, no refinement": no_refine}
        grain |= {f"{weights}": flat_noise(one_pass, flat),
                  f"{weights}, 128^3 patches": flat_noise(in_patches(model, a, b, 128), flat),
                  f"{weights}, no refinement": flat_noise(no_refine, flat)}
    print("grain (std of the high-pass residual in flat regions):")
    for name, value in grain.items():
        print(f"  {value:.5f}  {name}")
    metrics = {name: volume_fusion_metrics(a, b, f, slices=30) for name, f in scored.items()}
    print("ten 2D metrics (30 axial slices): " + " ".join(METRIC_NAMES))
    for name, values in metrics.items():
        wins = ("" if name in BASELINES else "  wins: " + ", ".join(
            f"{b} {len(metric_wins(values, metrics[b]))}/10" for b in BASELINES))
        print(f"  {name}: " + " ".join(f"{values[k]:.3f}" for k in METRIC_NAMES) + wins)


if __name__ == "__main__":
    main()
