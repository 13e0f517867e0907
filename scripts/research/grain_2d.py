"""Grain of the 2D model's fusion in the flat regions of both sources, at several emphasis
values (the detail layer adds the sources' finest detail with gain e, noise included).

    python scripts/research/grain_2d.py [--emphasis 0 --emphasis 0.25 ...] [--threads 2]
        [--quality best]

On every held-back Harvard pair (training.harvard_data.VALIDATION_CASES) with flat regions
(evaluation.grain.flat_mask): the mean flat-region grain (evaluation.grain.flat_noise) of the bundled 2D
model at each emphasis, of mean / max / Laplacian fusion and of the grainier source, per pair
type. ``--quality best`` adds, beside each emphasis, the model's image refined as ``fuse
--quality best`` (fusion/refine.py).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch

from ClinicalFMambaLib.evaluation.grain import flat_mask, flat_noise
from ClinicalFMambaLib.fusion.inference import (fuse_normalized, load_fusion_model, parse_emphasis,
                                                set_emphasis)
from ClinicalFMambaLib.fusion.refine import QUALITIES, refine
from ClinicalFMambaLib.objective.baselines import BASELINES
from ClinicalFMambaLib.training.harvard_data import find_pairs, load_luma_pair, split_by_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/harvard")
    parser.add_argument("--emphasis", action="append", default=None, metavar="E",
                        help="repeatable; default 0, 0.25, 0.5 and 1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quality", choices=QUALITIES, default="fast",
                        help="best: also the refined image at each emphasis")
    args = parser.parse_args()
    emphases = [parse_emphasis(e) for e in args.emphasis or ["0", "0.25", "0.5", "1"]]
    torch.set_num_threads(args.threads)
    model = load_fusion_model(device="cpu")
    _, val = split_by_case(find_pairs(args.data))
    grain = defaultdict(lambda: defaultdict(list))
    for pair in val:
        a, b = load_luma_pair(pair)
        mask = flat_mask(a, b)
        if not mask.any():
            continue
        rows = grain[pair.pair_type]
        for e in emphases:
            fused = fuse_normalized(set_emphasis(model, e), a, b)
            rows[f"ClinicalFMamba e={e:g}"].append(flat_noise(fused, mask))
            if args.quality == "best":
                rows[f"e={e:g} best"].append(flat_noise(refine(fused, a, b), mask))
        for name, fuse in BASELINES.items():
            rows[name].append(flat_noise(fuse(a, b), mask))
        rows["grainier source"].append(max(flat_noise(a, mask), flat_noise(b, mask)))
    methods = list(next(iter(grain.values())))
    print("| pair type (pairs) | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for pair_type, rows in grain.items():
        print(f"| {pair_type} ({len(rows[methods[0]])}) | "
              + " | ".join(f"{np.mean(rows[m]):.4f}" for m in methods) + " |")


if __name__ == "__main__":
    main()
