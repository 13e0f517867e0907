"""How far the metric objective can be pushed on single images: an estimate of the headroom
above the bundled 2D model.

    python scripts/metric_headroom.py [--every 20] [--steps 300] [--lr 0.01] [--deficit-weight 3]

For every ``--every``-th held-back Harvard pair, the pixels of the bundled model's output are
optimised directly (Adam on logits) on the metric objective (metric_objective.py) of that one
image. No network is involved: the optimised images show which metric combinations are
reachable at all, e.g. whether a pair type can beat the best baseline on 8 of the 10 metrics.
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
from ClinicalFMambaLib.metrics import METRIC_NAMES, fusion_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/harvard")
    parser.add_argument("--every", type=int, default=20, help="score every n-th held-back pair")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--deficit-weight", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, val = split_by_case(find_pairs(args.data))
    model = load_fusion_model(None, device="cpu")
    objective = MetricObjective(deficit_weight=args.deficit_weight)
    rows = defaultdict(lambda: defaultdict(list))
    for pair in val[::args.every]:
        a, b = load_luma_pair(pair)
        fused = {"model": fuse_normalized(model, a, b)}
        fused["optimised"] = optimise_pair_metrics(fused["model"], a, b, objective,
                                                   args.steps, args.lr)
        fused.update({name: fn(a, b) for name, fn in BASELINES.items()})
        for method, image in fused.items():
            rows[pair.pair_type][method].append(fusion_metrics(a, b, image))
        print(f"{pair.pair_type} {pair.mri.name} done", flush=True)
    for pair_type, methods in sorted(rows.items()):
        means = {m: {k: float(np.mean([r[k] for r in records])) for k in METRIC_NAMES}
                 for m, records in methods.items()}
        best = {k: max(means[b][k] for b in BASELINES) for k in METRIC_NAMES}
        print(f"\n{pair_type} ({len(methods['model'])} pairs)")
        print("method".ljust(10) + "".join(k.rjust(8) for k in METRIC_NAMES) + "  beats best")
        for method, values in means.items():
            beats = "" if method in BASELINES else f"  {sum(values[k] > best[k] for k in METRIC_NAMES)}/10"
            print(method.ljust(10) + "".join(f"{values[k]:8.3f}" for k in METRIC_NAMES) + beats)


if __name__ == "__main__":
    main()
