"""Calibrate the tumour evidence on tumour volumes and tumour-free volumes together, measured
leave one volume out (docs/classifier.md, "Specificity").

    python scripts/build/calibrate_tumour_evidence.py \
        --output runs/evidence-calibrated/tumour_evidence.safetensors \
        [--weights Resources/weights/tumour_evidence.safetensors] [--report runs/evidence-calibrated]

The slice probability is a logistic function of two classical cues of the slice (left-right
asymmetry of its brightest voxels, share of one-sided bright pixels; ``clinical.tumour_evidence``),
so calibrating needs no training of the network: the network's tensors are kept, only the
calibration in the weights' config changes. Slices: every image of the labelled brain3d cases
(each contrast and fused pair; a slice is tumour where the segmentation is) and every slice of
the tumour-free volumes of ../shared/data/healthy (heads, brains, and each head with its brain
mask applied). Each volume group (a case with all its images; a template with its stripped
version) counts as much as any other, whatever its number of slices.

Reported, leave one group out (the calibration fitted without the group, then its volumes'
verdicts): every volume's tumour probability and verdict, before (the weights' own
calibration) and after; the volume-level ROC AUC of tumour against tumour-free volumes; the
operating points of the notumor / uncertain / tumour thresholds. Then the calibration fitted
on every group is written with the network into --output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "research"))

from volume_verdicts import healthy_volumes  # noqa: E402

from ClinicalFMambaLib.clinical.asymmetry import (asymmetry_scores,  # noqa: E402
                                                  one_sided_pixels, one_sided_share)
from ClinicalFMambaLib.clinical.tumour_evidence import (NO_TUMOUR_AT, TUMOUR_AT,  # noqa: E402
                                                        BUNDLED_EVIDENCE, calibrated,
                                                        load_tumour_evidence, slice_features,
                                                        tumour_verdict,
                                                        volume_tumour_probability)
from ClinicalFMambaLib.clinical.volumes import MIN_BRAIN_FRACTION, prepare_volume  # noqa: E402
from ClinicalFMambaLib.io.weights import bundled, load_weights, save_weights  # noqa: E402
from ClinicalFMambaLib.training.classifier_training import roc_auc  # noqa: E402
from ClinicalFMambaLib.training.tumour_labels import SEGMENTATION_NAME, read_array  # noqa: E402
from ClinicalFMambaLib.training.tumour_training import case_images  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


@dataclass
class VolumeCues:
    """One volume's calibration features (its brain slices), their tumour labels, and what
    its volume verdict needs."""
    group: str
    name: str
    tumour: bool
    features: np.ndarray     # (brain slices, 2)
    labels: np.ndarray       # (brain slices,) bool
    eligible: np.ndarray     # (brain slices,) bool


def cues_of(evidence, group: str, name: str, image: sitk.Image, tumour_slices=None,
            tumour: bool = False, erode: int = 0) -> VolumeCues:
    """The volume's calibration cues; ``erode``: pixels of the brain's edge left out of both
    cues (where a brain mask that misses the brain's outline makes bright, one-sided rims)."""
    slices = prepare_volume(sitk.GetArrayFromImage(image), evidence.input_size,
                            image.GetDirection(), spacing=image.GetSpacing())
    brain = slices.images > 0
    if erode:
        brain = ndimage.binary_erosion(brain, np.ones((1, 3, 3), bool), iterations=erode)
    asymmetry = asymmetry_scores(slices.images, brain)
    one_sided = one_sided_share(one_sided_pixels(slices.images, brain), brain)
    area = slices.brain_area
    eligible = area >= MIN_BRAIN_FRACTION * area.max()
    has = area > 0
    features = slice_features(asymmetry, one_sided,
                              float(evidence.config.get("slice_smoothing_mm", 0.0)),
                              slices.slice_spacing)[has]
    labels = (np.zeros(len(has), bool) if tumour_slices is None else tumour_slices)[has]
    return VolumeCues(group, name, tumour, features, labels, eligible[has])


def logistic_fit(features: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> list[float]:
    """Weights and bias of p = sigmoid(features @ w + b), by L-BFGS on the weighted log loss."""
    x = torch.tensor(features, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    w = torch.tensor(weights / weights.mean(), dtype=torch.float64)
    params = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([params], max_iter=2000, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            x @ params[:-1] + params[-1], y, weight=w)
        loss.backward()
        return loss

    optimiser.step(closure)
    return [float(v) for v in params.detach()]


def fit(volumes: list[VolumeCues]) -> list[float]:
    """Tumour cases and tumour-free groups weigh alike in all, each group alike within its
    kind; within a tumour case, its tumour and tumour-free slices weigh alike (so the few
    tumour slices are not drowned)."""
    features, labels, weights = [], [], []
    for volume in volumes:
        kind = {v.group for v in volumes if v.tumour == volume.tumour}
        in_group = sum(len(v.labels) for v in volumes if v.group == volume.group)
        weight = np.full(len(volume.labels), 1.0 / (in_group * len(kind)))
        if volume.labels.any():
            share = volume.labels.mean()
            weight *= np.where(volume.labels, 0.5 / share, 0.5 / (1 - share))
        features.append(volume.features)
        labels.append(volume.labels)
        weights.append(weight)
    return logistic_fit(np.concatenate(features), np.concatenate(labels).astype(float),
                        np.concatenate(weights))


def volume_probability(volume: VolumeCues, calibration) -> float:
    return volume_tumour_probability(calibrated(volume.features, calibration), volume.eligible)


def operating_points(rows: list[dict], key: str) -> dict:
    tumour = [r for r in rows if r["tumour"]]
    healthy = [r for r in rows if not r["tumour"]]
    count = lambda rs, word: sum(tumour_verdict(r[key]) == word for r in rs)  # noqa: E731
    return {"tumour_at": TUMOUR_AT, "no_tumour_at": NO_TUMOUR_AT,
            "tumour volumes called tumour": f"{count(tumour, 'tumour')}/{len(tumour)}",
            "tumour volumes called no tumour": f"{count(tumour, 'no tumour')}/{len(tumour)}",
            "tumour-free volumes called tumour": f"{count(healthy, 'tumour')}/{len(healthy)}",
            "tumour-free volumes called no tumour":
                f"{count(healthy, 'no tumour')}/{len(healthy)}",
            "volume ROC AUC": roc_auc(np.array([r["tumour"] for r in rows]),
                                      np.array([r[key] for r in rows]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--weights", type=Path, default=None,
                        help="evidence weights whose network is kept (default: the bundled)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--report", type=Path, default=None, help="folder for report.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--erode", type=int, default=0,
                        help="pixels of the brain's edge left out of the cues (0: as bundled)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    source = args.weights or bundled(BUNDLED_EVIDENCE)
    evidence = load_tumour_evidence(source)
    volumes = []
    for case in sorted(p for p in (args.data / "brain3d").iterdir() if p.is_dir()):
        if not (case / SEGMENTATION_NAME).exists():
            continue  # slices need labels; its volumes are verdicts of the report only
        tumour = (read_array(case / SEGMENTATION_NAME) > 0).any(axis=(1, 2))
        for kind, image in case_images(case).items():
            volumes.append(cues_of(evidence, case.name, f"{case.name} {kind}", image, tumour,
                                   True, args.erode))
        print(f"{case.name}: {time.time() - start:.0f} s", flush=True)
    for volume in healthy_volumes(args.data / "healthy"):  # a head and its stripped self: a group
        volumes.append(cues_of(evidence, volume.name.split(" x ")[0], volume.name, volume.image,
                               erode=args.erode))
    print(f"cues of {len(volumes)} volumes: {time.time() - start:.0f} s", flush=True)
    rows = []
    for group in sorted({v.group for v in volumes}):
        calibration = fit([v for v in volumes if v.group != group])
        for volume in (v for v in volumes if v.group == group):
            before = volume_probability(volume, evidence.config["calibration"])
            after = volume_probability(volume, calibration)
            rows.append({"volume": volume.name, "tumour": volume.tumour, "before": before,
                         "after": after, "verdict_before": tumour_verdict(before),
                         "verdict_after": tumour_verdict(after)})
            print(f"{volume.name:<45} {'tumour' if volume.tumour else 'free':<7} "
                  f"{before:.2f} {tumour_verdict(before):<10} -> {after:.2f} "
                  f"{tumour_verdict(after)}", flush=True)
    final = fit(volumes)
    report = {"command": "python scripts/build/calibrate_tumour_evidence.py "
                         + " ".join(argv or sys.argv[1:]),
              "calibration": final, "leave_one_group_out": rows,
              "before": operating_points(rows, "before"),
              "after": operating_points(rows, "after"),
              "seconds": round(time.time() - start)}
    print(json.dumps({k: report[k] for k in ("calibration", "before", "after")}, indent=1))
    state, config = load_weights(source)
    config["calibration"] = final
    save_weights(state, args.output, config,
                 {"command": report["command"], "calibrated_on": sorted({v.group for v in volumes}),
                  "leave_one_group_out": {"before": report["before"], "after": report["after"]}})
    if args.report is not None:
        args.report.mkdir(parents=True, exist_ok=True)
        (args.report / "report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
