"""Score the bundled 2D model against classical fusion on the held-back Harvard cases.

    python scripts/research/fusion_results.py [--data ../shared/data/harvard] [--output docs/research/results_2d.md]

Every validation pair (whole held-back cases, see training.harvard_data.VALIDATION_CASES) is fused by
the model and by the mean / max / Laplacian-pyramid baselines; the ten metrics of the 8-bit
protocol and the paper's protocol are averaged per pair type and written as Markdown tables.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ClinicalFMambaLib.evaluation.metrics import (HIGHER_IS_BETTER, METRIC_NAMES, fusion_metrics,
                                                  paper_metrics)
from ClinicalFMambaLib.evaluation.ranking import beats_best_baseline, metric_wins
from ClinicalFMambaLib.fusion.inference import fuse_normalized, load_fusion_model, set_emphasis
from ClinicalFMambaLib.fusion.refine import RefineSettings, refine
from ClinicalFMambaLib.objective.baselines import BASELINES
from ClinicalFMambaLib.training.harvard_data import find_pairs, load_luma_pair, split_by_case

METHODS = ("ClinicalFMamba", *BASELINES)


def emphasis_name(emphasis: float) -> str:
    return f"ClinicalFMamba e={emphasis:g}"


def fuse_by_model(model, a, b, refinement: RefineSettings | None = None):
    """The model's fusion of a grey pair, refined as ``--quality best`` (fusion/refine.py)
    with ``refinement`` if given."""
    fused = fuse_normalized(model, a, b)
    return fused if refinement is None else refine(fused, a, b, refinement)


def score(pairs, model, more_images=None, emphases=None, group=None,
          refinement: RefineSettings | None = None) -> dict:
    """{pair_type: {method: {metric: mean}}}. ``more_images(pair)``, if given, returns other
    methods' fused images of the pair ({method: float [0, 1] image}), scored alike.
    ``emphases``: the model fuses at each of these values instead of its default, as methods
    ``emphasis_name(e)``. ``group(pair)``: the key to average under instead of the pair type.
    ``refinement``: the model's images refined as ``fuse --quality best``."""
    rows = defaultdict(lambda: defaultdict(list))
    for pair in tqdm(pairs, desc="scoring", unit="pair"):
        a, b = load_luma_pair(pair)
        fused = {"ClinicalFMamba": fuse_by_model(model, a, b, refinement)} if not emphases else {
            emphasis_name(e): fuse_by_model(set_emphasis(model, e), a, b, refinement)
            for e in emphases}
        fused.update({name: fn(a, b) for name, fn in BASELINES.items()})
        fused.update(more_images(pair) if more_images else {})
        for method, image in fused.items():
            paper = paper_metrics(a, b, image)
            rows[group(pair) if group else pair.pair_type][method].append({
                **fusion_metrics(a, b, image),
                "paper SSIM": paper["SSIM"], "paper PSNR": paper["PSNR"]})
    return {t: {m: {k: float(np.mean([r[k] for r in records])) for k in records[0]}
                for m, records in methods.items()} for t, methods in rows.items()}


def markdown(results: dict, counts: dict) -> str:
    lines = []
    columns = [*METRIC_NAMES, "paper SSIM", "paper PSNR"]
    for pair_type, methods in sorted(results.items()):
        lines += [f"### {pair_type} ({counts[pair_type]} validation pairs)", "",
                  "| method | " + " | ".join(columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        for method in METHODS:
            cells = []
            for metric in columns:
                value = methods[method][metric]
                best = max(methods[m][metric] for m in METHODS)
                cells.append(f"**{value:.3f}**" if value == best else f"{value:.3f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        ours = methods["ClinicalFMamba"]
        per_metric_best = len(beats_best_baseline(ours, [methods[b] for b in BASELINES]))
        wins = {b: len(metric_wins(ours, methods[b])) for b in BASELINES}
        hardest = min(wins, key=wins.get)
        lines += ["", f"ClinicalFMamba beats the best baseline of each metric on "
                      f"**{per_metric_best}/10** metrics, and the hardest single baseline "
                      f"({hardest}) on **{wins[hardest]}/10**.", ""]
    assert all(HIGHER_IS_BETTER[k] for k in METRIC_NAMES)  # the bold/beat logic assumes it
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/harvard")
    parser.add_argument("--weights", default=None, help="default: the bundled 2D model")
    parser.add_argument("--output", default="docs/research/results_2d.md")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, val = split_by_case(find_pairs(args.data))
    counts = defaultdict(int)
    for pair in val:
        counts[pair.pair_type] += 1
    model = load_fusion_model(args.weights, device="cpu")
    started = time.time()
    results = score(val, model)
    text = markdown(results, counts)
    Path(args.output).write_text(
        "<!-- written by scripts/research/fusion_results.py; do not edit by hand -->\n" + text)
    print(text)
    print(f"scored {len(val)} pairs in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
