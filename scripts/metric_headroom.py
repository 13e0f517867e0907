"""How far the metric objective can be pushed on single images: an estimate of the headroom
above the bundled 2D model.

    python scripts/metric_headroom.py [--every 20] [--steps 300] [--lr 0.01] [--deficit-weight 3]
        [--starts model laplacian ...] [--pair-type CT-MRI]

For every ``--every``-th held-back Harvard pair (of ``--pair-type`` only, if given), the pixels
of the bundled model's output, or of another start (``--starts``: the model or a baseline),
are optimised directly (Adam on logits) on the metric objective (metric_objective.py) of that
one image. No network is involved: the optimised images show which metric combinations are
reachable at all, e.g. whether a pair type can beat the best baseline on 8 of the 10 metrics,
and several starts show whether that depends on where the descent begins.
Per pair type it prints the mean of each metric for the model, the optimised images and the
baselines, and how many metrics beat the best baseline.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch

from ClinicalFMambaLib.baselines import BASELINES
from ClinicalFMambaLib.fusion import fuse_normalized, load_fusion_model
from ClinicalFMambaLib.fusion_targets import optimise_pair_metrics
from ClinicalFMambaLib.harvard_data import find_pairs, load_luma_pair, split_by_case
from ClinicalFMambaLib.metric_objective import MetricObjective
from ClinicalFMambaLib.metrics import METRIC_NAMES, beats_best_baseline, fusion_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/harvard")
    parser.add_argument("--every", type=int, default=20, help="score every n-th held-back pair")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--deficit-weight", type=float, default=3.0)
    parser.add_argument("--starts", nargs="+", default=["model"], choices=["model", *BASELINES],
                        help="images the descent starts from")
    parser.add_argument("--pair-type", default=None, help="e.g. CT-MRI (default: all types)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, val = split_by_case(find_pairs(args.data))
    model = load_fusion_model(None, device="cpu")
    objective = MetricObjective(deficit_weight=args.deficit_weight)
    rows = defaultdict(lambda: defaultdict(list))
    pairs = [p for p in val if args.pair_type in (None, p.pair_type)][::args.every]
    if not pairs:
        raise SystemExit(f"no held-back pairs of type {args.pair_type}")
    for pair in pairs:
        a, b = load_luma_pair(pair)
        fused = {"model": fuse_normalized(model, a, b)}
        fused.update({name: fn(a, b) for name, fn in BASELINES.items()})
        for start in args.starts:
            fused[f"opt({start})"] = optimise_pair_metrics(fused[start], a, b, objective,
                                                           args.steps, args.lr)
        for method, image in fused.items():
            rows[pair.pair_type][method].append(fusion_metrics(a, b, image))
        print(f"{pair.pair_type} {pair.mri.name} done", flush=True)
    for pair_type, methods in sorted(rows.items()):
        means = {m: {k: float(np.mean([r[k] for r in records])) for k in METRIC_NAMES}
                 for m, records in methods.items()}
        print(f"\n{pair_type} ({len(methods['model'])} pairs)")
        print("method".ljust(16) + "".join(k.rjust(8) for k in METRIC_NAMES) + "  beats best")
        for method, values in means.items():
            beats = ("" if method in BASELINES else
                     f"  {len(beats_best_baseline(values, [means[b] for b in BASELINES]))}/10")
            print(method.ljust(16) + "".join(f"{values[k]:8.3f}" for k in METRIC_NAMES) + beats)


if __name__ == "__main__":
    main()
