"""Eight subjects (T2w + FLAIR crops of the brain3d cases, --a/--b as in docs/cohort.md) fused
and classified three ways, side by side on one machine:

    python scripts/benchmarks/cohort.py [--subjects 8] [--crop 128] [--full]

1. the sequential command-line loop: ``clinicalfmamba fuse A B -o F --classify`` per subject,
   each a new process that loads the networks;
2. ``clinicalfmamba cohort BIDS OUT participant`` on one worker with 2 threads;
3. the same on two workers with 1 thread each.

Printed: each one's wall time and throughput (subjects a minute), and the cohort's overhead
against the sum of single-volume times T_i (each subject fused and classified in this process
with the networks loaded, one after the other): slots x wall / sum(T_i) - 1, slots being
workers x threads; then the part of it that is the engine's (cluster start, network loads,
scheduling, the last subject's tail): wall / (sum of the run's own task seconds / slots) - 1.
The load average is printed with each: on a shared machine, compare figures of one run only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch
from load import load_average

from ClinicalFMambaLib.clinical.classifier import load_classifier
from ClinicalFMambaLib.cohort.derivatives import outputs_of
from ClinicalFMambaLib.cohort.subjects import SubjectSession
from ClinicalFMambaLib.cohort.task import fuse_and_classify
from ClinicalFMambaLib.fusion.volumes import load_volume_model

REPO = Path(__file__).resolve().parents[2]
BRAIN3D = REPO.parent / "shared" / "data" / "brain3d"
CASES = ("TCGA-DU-7294", "BraTS-GLI-00001-000", "AURORA")
CLI = [sys.executable, "-m", "ClinicalFMambaLib.cli"]


def make_tree(root: Path, subjects: int, crop: int | None) -> list[SubjectSession]:
    """sub-01 ... as BIDS (T2w, FLAIR), cycling through the cases; centre crops of
    crop x crop x crop/2 voxels, or whole volumes."""
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "bench", "BIDSVersion": "1.10.0"}')
    items = []
    for number in range(1, subjects + 1):
        folder = root / f"sub-{number:02d}" / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for contrast, suffix in (("t2", "T2w"), ("flair", "FLAIR")):
            image = sitk.ReadImage(str(BRAIN3D / CASES[(number - 1) % 3] / f"{contrast}.nii.gz"))
            if crop:
                size = image.GetSize()
                box = [crop, crop, crop // 2]
                image = image[tuple(slice((s - b) // 2, (s - b) // 2 + b)
                                    for s, b in zip(size, box))]
            paths.append(folder / f"sub-{number:02d}_{suffix}.nii.gz")
            sitk.WriteImage(image, str(paths[-1]), useCompression=True)
        items.append(SubjectSession(f"{number:02d}", None, *paths))
    return items


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def single_volume_times(items: list[SubjectSession], out: Path) -> list[float]:
    """Each subject fused and classified in this process, the networks loaded once."""
    torch.set_num_threads(1)
    fusion, classifier = load_volume_model("auto", "cpu"), load_classifier()
    times = []
    for item in items:
        start = time.perf_counter()
        fuse_and_classify(item, outputs_of(out, item, "T2w", "FLAIR"), fusion, classifier)
        times.append(time.perf_counter() - start)
    return times


def report(name: str, wall: float, count: int, before: str) -> None:
    print(f"{name}: {wall:.1f} s, {60 * count / wall:.2f} subjects/min "
          f"({before} before, {load_average()} after)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128, help="centre crop side (voxels)")
    parser.add_argument("--full", action="store_true", help="whole 240x240x155 volumes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        items = make_tree(root / "bids", args.subjects, None if args.full else args.crop)
        print(f"{len(items)} subjects, {sitk.ReadImage(str(items[0].a)).GetSize()} voxels each")

        before = load_average()
        sequential = sum(timed([*CLI, "fuse", str(i.a), str(i.b), "-o",
                                str(root / "loop" / f"{i.prefix}.nii.gz"), "--classify",
                                "--device", "cpu"]) for i in items)
        report("sequential CLI loop (a process per subject)", sequential, len(items), before)

        singles = single_volume_times(items, root / "single")
        print(f"sum of single-volume times: {sum(singles):.1f} s "
              f"({', '.join(f'{t:.1f}' for t in singles)})")

        for workers, threads in ((1, 2), (2, 1)):
            out, before = root / f"cohort-{workers}x{threads}", load_average()
            wall = timed([*CLI, "cohort", str(root / "bids"), str(out), "participant",
                          "--workers", str(workers), "--threads-per-worker", str(threads),
                          "--device", "cpu"])
            report(f"cohort, {workers} worker(s) x {threads} thread(s)", wall, len(items), before)
            slots = workers * threads
            tasks = sum(json.loads(p.read_text())["timing"]["seconds"]
                        for p in out.rglob("*_desc-fused_*.json"))
            print(f"  overhead against the sum of single-volume times: "
                  f"{slots * wall / sum(singles) - 1:+.1%}; the engine's part: "
                  f"{wall / (tasks / slots) - 1:+.1%} (its tasks took {tasks:.1f} s)")


if __name__ == "__main__":
    main()
