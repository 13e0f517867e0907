"""Fuse a full brain3d pair on the CPU through the command line: time, peak memory, geometry.

    python scripts/benchmark_volume.py [--case TCGA-DU-7294] [--pair t2 flair] [--files A B]
                                       [--model 2d|3d] [--reference-patch 128]
                                       [--output /tmp/fused.nii.gz]

1. ``clinicalfmamba fuse A B -o OUT --model M --device cpu`` as a child process, as a user runs
   it (torch's default threads): wall time (start, reading, fusing, writing) and the child's
   peak resident memory, and whether OUT's size, origin, spacing and direction equal A's.
2. With ``--reference-patch N`` (3D): in this process, the fusion of the same pair with the
   default patch (sliding_window.default_patch) and with N^3 patches, one after the other,
   each timed twice, and the ratio of the faster of each (the load changes less between two
   runs in one process than between two commands). The machine's load average is printed
   with each.
"""

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import SimpleITK as sitk
import torch

from ClinicalFMambaLib.preprocessing import signal_box
from ClinicalFMambaLib.sliding_window import default_patch, sliding_window_fuse
from ClinicalFMambaLib.volume_fusion import BOX_MARGIN, load_volume_model, volume_luma

GEOMETRY = ("GetSize", "GetOrigin", "GetSpacing", "GetDirection")


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def command_line(a: Path, b: Path, output: str, model: str) -> None:
    command = [sys.executable, "-m", "ClinicalFMambaLib.cli", "fuse", str(a), str(b),
               "-o", output, "--model", model, "--device", "cpu"]
    before = load()
    start = time.perf_counter()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
    reference, fused = sitk.ReadImage(str(a)), sitk.ReadImage(output)
    same = all(getattr(reference, f)() == getattr(fused, f)() for f in GEOMETRY)
    print(f"CLI fuse {a.parent.name} {a.name} + {b.name} {reference.GetSize()} --model {model}, "
          f"{torch.get_num_threads()} threads: {seconds:.1f} s, peak RSS {peak_gb:.2f} GB, "
          f"geometry identical to A: {same} ({before} before, {load()} after)")


def patch_ratio(a: Path, b: Path, reference_patch: int) -> None:
    ya, yb = (volume_luma(sitk.GetArrayFromImage(sitk.ReadImage(str(p))))[0] for p in (a, b))
    box = signal_box((ya > 0) | (yb > 0), BOX_MARGIN)
    ya, yb = ya[box], yb[box]
    model = load_volume_model("3d", "cpu")
    patch = default_patch(ya.shape, torch.device("cpu"))
    best = {}
    for label, size in (("default", patch), ("reference", reference_patch)) * 2:
        start = time.perf_counter()
        sliding_window_fuse(model, ya, yb, patch=size)
        seconds = time.perf_counter() - start
        best[label] = min(best.get(label, seconds), seconds)
        print(f"  box {ya.shape}, patch {size}: {seconds:.1f} s ({load()})")
    print(f"in-process fusion of the brain box: default patch {patch} {best['default']:.1f} s, "
          f"{reference_patch}^3 patches {best['reference']:.1f} s: "
          f"{best['reference'] / best['default']:.2f}x faster")


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
    parser.add_argument("--output", default="/tmp/clinicalfmamba-benchmark.nii.gz")
    args = parser.parse_args()
    a, b = args.files or (Path(args.data) / args.case / f"{name}.nii.gz" for name in args.pair)
    command_line(a, b, args.output, args.model)
    if args.reference_patch:
        patch_ratio(a, b, args.reference_patch)


if __name__ == "__main__":
    main()
