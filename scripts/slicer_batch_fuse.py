"""Fuse and classify volume pairs in 3D Slicer without its main window, and save the results.

    Slicer --no-main-window --python-script scripts/slicer_batch_fuse.py \\
        A1.nii.gz B1.nii.gz [A2.nrrd B2.nrrd ...] -o results/ [--device cpu] [--no-classify]
        [--metrics]

Needs the ClinicalFMamba extension (and PyTorch) installed in that Slicer; it also runs under
plain Python with pip's slicer-core (``python scripts/slicer_batch_fuse.py ...``). Running
the script counts as consent to install missing Python packages. For each pair A, B it writes
to the output folder, named after A: ``<A>_fused.nii.gz``, and with classification
``<A>_heatmap.nii.gz``, ``<A>_verdict.tsv`` (class probabilities) and ``<A>_slices.tsv``
(per-slice verdicts); with --metrics ``<A>_metrics.tsv``. One line per pair is printed with
the verdict. Exit status: 0 when every pair was fused and saved, 1 when any pair or the setup
failed, 2 for bad arguments; Slicer always exits (``--python-script`` alone would keep a
headless Slicer running after an error).
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
    """Fuse one pair, save its results, return its verdict line; the scene is cleared after.
    Any failure (reading, fusing, writing) raises."""
    try:
        volume_a = logic.loadVolume(path_a)
        volume_b = logic.loadVolume(path_b)
        fused = logic.fuse(volume_a, volume_b, model=args.model, device=args.device,
                           classify=args.classify, metrics=args.metrics)
        logic.saveNode(fused, args.output / f"{stem(path_a)}_fused.nii.gz")
        for role, suffix in OUTPUTS.items():
            node = fused.GetNodeReference(role)
            if node is not None:
                logic.saveNode(node, args.output / f"{stem(path_a)}_{suffix}")
        verdict = fused.GetAttribute("ClinicalFMamba.Verdict") or "not classified"
        return f"{path_a.name} + {path_b.name}: {verdict}"
    finally:
        slicer.mrmlScene.Clear(0)


def _logic():
    """The module's logic; outside Slicer the module is imported from the checkout and a
    scene is made (pip's slicer-core has no application to make one)."""
    if not hasattr(slicer, "mrmlScene"):
        slicer.mrmlScene = slicer.vtkMRMLScene()
    try:
        from ClinicalFMamba import ClinicalFMambaLogic
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ClinicalFMamba"))
        from ClinicalFMamba import ClinicalFMambaLogic
    return ClinicalFMambaLogic()


def main(argv: list[str]) -> int:
    args = parse(argv)
    logic = _logic()
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
    print(f"{len(pairs) - failed} of {len(pairs)} pairs fused into {args.output}", flush=True)
    return 1 if failed else 0


def run(argv: list[str]) -> int:
    """``main`` with every way out turned into an exit status and one line on stderr."""
    try:
        return main(argv)
    except SystemExit as stop:  # argparse: usage error (2) or --help (0)
        return stop.code if isinstance(stop.code, int) else 2
    except BaseException as error:  # before the loop: setup, dependencies, output folder
        print(f"slicer_batch_fuse.py: {type(error).__name__}: {error}", file=sys.stderr,
              flush=True)
        return 1


if __name__ == "__main__":
    status = run(sys.argv[1:])
    if hasattr(slicer, "app"):
        slicer.util.exit(status)  # ends Slicer's event loop with this status
    else:
        sys.exit(status)
