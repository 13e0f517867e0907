"""Fuse a full brain3d pair on the CPU: time, peak memory, and geometry check.

    python scripts/benchmark_volume.py [--case TCGA-DU-7294] [--pair t2 flair] [--model 2d|3d]
                                       [--threads 2] [--output /tmp/fused.nii.gz]

Prints wall time of the fusion (reading and writing excluded and included), the process's
peak resident memory, and whether the output's size, origin, spacing and direction equal A's.
"""

import argparse
import resource
import time
from pathlib import Path

import SimpleITK as sitk
import torch

from ClinicalFMambaLib.volume_files import fuse_volume_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/brain3d")
    parser.add_argument("--case", default="TCGA-DU-7294")
    parser.add_argument("--pair", nargs=2, default=["t2", "flair"])
    parser.add_argument("--model", choices=("2d", "3d"), default="2d")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="/tmp/clinicalfmamba-benchmark.nii.gz")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    a, b = (Path(args.data) / args.case / f"{name}.nii.gz" for name in args.pair)
    start = time.perf_counter()
    fuse_volume_files(a, b, args.output, model=args.model, device="cpu")
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    reference, fused = sitk.ReadImage(str(a)), sitk.ReadImage(args.output)
    same = all(getattr(reference, f)() == getattr(fused, f)()
               for f in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"))
    print(f"{args.case} {'+'.join(args.pair)} {reference.GetSize()} model {args.model}, "
          f"{args.threads} threads: {seconds:.1f} s (read + fuse + write), "
          f"peak RSS {peak_gb:.2f} GB, geometry identical to A: {same}")


if __name__ == "__main__":
    main()
