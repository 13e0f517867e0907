"""Score settings of the 3D model's detail layer on a brain3d case (the held-back one by default).

    python scripts/research/detail_layer_3d.py [--weights W] [--setting GAIN,SHRINK ...] [--case NAME]
        [--threads 2]

The network's weights stay as they are; each setting replaces the detail layer's gain and
shrinkage (networks.fusion_net.FusionConfig.detail_gain, detail_shrink; "0,0" is the network alone). Every
contrast pair of the held-back case (brain3d_data.VALIDATION_CASE, or ``--case``; whole
volumes) is fused as ``fuse_volumes`` fuses it and scored on the ten 2D metrics averaged over
30 axial slices (evaluation.volume_metrics.volume_fusion_metrics, as scripts/research/fusion_results_3d.py); printed
per setting: the metrics won against mean / max / Laplacian fusion on each pair (a tie is no
win), the fewest over the pairs, and the grain in flat regions (evaluation/grain.py) on each pair.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from ClinicalFMambaLib.evaluation.grain import flat_mask, flat_noise
from ClinicalFMambaLib.evaluation.metrics import METRIC_NAMES
from ClinicalFMambaLib.evaluation.ranking import metric_wins
from ClinicalFMambaLib.evaluation.volume_metrics import volume_fusion_metrics
from ClinicalFMambaLib.fusion.inference import BUNDLED_MODELS, load_fusion_model
from ClinicalFMambaLib.fusion.volumes import fuse_volumes
from ClinicalFMambaLib.io.weights import bundled
from ClinicalFMambaLib.objective.baselines import BASELINES
from ClinicalFMambaLib.training.brain3d_data import (CONTRAST_PAIRS, VALIDATION_CASE,
                                                     normalise_case, read_case)

DEFAULT_SETTINGS = ["0,0", "0.15,0", "0.3,0", "0.5,0", "0.3,2", "0.4,2", "0.5,2", "0.3,2.5",
                    "0.4,2.5", "0.5,2.5"]


def parse_setting(text: str) -> tuple[float, float]:
    try:
        gain, shrink = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a setting is GAIN,SHRINK (two numbers), got {text!r}")
    if not (gain >= 0 and shrink >= 0):
        raise argparse.ArgumentTypeError(f"gain and shrink must be at least 0, got {text!r}")
    return gain, shrink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/brain3d")
    parser.add_argument("--weights", type=Path, default=bundled(BUNDLED_MODELS[3]))
    parser.add_argument("--setting", type=parse_setting, action="append", default=None,
                        metavar="GAIN,SHRINK", help=f"repeatable; default {' '.join(DEFAULT_SETTINGS)}")
    parser.add_argument("--case", default=VALIDATION_CASE,
                        help="the brain3d case to score (default: the held-back one)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    settings = args.setting or [parse_setting(s) for s in DEFAULT_SETTINGS]
    if not (Path(args.data) / args.case).is_dir():
        parser.error(f"no brain3d case {Path(args.data) / args.case}")
    torch.set_num_threads(args.threads)
    try:
        raw = read_case(Path(args.data) / args.case)
        model = load_fusion_model(args.weights, dims=3, device="cpu")
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        sys.exit(f"detail_layer_3d: {error}")
    unit = normalise_case(raw)
    trained = model.cfg
    rows = {s: {} for s in settings}
    for x, y in CONTRAST_PAIRS:
        a, b = unit[x], unit[y]
        flat = flat_mask(a, b)
        baselines = {n: volume_fusion_metrics(a, b, fn(a, b), slices=30)
                     for n, fn in BASELINES.items()}
        for gain, shrink in settings:
            model.cfg = dataclasses.replace(trained, detail_gain=gain, detail_shrink=shrink)
            fused = fuse_volumes(model, raw[x], raw[y]).luma
            scores = volume_fusion_metrics(a, b, fused, slices=30)
            rows[gain, shrink][f"{x}+{y}"] = (
                [len(metric_wins(scores, baselines[n])) for n in BASELINES],
                flat_noise(fused, flat), scores)
            print(f"{x}+{y} gain {gain:g} shrink {shrink:g}: "
                  + " ".join(f"{k} {scores[k]:.3f}" for k in METRIC_NAMES), flush=True)
    print(f"\nwins against {' / '.join(BASELINES)} per pair (grain in flat regions)")
    for (gain, shrink), pairs in rows.items():
        fewest = min(min(w) for w, _, _ in pairs.values())
        print(f"gain {gain:g} shrink {shrink:g}: fewest {fewest}/10; " + "; ".join(
            f"{p} {'/'.join(map(str, w))} ({g:.4f})" for p, (w, g, _) in pairs.items()))
    print("mean of the 2D metrics over the pairs: " + " ".join(METRIC_NAMES))
    for (gain, shrink), pairs in rows.items():
        print(f"gain {gain:g} shrink {shrink:g}: " + " ".join(
            f"{np.mean([s[k] for _, _, s in pairs.values()]):.3f}" for k in METRIC_NAMES))


if __name__ == "__main__":
    main()
