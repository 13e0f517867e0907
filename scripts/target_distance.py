"""How close fusion networks come to cached per-image targets, and at what scale they differ.

    python scripts/target_distance.py --targets runs/fusion2d-distil/targets \
        [--weights W ...] [--every 5]

For the training pairs whose targets are in ``--targets`` (train-fusion --targets
metric-optima), prints each model's mean |output - target| (the bundled model when no
``--weights`` is given) and, for the first model, the share of the change from its output to
the target that lies within 2x2 pixel blocks: what a half-resolution signal cannot carry.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ClinicalFMambaLib.fusion import fuse_normalized, load_fusion_model
from ClinicalFMambaLib.fusion_targets import target_file
from ClinicalFMambaLib.harvard_data import find_pairs, load_luma_pair


def fine_scale_share(change: np.ndarray) -> float:
    """Energy of ``change`` left after removing its 2x2 block means, over its total energy."""
    h, w = (s - s % 2 for s in change.shape)
    change = change[:h, :w]
    blocks = change.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    residual = change - blocks.repeat(2, 0).repeat(2, 1)
    return float((residual ** 2).sum() / (change ** 2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/harvard")
    parser.add_argument("--targets", type=Path, required=True, help="target folder (.npy per pair)")
    parser.add_argument("--weights", type=Path, nargs="+", default=[None])
    parser.add_argument("--every", type=int, default=1, help="use every n-th target")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = [p for p in find_pairs(args.data)
             if target_file(args.targets, p).exists()][::args.every]
    if not pairs:
        raise SystemExit(f"no targets for the pairs of {args.data} in {args.targets}")
    models = [load_fusion_model(w, device="cpu") for w in args.weights]
    distances, shares = [[] for _ in models], []
    for pair in pairs:
        a, b = load_luma_pair(pair)
        target = np.load(target_file(args.targets, pair))
        for i, model in enumerate(models):
            change = target - fuse_normalized(model, a, b)
            distances[i].append(np.abs(change).mean())
            if i == 0:
                shares.append(fine_scale_share(change))
    for weights, d in zip(args.weights, distances):
        print(f"{weights or 'bundled'}: mean |output - target| over {len(pairs)} pairs {np.mean(d):.5f}")
    print(f"share of the change to the target within 2x2 blocks ({args.weights[0] or 'bundled'}): "
          f"mean {np.mean(shares):.3f}, range {np.min(shares):.3f}-{np.max(shares):.3f}")


if __name__ == "__main__":
    main()
