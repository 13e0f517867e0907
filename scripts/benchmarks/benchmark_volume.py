"""Fuse a full brain3d pair on the CPU through the command line: time, peak memory, geometry.

    python scripts/benchmarks/benchmark_volume.py [--case TCGA-DU-7294] [--pair t2 flair] [--files A B]
                                       [--model 2d|3d] [--reference-patch 128] [--detail-ratio]
                                       [--output /tmp/fused.nii.gz]

1. ``clinicalfmamba fuse A B -o OUT --model M --device cpu`` as a child process, as a user runs
   it (torch's default threads): wall time (start, reading, fusing, writing) and the child's
   peak resident memory, and whether OUT's size, origin, spacing and direction equal A's.
2. With ``--reference-patch N`` (3D): in this process, the fusion of the same pair with the
   default patch (sliding_window.default_patch) and with N^3 patches, one after the other,
   each timed twice, and the ratio of the faster of each (the load changes less between two
   runs in one process than between two commands). The machine's load average is printed
   with each.
3. With ``--detail-ratio`` (3D): in this process, the same pair's brain box fused by the
   bundled model with its detail layer and with the layer off (after one warm-up pass), each
   timed twice, alternating, and the ratio of the faster of each.
"""

import argparse
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch
from load import load_average

from ClinicalFMambaLib.core.intensity import signal_box
from ClinicalFMambaLib.fusion.sliding_window import default_patch, sliding_window_fuse
from ClinicalFMambaLib.fusion.volumes import BOX_MARGIN, load_volume_model, volume_luma
from ClinicalFMambaLib.networks.fusion_net import FusionConfig

GEOMETRY = ("GetSize", "GetOrigin", "GetSpacing", "GetDirection")


def command_line(a: Path, b: Path, output: str, model: str) -> None:
    command = [sys.executable, "-m", "ClinicalFMambaLib.cli", "fuse", str(a), str(b),
               "-o", output, "--model", model, "--device", "cpu"]
    before = load_average()
    start = time.perf_counter()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
    reference, fused = sitk.ReadImage(str(a)), sitk.ReadImage(output)
    same = all(getattr(reference, f)() == getattr(fused, f)() for f in GEOMETRY)
    print(f"CLI fuse {a.parent.name} {a.name} + {b.name} {reference.GetSize()} --model {model}, "
          f"{torch.get_num_threads()} threads: {seconds:.1f} s, peak RSS {peak_gb:.2f} GB, "
          f"geometry identical to A: {same} ({before} before, {load_average()} after)")


def brain_box_luma(a: Path, b: Path) -> tuple[np.ndarray, np.ndarray]:
    """The two volumes' grey values inside the box the 3D model fuses (as fuse_volumes)."""
    ya, yb = (volume_luma(sitk.GetArrayFromImage(sitk.ReadImage(str(p))))[0] for p in (a, b))
    box = signal_box((ya > 0) | (yb > 0), BOX_MARGIN)
    return ya[box], yb[box]


def fastest(runs: dict[str, Callable[[], object]], rounds: int = 2) -> dict[str, float]:
    """Each run timed ``rounds`` times, alternating (the load changes less between them than
    between two commands); the fastest time of each, in seconds."""
    best = {}
    for _ in range(rounds):
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            best[label] = min(best.get(label, seconds), seconds)
            print(f"  {label}: {seconds:.1f} s ({load_average()})")
    return best


def patch_ratio(a: Path, b: Path, reference_patch: int) -> None:
    ya, yb = brain_box_luma(a, b)
    model = load_volume_model("3d", "cpu")
    patch = default_patch(ya.shape, torch.device("cpu"))
    best = fastest({
        f"box {ya.shape}, patch {patch}": lambda: sliding_window_fuse(model, ya, yb, patch=patch),
        f"box {ya.shape}, patch {reference_patch}":
            lambda: sliding_window_fuse(model, ya, yb, patch=reference_patch)})
    default, reference = best.values()
    print(f"in-process fusion of the brain box: default patch {patch} {default:.1f} s, "
          f"{reference_patch}^3 patches {reference:.1f} s: {reference / default:.2f}x faster")


def detail_ratio(a: Path, b: Path) -> None:
    """The bundled 3D model's fusion of the brain box with its detail layer and without."""
    ya, yb = brain_box_luma(a, b)
    model = load_volume_model("3d", "cpu")
    bundled = model.cfg

    def fuse(config: FusionConfig) -> None:
        model.cfg = config
        sliding_window_fuse(model, ya, yb)

    fuse(bundled)  # the first pass also warms up the allocator
    best = fastest({"without the detail layer": lambda: fuse(replace(bundled, detail_gain=0.0)),
                    "with the detail layer": lambda: fuse(bundled)})
    without, with_layer = best.values()
    print(f"in-process fusion of the brain box: {with_layer:.2f} s with the detail layer, "
          f"{without:.2f} s without: ratio {with_layer / without:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/brain3d")
    parser.add_argument("--case", default="TCGA-DU-7294")
    parser.add_argument("--pair", nargs=2, default=["t2", "flair"])
    parser.add_argument("--files", nargs=2, type=Path, metavar=("A", "B"),
                        help="these two volume files instead of --case and --pair")
    parser.add_argument("--model", choices=("2d", "3d"), default="3d")
    parser.add_argument("--reference-patch", type=int, default=None,
                        help="3D: also compare the default patch with N^3 patches in-process")
    parser.add_argument("--detail-ratio", action="store_true",
                        help="3D: also time the brain box with and without the detail layer "
                             "in-process")
    parser.add_argument("--output", default="/tmp/clinicalfmamba-benchmark.nii.gz")
    args = parser.parse_args()
    a, b = args.files or (Path(args.data) / args.case / f"{name}.nii.gz" for name in args.pair)
    command_line(a, b, args.output, args.model)
    if args.reference_patch:
        patch_ratio(a, b, args.reference_patch)
    if args.detail_ratio:
        detail_ratio(a, b)


if __name__ == "__main__":
    main()
