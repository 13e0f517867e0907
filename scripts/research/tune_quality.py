"""Choose the quality mode's settings (fusion/refine.py) on training-side validation pairs.

    python scripts/research/tune_quality.py [--per-type 12] [--steps 10 20 30] [--lr 0.005 0.008]
        [--beta1 0.5 0.9] [--weights SSIM=20,AG=4,VIF=4 ...] [--threads 1]
        [--cache runs/quality-tuning]

Tuning pairs: whole cases carved out of the training cases (``TUNING_CASES``), never
training.harvard_data.VALIDATION_CASES, whose pairs (the only ones with the published
methods' images) are ranked once, at the end, by rank_table.py --quality best. PET-MRI has a
single training case (25): its tuning pairs come from it although the bundled network was
trained on it. ``--per-type`` pairs of each type, evenly spaced over its tuning cases.

Each pair is fused by the bundled network and refined by the reference refinement the mode
replaces (100 Adam steps at lr 0.03 on the logits, training.fusion_targets.
optimise_pair_metrics, on the headroom study's objective: fusion.refine.HEADROOM_WEIGHTS,
deficit weight 3; computed once and kept under ``--cache``) and by every candidate setting
(the grid of ``--steps`` x ``--lr`` x ``--beta1`` x ``--weights``; default: the mode's
settings). Per pair type and candidate it prints the mean loss of the headroom objective
(lower is better), the mean rank over the ten 8-bit metrics among the mean / max /
Laplacian baselines, the network, the reference and the candidate, the candidate's fewest
wins against one of them and its wins against the reference, its flat-region grain
(evaluation.grain) and its seconds per pair (network included). Settings are chosen on these
numbers (docs/quality.md); the reference is the quality the mode must keep.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ClinicalFMambaLib.evaluation.grain import flat_mask, flat_noise
from ClinicalFMambaLib.evaluation.metrics import METRIC_NAMES, fusion_metrics
from ClinicalFMambaLib.evaluation.ranking import mean_ranks, metric_wins
from ClinicalFMambaLib.fusion.inference import fuse_normalized, load_fusion_model
from ClinicalFMambaLib.fusion.refine import HEADROOM_WEIGHTS, RefineSettings, refine
from ClinicalFMambaLib.networks.fusion_net import image_batch
from ClinicalFMambaLib.objective.baselines import BASELINES
from ClinicalFMambaLib.objective.metric_objective import MetricObjective
from ClinicalFMambaLib.training.fusion_targets import optimise_pair_metrics
from ClinicalFMambaLib.training.harvard_data import (VALIDATION_CASES, HarvardPair, find_pairs,
                                                     load_luma_pair)

# Carved out of the training cases: two per pair type where there are two or more.
TUNING_CASES = {"CT-MRI": {"16", "33"}, "PET-MRI": {"25"}, "SPECT-MRI": {"10", "18"}}
REFERENCE = "reference (100 steps)"
NETWORK = "network"
# The reference's objective and the loss column's: the headroom study's.
HEADROOM = MetricObjective(deficit_weight=3, metric_weights=HEADROOM_WEIGHTS)


def tuning_pairs(data: str, per_type: int) -> list[HarvardPair]:
    """``per_type`` pairs of each type, evenly spaced over its tuning cases."""
    assert all(not (TUNING_CASES[t] & VALIDATION_CASES[t]) for t in TUNING_CASES)
    chosen = []
    for pair_type, cases in TUNING_CASES.items():
        pairs = [p for p in find_pairs(data) if p.pair_type == pair_type and p.case in cases]
        picks = np.linspace(0, len(pairs) - 1, min(per_type, len(pairs))).round().astype(int)
        chosen += [pairs[i] for i in picks]
    return chosen


def reference_refinement(pair: HarvardPair, start: np.ndarray, a: np.ndarray, b: np.ndarray,
                         cache: Path) -> np.ndarray:
    """Today's 100-step refinement of ``start``, kept in ``cache`` (it takes minutes)."""
    path = cache / f"{pair.name.replace('/', '_')}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        optimum = optimise_pair_metrics(start, a, b, HEADROOM, 100, 0.03)
        np.save(path, optimum)
    return np.load(path)


