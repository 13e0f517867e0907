"""The ``classify`` command: tumour verdicts of images, volumes and folders of them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(commands) -> None:
    """Add the classifier sub-commands."""
    classify = commands.add_parser(
        "classify", help="tumour class probabilities of 2D images or 3D volumes",
        description="Classify 2D images (PNG/JPEG/...) and 3D volumes (NIfTI/NRRD/MHA; every "
                    "axial slice plus a volume verdict). The model is loaded once.")
    classify.add_argument("inputs", nargs="+", type=Path,
                          help="image or volume files, or folders of them")
    classify.add_argument("--model", type=Path, default=None,
                          help="classifier weights (default: the bundled classifier2d)")
    classify.add_argument("--json", action="store_true",
                          help="print one JSON record per input instead of text")
    classify.add_argument("--heatmap-dir", type=Path, default=None,
                          help="write Grad-CAM heatmaps here (PNG for images, NIfTI for volumes)")
    classify.add_argument("--slices", action="store_true",
                          help="include per-slice probabilities of volumes in the output")
    classify.add_argument("--batch-size", type=int, default=32,
                          help="slices per step for volumes (default: %(default)s)")
    classify.set_defaults(func=run_classify)


# --------------------------------------------------------------------------- classify

def _expand_inputs(inputs: list[Path]) -> list[Path]:
    from ..clinical.images import is_image_file, is_volume_file

    files = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and (is_image_file(p) or is_volume_file(p)))
            if not found:
                raise ValueError(f"{path} holds no image or volume files")
            files += found
        elif path.exists():
            if not (is_image_file(path) or is_volume_file(path)):
                raise ValueError(f"{path}: not an image (png/jpg/bmp/tif) or volume "
                                 "(nii/nii.gz/nrrd/mha) file")
            files.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return files


def run_classify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..clinical.classifier import load_classifier
    from ..clinical.records import classification_record, heatmap_stems
    from ..clinical.wording import verdict_line
    from ..io.files import MEDICAL_SUFFIXES, check_complete_file, check_output_location, suffix_of

    files = _expand_inputs(args.inputs)
    for path in files:  # a truncated volume would be classified with zeros in place of slices
        if suffix_of(path) in MEDICAL_SUFFIXES:
            check_complete_file(path)
    if args.heatmap_dir:
        check_output_location(args.heatmap_dir, folder=True)
    model = load_classifier(args.model)
    if args.heatmap_dir:
        args.heatmap_dir.mkdir(parents=True, exist_ok=True)
    stems = heatmap_stems(files)
    for path in tqdm(files, desc="classify", unit="file", disable=len(files) == 1):
        record = classification_record(model, path, args.heatmap_dir, args.batch_size,
                                       args.slices, stems[path])
        tqdm.write(json.dumps(record) if args.json else verdict_line(record), file=sys.stdout)
    return 0
