"""How far the metric objective can be pushed on single images: an estimate of the headroom
above the bundled 2D (or, with ``--brain3d``, 3D) model.

    python scripts/research/metric_headroom.py [--every 20] [--steps 300] [--lr 0.01] [--deficit-weight 3]
        [--starts model laplacian ...] [--pair-type CT-MRI] [--pointwise]
        [--metric-weight NAME=W ...] [--peers ../shared/data/peers]
    python scripts/research/metric_headroom.py --brain3d [--slices 30] [--every 15] ...

For every ``--every``-th held-back Harvard pair (of ``--pair-type`` only, if given), the pixels
of the bundled model's output, or of another start (``--starts``: the model or a baseline),
are optimised directly (Adam on logits) on the metric objective
(objective/metric_objective.py) of that one image. No network is involved: the optimised
images show which metric combinations are
reachable at all, e.g. whether a pair type can beat the best baseline on 8 of the 10 metrics,
and several starts show whether that depends on where the descent begins.
Per pair type it prints the mean of each metric for the model, the optimised images and the
baselines, and how many metrics beat the best baseline, with the share of pixels at grey level
255 (a saturated source, e.g. CT bone, leaves one histogram spike there that costs EN).
``--pointwise`` also scores each start plus only the part of the optimiser's change that is a
function of the two sources' grey levels at each pixel (its mean per pair of 8-bit levels),
and prints the share of the change's variance that part explains: what a per-pixel function
of (A, B) could reach; and the share explained by such a function fitted on the other images
alone (leave one out): whether the change is a fusion rule that carries from image to image,
as a trained network's would have to, or specific to each image.
``--brain3d`` does the same for the 3D table's 2D columns: every ``--every``-th (from the
half-way one) of the ``--slices`` axial slices that fusion_results_3d.py scores, of every
contrast pair of the held-back brain3d case, starting from the bundled 3D model's fusion of
the whole volume and scored against the same slices of the volume baselines (the volume
columns are not measured).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from rank_table import OURS, peer_image_paths, summary

from ClinicalFMambaLib.cli.train_commands import parse_metric_weight
from ClinicalFMambaLib.core.intensity import to_gray8
from ClinicalFMambaLib.evaluation.metrics import METRIC_NAMES, fusion_metrics
from ClinicalFMambaLib.evaluation.ranking import beats_best_baseline
from ClinicalFMambaLib.evaluation.volume_metrics import measured_slices
from ClinicalFMambaLib.fusion.inference import BUNDLED_MODELS, fuse_normalized, load_fusion_model
from ClinicalFMambaLib.fusion.volumes import fuse_volumes
from ClinicalFMambaLib.io.weights import bundled
from ClinicalFMambaLib.objective.baselines import BASELINES
from ClinicalFMambaLib.objective.metric_objective import MetricObjective
from ClinicalFMambaLib.training.brain3d_data import (CONTRAST_PAIRS, VALIDATION_CASE,
                                                     normalise_case, read_case)
from ClinicalFMambaLib.training.fusion_targets import optimise_pair_metrics
from ClinicalFMambaLib.training.harvard_data import (HarvardPair, find_pairs, load_luma,
                                                     load_luma_pair, split_by_case)

# Share of pixels at the top 8-bit grey level, in %: a saturated source (CT bone) leaves one
# spike there, which costs EN; printed after the ten metrics, not counted in the wins.
AT_255 = "at 255"
COLUMNS = (*METRIC_NAMES, AT_255)


# Grey levels per source for the per-pixel function fitted on other images: 8-bit pairs are
# too sparse to recur from one image to the next, 64 levels recur.
TRANSFER_LEVELS = 64


def level_pairs(a: np.ndarray, b: np.ndarray, levels: int = 256) -> np.ndarray:
    """Each pixel's pair of grey levels of ``a`` and ``b`` (``levels`` each) as one index."""
    step = 256 // levels
    return (to_gray8(a).astype(np.intp) // step) * levels + to_gray8(b) // step


def mean_per_level_pair(keys: np.ndarray, values: np.ndarray, levels: int) -> np.ndarray:
    """The mean of ``values`` over the pixels of each level pair (0 where there are none)."""
    size = levels * levels
    return (np.bincount(keys.ravel(), values.ravel(), size)
            / np.maximum(np.bincount(keys.ravel(), minlength=size), 1))


def pointwise_part(change: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``change`` replaced at each pixel by its mean over all pixels with the same pair of
    8-bit grey levels of ``a`` and ``b``: the best per-pixel function of (A, B) in L2."""
    key = level_pairs(a, b)
    return mean_per_level_pair(key, change, 256)[key]


def explained_share(change: np.ndarray, part: np.ndarray) -> float:
    return float(1 - ((change - part) ** 2).sum() / ((change - change.mean()) ** 2).sum())


def transferred_shares(changes: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """For each image's (level pairs, change): the share of its change's variance that the
    per-pixel function of (A, B) fitted on all the other images explains (below 0: worse than
    no change at all)."""
    shares = []
    for i, (keys, change) in enumerate(changes):
        rest = [c for j, c in enumerate(changes) if j != i]
        fitted = mean_per_level_pair(np.concatenate([k for k, _ in rest]),
                                     np.concatenate([c for _, c in rest]), TRANSFER_LEVELS)
        shares.append(explained_share(change, fitted[keys]))
    return shares


def harvard_images(args: argparse.Namespace):
    """(group, label, A, B, {"model": fused, baseline: fused, ...}) of held-back Harvard pairs,
    with the published methods' images where ``--peers`` is given (checked before any work)."""
    _, val = split_by_case(find_pairs(args.data))
    pairs = [p for p in val if args.pair_type in (None, p.pair_type)][::args.every]
    if not pairs:
        raise SystemExit(f"no held-back pairs of type {args.pair_type}")
    peers = peer_image_paths(Path(args.peers), pairs) if args.peers else {}
    model = load_fusion_model(None, device="cpu")
    return (fused_pair(model, pair, peers.get(pair.name, {})) for pair in pairs)


def fused_pair(model: torch.nn.Module, pair: HarvardPair,
               peer_images: dict[str, Path]) -> tuple:
    a, b = load_luma_pair(pair)
    fused = {"model": fuse_normalized(model, a, b)}
    fused.update({name: fn(a, b) for name, fn in BASELINES.items()})
    fused.update({name: load_luma(path) for name, path in peer_images.items()})
    return pair.pair_type, pair.mri.name, a, b, fused


def brain3d_images(args: argparse.Namespace):
    """The same for axial slices of the held-back brain3d case, fused as whole volumes."""
    raw = read_case(Path(args.data) / VALIDATION_CASE)
    unit = normalise_case(raw)
    model = load_fusion_model(bundled(BUNDLED_MODELS[3]), dims=3, device="cpu")
    for x, y in CONTRAST_PAIRS:
        fused = {"model": fuse_volumes(model, raw[x], raw[y]).luma}
        fused.update({name: fn(unit[x], unit[y]) for name, fn in BASELINES.items()})
        # Every n-th from the n/2-th: not the end slices, where the brain barely starts.
        for k in measured_slices(unit[x], unit[y], args.slices)[args.every // 2::args.every]:
            yield (VALIDATION_CASE, f"{x}+{y} slice {k}", unit[x][k], unit[y][k],
                   {name: volume[k] for name, volume in fused.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None,
                        help="default ../shared/data/harvard, or ../shared/data/brain3d")
    parser.add_argument("--every", type=int, default=20,
                        help="score every n-th held-back pair (--brain3d: slice)")
    parser.add_argument("--brain3d", action="store_true",
                        help="slices of the held-back brain3d case, from the 3D model's fusion")
    parser.add_argument("--slices", type=int, default=30,
                        help="--brain3d: the axial slices the 3D table's 2D columns average")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--deficit-weight", type=float, default=3.0)
    parser.add_argument("--starts", nargs="+", default=["model"], choices=["model", *BASELINES],
                        help="images the descent starts from")
    parser.add_argument("--pair-type", default=None, help="e.g. CT-MRI (default: all types)")
    parser.add_argument("--metric-weight", type=parse_metric_weight, action="append", default=[],
                        metavar="NAME=W", help="weight of one metric's term, as train-fusion's")
    parser.add_argument("--pointwise", action="store_true",
                        help="also score the per-pixel (A, B) function part of each change")
    parser.add_argument("--peers", default=None, metavar="DIR",
                        help="rank among the baselines and these published methods' images "
                             "(<method>/<pair type>/<file name>.png, as rank_table.py)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.brain3d and args.pair_type:
        parser.error("--pair-type selects Harvard pairs; --brain3d has contrast pairs only")
    if args.brain3d and args.peers:
        parser.error("--peers has Harvard pairs only; --brain3d has none")
    if args.peers and not Path(args.peers).is_dir():
        parser.error(f"no published methods' results folder {args.peers}")
    torch.set_num_threads(args.threads)
    args.data = args.data or f"../shared/data/{'brain3d' if args.brain3d else 'harvard'}"
    if args.brain3d and not (Path(args.data) / VALIDATION_CASE).is_dir():
        parser.error(f"no brain3d case {Path(args.data) / VALIDATION_CASE}")
    objective = MetricObjective(deficit_weight=args.deficit_weight,
                                metric_weights=dict(args.metric_weight))
    rows = defaultdict(lambda: defaultdict(list))
    explained, changes = defaultdict(list), defaultdict(list)
    try:
        images = brain3d_images(args) if args.brain3d else harvard_images(args)
    except FileNotFoundError as error:
        raise SystemExit(f"metric_headroom: {error}")
    for group, label, a, b, fused in images:
        for start in args.starts:
            optimum = optimise_pair_metrics(fused[start], a, b, objective, args.steps, args.lr)
            fused[f"opt({start})"] = optimum
            if args.pointwise:
                change = optimum.astype(np.float64) - fused[start]
                part = pointwise_part(change, a, b)
                explained[start].append(explained_share(change, part))
                changes[start].append((level_pairs(a, b, TRANSFER_LEVELS).ravel(),
                                       change.ravel()))
                fused[f"pw({start})"] = np.clip(fused[start] + part, 0, 1)
        for method, image in fused.items():
            top = 100 * float((to_gray8(image) == 255).mean())
            rows[group][method].append({**fusion_metrics(a, b, image), AT_255: top})
        print(f"{group} {label} done", flush=True)
    for group, methods in sorted(rows.items()):
        means = {m: {k: float(np.mean([r[k] for r in records])) for k in COLUMNS}
                 for m, records in methods.items()}
        print(f"\n{group} ({len(methods['model'])} images)")
        print("method".ljust(16) + "".join(k.rjust(8) for k in COLUMNS) + "  beats best")
        for method, values in means.items():
            beats = ("" if method in BASELINES else
                     f"  {len(beats_best_baseline(values, [means[b] for b in BASELINES]))}/10")
            print(method.ljust(16) + "".join(f"{values[k]:8.3f}" for k in COLUMNS) + beats)
        if args.peers:
            candidates = ["model", *(m for m in means if m.startswith("opt("))]
            others = {m: v for m, v in means.items()
                      if m not in candidates and not m.startswith("pw(")}
            for candidate in candidates:
                print(f"{candidate} as {OURS}: " + summary({**others, OURS: means[candidate]}))
    for start, shares in explained.items():
        print(f"\npw({start}): the per-pixel (A, B) part explains {np.mean(shares):.3f} of the "
              f"change's variance (range {np.min(shares):.3f}-{np.max(shares):.3f} over the images)")
        if len(changes[start]) > 1:
            moved = transferred_shares(changes[start])
            print(f"pw({start}) fitted on the other images ({TRANSFER_LEVELS} levels per source) "
                  f"explains {np.mean(moved):.3f} (range {np.min(moved):.3f}-{np.max(moved):.3f})")


if __name__ == "__main__":
    main()