def objective_losses(images: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray
                     ) -> dict[str, float]:
    """The headroom objective's loss of each image (the pair prepared once)."""
    terms, best = HEADROOM.prepare(image_batch(a), image_batch(b))
    with torch.no_grad():
        return {name: HEADROOM.loss(terms.metrics(image_batch(image)), best,
                                    per_image=True)[0].item() for name, image in images.items()}


def parse_weights(text: str) -> dict[str, float]:
    """'SSIM=20,AG=4' -> {'SSIM': 20.0, 'AG': 4.0}."""
    return {k: float(v) for k, v in (item.split("=") for item in text.split(",") if item)}


def candidates(args: argparse.Namespace) -> dict[str, RefineSettings]:
    return {f"steps {s} lr {lr:g} b1 {b1:g} {w}": RefineSettings(s, lr, b1,
                                                                   metric_weights=parse_weights(w))
            for s, lr, b1, w in itertools.product(args.steps, args.lr, args.beta1, args.weights)}


def summarise(rows: dict, names: list[str]) -> None:
    """Per pair type and candidate: loss, rank among the six, wins, grain, seconds."""
    for pair_type, by_method in sorted(rows.items()):
        means = {m: {k: float(np.nanmean([r[k] for r in recs])) for k in recs[0]}
                 for m, recs in by_method.items()}
        fixed = [*BASELINES, NETWORK, REFERENCE]
        print(f"\n{pair_type} ({len(by_method[NETWORK])} tuning pairs)")
        print(f"{'method':<40} {'loss':>7} {'rank':>5} {'fewest':>7} {'vs ref':>6} "
              f"{'grain':>7} {'s/pair':>7}")
        for name in [NETWORK, REFERENCE, *names]:
            table = {m: means[m] for m in fixed} | {name: means[name]}
            ranks = mean_ranks(table)
            wins = {m: len(metric_wins(means[name], means[m])) for m in fixed if m != name}
            fewest = min(wins.values())
            print(f"{name:<40} {means[name]['loss']:7.3f} {ranks[name]:5.2f} "
                  f"{fewest:4d}/10 {wins.get(REFERENCE, 0):3d}/10 {means[name]['grain']:7.4f} "
                  f"{means[name]['seconds']:7.2f}")
        print("metric means: " + "; ".join(
            f"{m}: " + " ".join(f"{k} {means[m][k]:.3f}" for k in METRIC_NAMES)
            for m in [NETWORK, REFERENCE, *names[:1]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/harvard")
    parser.add_argument("--per-type", type=int, default=12)
    parser.add_argument("--steps", type=int, nargs="+", default=[RefineSettings().steps])
    parser.add_argument("--lr", type=float, nargs="+", default=[RefineSettings().lr])
    parser.add_argument("--beta1", type=float, nargs="+", default=[RefineSettings().beta1])
    parser.add_argument("--weights", nargs="+",
                        default=[",".join(f"{k}={v:g}" for k, v in
                                          RefineSettings().metric_weights.items())],
                        help="objective weights per candidate, NAME=W,NAME=W")
    parser.add_argument("--cache", type=Path, default=Path("runs/quality-tuning"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        pairs = tuning_pairs(args.data, args.per_type)
    except FileNotFoundError as error:
        sys.exit(f"tune_quality: {error}")
    settings = candidates(args)
    model = load_fusion_model(device="cpu")
    rows = defaultdict(lambda: defaultdict(list))
    for pair in pairs:
        a, b = load_luma_pair(pair)
        mask = flat_mask(a, b)
        started = time.perf_counter()
        fused = {NETWORK: fuse_normalized(model, a, b)}
        seconds = {NETWORK: time.perf_counter() - started}
        fused.update({name: fn(a, b) for name, fn in BASELINES.items()})
        fused[REFERENCE] = reference_refinement(pair, fused[NETWORK], a, b, args.cache)
        for name, setting in settings.items():
            started = time.perf_counter()
            fused[name] = refine(fused[NETWORK], a, b, setting)
            seconds[name] = time.perf_counter() - started + seconds[NETWORK]
        losses = objective_losses(fused, a, b)
        for name, image in fused.items():
            rows[pair.pair_type][name].append({
                **fusion_metrics(a, b, image), "loss": losses[name],
                "grain": flat_noise(image, mask) if mask.any() else np.nan,
                "seconds": seconds.get(name, np.nan)})
        print(f"{pair.name} done", file=sys.stderr, flush=True)
    summarise(rows, list(settings))


if __name__ == "__main__":
    main()
