"""Fuse and classify volume pairs in 3D Slicer without its main window, and save the results.

    Slicer --no-main-window --python-script scripts/slicer_batch_fuse.py \\
        A1.nii.gz B1.nii.gz [A2.nrrd B2.nrrd ...] -o results/ [--device cpu] [--no-classify]
        [--metrics]

Needs the ClinicalFMamba extension (and PyTorch) installed in that Slicer. Running the script
counts as consent to install missing Python packages. For each pair A, B it writes to the
output folder, named after A: ``<A>_fused.nii.gz``, and with classification
``<A>_heatmap.nii.gz``, ``<A>_verdict.tsv`` (class probabilities) and
``<A>_slices.tsv`` (per-slice verdicts); with --metrics ``<A>_metrics.tsv``. One line per pair
is printed with the verdict. Slicer exits with status 1 if any pair failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import slicer

OUTPUTS = {"Heatmap": "heatmap.nii.gz", "Probabilities": "verdict.tsv",
           "SliceVerdicts": "slices.tsv", "Metrics": "metrics.tsv"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="slicer_batch_fuse.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("volumes", nargs="+", type=Path,
                        help="pairs of volume files: A B [A B ...]")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--model", default="auto", choices=("auto", "2d", "3d"))
    parser.add_argument("--no-classify", dest="classify", action="store_false")
    parser.add_argument("--metrics", action="store_true")
    args = parser.parse_args(argv)
    if len(args.volumes) % 2:
        parser.error("give the volumes in pairs: A B [A B ...]")
    return args


def stem(path: Path) -> str:
    return path.name.split(".")[0]


def fuse_pair(logic, path_a: Path, path_b: Path, args: argparse.Namespace) -> str:
    """Fuse one pair, save its results, return its verdict line; the scene is cleared after."""
    try:
        volume_a = slicer.util.loadVolume(str(path_a))
        volume_b = slicer.util.loadVolume(str(path_b))
        fused = logic.fuse(volume_a, volume_b, model=args.model, device=args.device,
                           classify=args.classify, metrics=args.metrics)
        slicer.util.saveNode(fused, str(args.output / f"{stem(path_a)}_fused.nii.gz"))
        for role, suffix in OUTPUTS.items():
            node = fused.GetNodeReference(role)
            if node is not None:
                slicer.util.saveNode(node, str(args.output / f"{stem(path_a)}_{suffix}"))
        table = fused.GetNodeReference("Probabilities")
        verdict = table.GetAttribute("ClinicalFMamba.Verdict") if table else "not classified"
        return f"{path_a.name} + {path_b.name}: {verdict}"
    finally:
        slicer.mrmlScene.Clear()


def main(argv: list[str]) -> int:
    args = parse(argv)
    from ClinicalFMamba import ClinicalFMambaLogic

    logic = ClinicalFMambaLogic()
    logic.ensureDependencies(askConfirmation=False)
    args.output.mkdir(parents=True, exist_ok=True)
    failed = 0
    pairs = list(zip(args.volumes[::2], args.volumes[1::2]))
    for path_a, path_b in pairs:
        try:
            print(fuse_pair(logic, path_a, path_b, args), flush=True)
        except Exception as error:  # report and go on with the next pair
            failed += 1
            print(f"{path_a.name} + {path_b.name}: FAILED: {error}", file=sys.stderr, flush=True)
    print(f"{len(pairs) - failed} of {len(pairs)} pairs fused into {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    slicer.util.exit(main(sys.argv[1:]))
