"""The sources' own fine detail put into the bundled model's fusion, scored like the results
tables: does detail the model lacks win the metrics the Laplacian pyramid holds?

    python scripts/detail_transfer.py [--every 1] [--variant 0.3,1 --variant 1,2 ...]
    python scripts/detail_transfer.py --brain3d [--variant 1,2 ...]

A variant ``STRENGTH,LEVELS`` moves the model output's ``LEVELS`` finest Laplacian levels by
``STRENGTH`` (0: unchanged, 1: replaced) towards the pyramid fusion's choice of the sources'
coefficients, keeping the model's coarser levels and base (baselines.detail_transfer; 4
levels). 2D: every ``--every``-th held-back Harvard pair, fused by the bundled 2D model, the ten
metrics per pair type. ``--brain3d``: every contrast pair of the held-back brain3d case, fused
whole by the bundled 3D model, detail transferred in 3D, the 3D table's 14 columns
(volume_fusion.volume_table_metrics). Each row counts the columns on which it beats the best
of the mean / max / Laplacian baselines.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ClinicalFMambaLib.baselines import BASELINES, detail_transfer
from ClinicalFMambaLib.brain3d_data import (CONTRAST_PAIRS, VALIDATION_CASE, brain_box,
                                            normalise_case, read_case)
from ClinicalFMambaLib.fusion import BUNDLED_MODELS, fuse_normalized, load_fusion_model
from ClinicalFMambaLib.harvard_data import find_pairs, load_luma_pair, split_by_case
from ClinicalFMambaLib.metrics import (METRIC_NAMES, VOLUME_TABLE_COLUMNS, beats_best_baseline,
                                       fusion_metrics)
from ClinicalFMambaLib.volume_fusion import fuse_volumes, volume_table_metrics
from ClinicalFMambaLib.weights import bundled


def parse_variant(text: str) -> tuple[float, int]:
    strength, levels = text.split(",")
    return float(strength), int(levels)


def fused_images(a: np.ndarray, b: np.ndarray, model_output: np.ndarray,
                 variants: list[tuple[float, int]]) -> dict[str, np.ndarray]:
    images = {"model": model_output}
    images.update({f"model + detail {s:g} on {n}": detail_transfer(a, b, model_output, s, n)
                   for s, n in variants})
    images.update({name: fn(a, b) for name, fn in BASELINES.items()})
    return images


def harvard_scores(args: argparse.Namespace) -> tuple[dict, tuple[str, ...]]:
    """{pair type: {method: [metrics of each pair]}} on the held-back Harvard pairs."""
    model = load_fusion_model(device="cpu")
    _, val = split_by_case(find_pairs(args.data))
    rows = defaultdict(lambda: defaultdict(list))
    for pair in tqdm(val[::args.every], desc="pairs", unit="pair"):
        a, b = load_luma_pair(pair)
        for method, image in fused_images(a, b, fuse_normalized(model, a, b),
                                          args.variant).items():
            rows[pair.pair_type][method].append(fusion_metrics(a, b, image))
    return rows, METRIC_NAMES


def brain3d_scores(args: argparse.Namespace) -> tuple[dict, tuple[str, ...]]:
    """{case: {method: [table columns of each contrast pair]}} on the held-back volume."""
    model = load_fusion_model(bundled(BUNDLED_MODELS[3]), dims=3, device="cpu")
    raw = read_case(Path(args.data) / VALIDATION_CASE)
    unit = normalise_case(raw)
    box = brain_box(unit)
    rows = defaultdict(list)
    for x, y in tqdm(CONTRAST_PAIRS, desc="pairs", unit="pair"):
        output = fuse_volumes(model, raw[x], raw[y]).luma
        for method, volume in fused_images(unit[x], unit[y], output, args.variant).items():
            rows[method].append(volume_table_metrics(unit[x], unit[y], volume, box, args.slices))
    return {f"{VALIDATION_CASE}, {len(CONTRAST_PAIRS)} contrast pairs": rows}, VOLUME_TABLE_COLUMNS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brain3d", action="store_true")
    parser.add_argument("--data", default=None,
                        help="default: ../shared/data/harvard, or ../shared/data/brain3d")
    parser.add_argument("--every", type=int, default=1, help="2D: every n-th held-back pair")
    parser.add_argument("--slices", type=int, default=30, help="3D: slices of the 2D columns")
    parser.add_argument("--variant", type=parse_variant, action="append",
                        help="STRENGTH,LEVELS (repeatable; default 0.3,1 0.6,2 1,2)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.variant = args.variant or [(0.3, 1), (0.6, 2), (1.0, 2)]
    args.data = args.data or f"../shared/data/{'brain3d' if args.brain3d else 'harvard'}"
    torch.set_num_threads(args.threads)
    scores, columns = (brain3d_scores if args.brain3d else harvard_scores)(args)
    for group, methods in sorted(scores.items()):
        mean = {m: {c: float(np.mean([r[c] for r in rs])) for c in columns}
                for m, rs in methods.items()}
        best = [mean[name] for name in BASELINES]
        width = max(map(len, mean))
        print(f"\n{group} ({len(methods['model'])})")
        print("method".ljust(width) + "".join(c[-8:].rjust(9) for c in columns) + "  wins")
        for method, values in mean.items():
            wins = "" if method in BASELINES else len(beats_best_baseline(values, best, columns))
            print(method.ljust(width) + "".join(f"{values[c]:9.3f}" for c in columns)
                  + f"  {wins}")


if __name__ == "__main__":
    main()
