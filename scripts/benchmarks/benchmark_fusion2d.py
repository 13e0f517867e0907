"""Time per 2D pair: the bundled model against a reference model, side by side in one process.

    python scripts/benchmarks/benchmark_fusion2d.py [--reference PATH | --reference-commit a51acd5]
        [--weights PATH] [--threads 2] [--repeats 10]

Both networks fuse the bundled sample pairs (Resources/sample: MRI-CT grey, MRI-SPECT colour;
256x256) through ``fusion.fuse_images``, the path of ``clinicalfmamba fuse``, in interleaved
repeats (the order alternates), so that a change in the machine's load hits both alike. The
reference defaults to the 2D weights bundled at commit a51acd5 (taken from git with their
manifest entry). Prints the median seconds per pair of each, their ratio and the load average
(os.getloadavg) before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ClinicalFMambaLib.evaluation.demo import SAMPLE_DIR, SAMPLE_PAIRS
from ClinicalFMambaLib.fusion.image_files import load_pair
from ClinicalFMambaLib.fusion.inference import emphasis_of, fuse_images, load_fusion_model
from ClinicalFMambaLib.io.weights import MANIFEST_NAME, WeightsError
from ClinicalFMambaLib.networks.fusion_net import parameter_count

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = "Resources/weights"


def weights_at_commit(commit: str, folder: Path, weights: str = "fusion2d.safetensors") -> Path:
    """The ``weights`` bundled at ``commit`` and their manifest, written into ``folder``."""
    for name in (weights, MANIFEST_NAME):
        content = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{WEIGHTS}/{name}"],
                                 capture_output=True, check=True).stdout
        (folder / name).write_bytes(content)
    return folder / weights


def side_by_side_arguments(parser: argparse.ArgumentParser, reference_commit: str,
                           repeats: int) -> argparse.Namespace:
    """Parse a side-by-side benchmark's common options (reference commit, threads, repeats)
    with ``parser``'s own, check them and set torch's threads."""
    parser.add_argument("--reference-commit", default=reference_commit)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=repeats)
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 1:
        sys.exit(f"{parser.prog}: --repeats and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    return args


def time_pairs(model, pairs) -> float:
    """Seconds to fuse every pair once, divided by the number of pairs."""
    started = time.perf_counter()
    for a, b in pairs:
        fuse_images(model, a, b)
    return (time.perf_counter() - started) / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="default: the bundled 2D model")
    parser.add_argument("--reference", default=None, help="reference 2D weights file (with "
                        "its MANIFEST.json beside it); default: --reference-commit")
    args = side_by_side_arguments(parser, "a51acd5", repeats=10)
    with tempfile.TemporaryDirectory() as folder:
        try:
            reference = args.reference or weights_at_commit(args.reference_commit, Path(folder))
        except subprocess.CalledProcessError as error:
            sys.exit(f"benchmark_fusion2d: no 2D weights at commit {args.reference_commit} "
                     f"({error.stderr.decode().strip()})")
        try:
            models = {"reference": load_fusion_model(reference, device="cpu"),
                      "new": load_fusion_model(args.weights, device="cpu")}
        except WeightsError as error:
            sys.exit(f"benchmark_fusion2d: {error}")
    pairs = [load_pair(SAMPLE_DIR / a, SAMPLE_DIR / b)[:2] for a, b in SAMPLE_PAIRS.values()]
    for model in models.values():
        time_pairs(model, pairs)  # warm-up
    load_before = os.getloadavg()
    seconds = {name: [] for name in models}
    for repeat in range(args.repeats):
        for name in (list(models) if repeat % 2 == 0 else reversed(list(models))):
            seconds[name].append(time_pairs(models[name], pairs))
    load_after = os.getloadavg()
    for name, model in models.items():
        emphasis = emphasis_of(model)
        print(f"{name:<9} {statistics.median(seconds[name]):.4f} s per pair (median of "
              f"{args.repeats}; min {min(seconds[name]):.4f}); {parameter_count(model):,} "
              f"parameters, stem stride {model.cfg.stem_stride}"
              + ("" if emphasis is None else f", emphasis {emphasis}"))
    ratio = statistics.median(seconds["new"]) / statistics.median(seconds["reference"])
    print(f"ratio new / reference: {ratio:.3f} ({len(pairs)} sample pairs of 256x256, "
          f"{args.threads} torch threads, {args.repeats} interleaved repeats)")
    print("load average (1, 5, 15 min) before: " + ", ".join(f"{x:.2f}" for x in load_before)
          + "; after: " + ", ".join(f"{x:.2f}" for x in load_after))


if __name__ == "__main__":
    main()
