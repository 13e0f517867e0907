"""Time per 2D pair of the quality mode, side by side with the network alone and with the
100-step refinement it replaces, in one process.

    python scripts/benchmarks/benchmark_quality.py [--threads 2] [--repeats 3] [--refine-steps N]

The bundled sample pairs (Resources/sample: MRI-CT grey, MRI-SPECT colour; 256x256) go
through ``fusion.fuse_images``, the path of ``clinicalfmamba fuse``: with ``quality="fast"``
(the network alone) and ``quality="best"`` (fusion/refine.py), and as before the quality
mode (the network's luma then 100 Adam steps at lr 0.03 on the logits with the headroom
study's objective, training.fusion_targets.optimise_pair_metrics, as scripts/research/
metric_headroom.py --steps 100 --lr 0.03 --metric-weight SSIM=20 --metric-weight AG=4
--metric-weight VIF=4; colour put back alike). Repeats are interleaved and
their order alternates, so that a change in the machine's load hits all three alike. Prints
each one's median seconds per pair, the ratios best / fast and best / 100 steps, and the
load average (os.getloadavg) before and after.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from load import load_average

from ClinicalFMambaLib.core.intensity import split_luma, ycbcr_to_rgb
from ClinicalFMambaLib.evaluation.demo import SAMPLE_DIR, SAMPLE_PAIRS
from ClinicalFMambaLib.fusion.image_files import load_pair
from ClinicalFMambaLib.fusion.inference import fuse_images, fuse_normalized, load_fusion_model
from ClinicalFMambaLib.fusion.refine import HEADROOM_WEIGHTS, RefineSettings
from ClinicalFMambaLib.objective.metric_objective import MetricObjective
from ClinicalFMambaLib.training.fusion_targets import optimise_pair_metrics


def hundred_steps(model, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The refinement before the quality mode: the network, then 100 steps at lr 0.03."""
    (ya, cbcr_a), (yb, cbcr_b) = split_luma(a), split_luma(b)
    objective = MetricObjective(deficit_weight=3, metric_weights=HEADROOM_WEIGHTS)
    fused = optimise_pair_metrics(fuse_normalized(model, ya, yb), ya, yb, objective, 100, 0.03)
    chroma = cbcr_a if cbcr_a is not None else cbcr_b
    return fused if chroma is None else ycbcr_to_rgb(fused, chroma)


def seconds_per_pair(fuse, pairs) -> float:
    started = time.perf_counter()
    for a, b in pairs:
        fuse(a, b)
    return (time.perf_counter() - started) / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--refine-steps", type=int, default=None,
                        help="steps of the quality mode (default: its tuned number)")
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 1:
        sys.exit("benchmark_quality: --repeats and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    model = load_fusion_model(device="cpu")
    steps = RefineSettings.with_steps(args.refine_steps).steps
    methods = {
        "fast": lambda a, b: fuse_images(model, a, b),
        "best": lambda a, b: fuse_images(model, a, b, "best", steps),
        "100 steps": lambda a, b: hundred_steps(model, a, b),
    }
    pairs = [load_pair(SAMPLE_DIR / a, SAMPLE_DIR / b)[:2] for a, b in SAMPLE_PAIRS.values()]
    for a, b in pairs:  # warm-up
        methods["fast"](a, b)
        methods["best"](a, b)
    before = load_average()
    seconds = {name: [] for name in methods}
    for repeat in range(args.repeats):
        order = list(methods) if repeat % 2 == 0 else list(reversed(methods))
        for name in order:
            seconds[name].append(seconds_per_pair(methods[name], pairs))
    after = load_average()
    median = {name: statistics.median(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        print(f"{name:<10} {median[name]:8.3f} s per pair (median of {args.repeats}; "
              f"min {min(values):.3f})")
    print(f"ratio best / fast: {median['best'] / median['fast']:.1f}; best / 100 steps: "
          f"{median['best'] / median['100 steps']:.3f} ({steps} steps; {len(pairs)} sample "
          f"pairs of 256x256, {args.threads} torch threads, {args.repeats} interleaved repeats)")
    print(f"{before} before; {after} after")


if __name__ == "__main__":
    main()
