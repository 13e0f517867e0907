"""The ``fuse`` command: images, folders of images and volumes, optionally classified."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def _record_emphasis(args: argparse.Namespace, model) -> None:
    """Keep the emphasis the network fuses with (None: a network without one) for reports."""
    from ..fusion.inference import emphasis_of

    args.emphasis_used = emphasis_of(model)


def model_loader(args: argparse.Namespace):
    from ..fusion.inference import check_model_dims, load_fusion_model, set_emphasis

    def load():
        model = set_emphasis(check_model_dims(
            load_fusion_model(args.weights, dims=2, device=args.device), 2, args.weights),
            getattr(args, "emphasis", None))
        _record_emphasis(args, model)
        return model

    return load


def report_unmatched(batch) -> None:
    for label, names in (("A", batch.only_a), ("B", batch.only_b)):
        if names:
            print(f"skipped {len(names)} file(s) only in folder {label}: {', '.join(names)}",
                  file=sys.stderr)


def _fuse_volumes(args: argparse.Namespace) -> Path:
    from ..fusion.volume_files import fuse_volume_files, progress_bar

    update, units, close = progress_bar("fuse")
    try:
        written = fuse_volume_files(args.a, args.b, args.output, args.model, args.device, update,
                                    args.weights, units, args.emphasis,
                                    lambda model: _record_emphasis(args, model))
    finally:
        close()
    print(f"wrote {written}")
    return written


def _check_kinds(a: Path, b: Path) -> bool:
    """True for two volumes, False for two 2D images (or folders of them); else InputError."""
    from ..core.errors import InputError
    from ..io.files import check_input_path, same_file
    from ..io.volumes import is_volume, split_series

    for path in (a, b):
        check_input_path(split_series(path)[0])
    if a == b or same_file(a, b):
        what = "folder" if a.is_dir() else "file"
        raise InputError(f"A and B are the same {what} ({a}): a fusion of an image with itself "
                         "only gives it back")
    volume_a, volume_b = is_volume(a), is_volume(b)
    if volume_a != volume_b:
        volume, flat = (a, b) if volume_a else (b, a)
        raise InputError(f"{volume} is a volume but {flat} is a 2D image (or a folder of "
                         "them); fuse two volumes or two 2D images")
    return volume_a


def _fuse_images(args: argparse.Namespace) -> tuple[list[tuple[Path, Path, Path]],
                                                  Exception | None]:
    """2D pairs or two folders of them: (jobs written, the error that ends the run or None).
    A folder run skips pairs that cannot be fused, lists them and ends in PartialRunError."""
    from ..core.errors import OutputError, PartialRunError
    from ..fusion.image_files import check_outputs, fuse_batch, match_inputs
    from ..io.files import check_output_location
    from ..io.images import is_readable

    if args.model == "3d":
        raise ValueError("--model 3d fuses volumes; these inputs are 2D images")
    folders = args.a.is_dir()
    if folders:
        if is_readable(args.output) and not args.output.is_dir():
            raise OutputError(f"folder inputs write one file per pair into a folder, but "
                              f"{args.output} is a file name; give a folder")
        check_output_location(args.output, folder=True)
    batch = match_inputs(args.a, args.b, args.output)
    check_outputs(batch)
    report_unmatched(batch)
    failed: list[tuple[Path, str]] = []
    written = fuse_batch(batch, model_loader(args), failed=failed if folders else None,
                         quality=args.quality, steps=args.refine_steps)
    if not folders:
        print(f"wrote {written[0][2]}")
        return written, None
    print(f"wrote {len(written)} fused images to {args.output}; skipped "
          f"{len(batch.only_a) + len(batch.only_b)} unmatched; failed {len(failed)}")
    for path, reason in failed:
        print(f"failed {path.name}: {reason}", file=sys.stderr)
    error = PartialRunError(f"{len(failed)} of {len(batch.jobs)} pairs failed (listed above); "
                            f"the {len(written)} others were written") if failed else None
    return written, error


def _fuse(args: argparse.Namespace) -> int:
    from ..clinical.classifier import load_classifier
    from ..fusion.inference import parse_emphasis
    from ..fusion.refine import RefineSettings, parse_quality
    from ..io.files import check_output_location, refuse_overwriting_inputs

    if (args.report or args.classifier) and not args.classify:
        raise ValueError("--report and --classifier apply to --classify only")
    if args.emphasis is not None:  # checked before any file is read
        args.emphasis = parse_emphasis(args.emphasis)
    args.emphasis_used = args.emphasis
    if parse_quality(args.quality) == "fast" and args.refine_steps is not None:
        raise ValueError("--refine-steps applies to --quality best")
    # The steps a best run takes, also for the report (None: the network alone).
    args.refine_steps = (RefineSettings.with_steps(args.refine_steps).steps
                         if args.quality == "best" else None)
    volumes = _check_kinds(args.a, args.b)
    if volumes and args.quality == "best":
        raise ValueError("--quality best applies to 2D images (each fused image refined on the "
                         "fusion metrics); volumes are fused by the network alone")
    if volumes and args.emphasis is not None and args.model != "2d" and args.weights is None:
        raise ValueError("--emphasis applies to the 2D network; for volumes add --model 2d")
    if args.report:  # checked now, not found unwritable after the fusion
        check_output_location(args.report)
        refuse_overwriting_inputs(args.report, [args.a, args.b])
    # The classifier is loaded first so that bad weights stop the run before any fusion.
    classifier = load_classifier(args.classifier) if args.classify else None
    jobs, error = ([(args.a, args.b, _fuse_volumes(args))], None) if volumes \
        else _fuse_images(args)
    if classifier is not None and jobs:
        print(f"wrote {_classification_report(args, classifier, jobs)}")
    if error is not None:
        raise error
    return 0


def _classification_report(args: argparse.Namespace, classifier,
                           jobs: list[tuple[Path, Path, Path]]) -> Path:
    """Classify every fused output, write its heatmap beside it, and write the JSON report
    (default: OUT's name + _report.json, or report.json inside an output folder)."""
    from ..clinical.records import classification_record, sibling_name
    from ..clinical.wording import verdict_line
    from ..io.files import write_atomically

    results = []
    for path_a, path_b, fused in jobs:
        record = classification_record(classifier, fused, heatmap_dir=fused.parent)
        print(verdict_line(record))
        record = {"a": str(path_a), "b": str(path_b), "fused": record.pop("input"), **record}
        results.append(record)
    report = args.report or (args.output / "report.json" if args.output.is_dir()
                             else args.output.with_name(sibling_name(args.output, "_report.json")))
    content = {"command": shlex.join(["clinicalfmamba", *getattr(args, "argv", [])]),
               "fusion_weights": str(args.weights or "bundled"), "emphasis": args.emphasis_used,
               "quality": args.quality, "refine_steps": args.refine_steps,
               "classifier_weights": str(args.classifier or "bundled"),
               "classes": classifier.classes, "results": results}
    write_atomically(report, lambda target: target.write_text(json.dumps(content, indent=1)))
    return report


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, default=None,
                        help="fusion weights (default: the bundled fusion2d.safetensors)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs (auto: a CUDA GPU when there is one; "
                             "default: %(default)s)")


def register(commands) -> None:
    """Add the fuse sub-command."""
    fuse = commands.add_parser(
        "fuse", help="fuse two co-registered images (or two folders of them)",
        description="Fuse A and B (PNG/JPEG/BMP/TIFF, single-slice or volume NIfTI/NRRD/MHA, "
                    "DICOM files or series folders) into OUT, which has A's size and, for "
                    "medical formats, A's geometry; B is resampled onto A's grid if needed. "
                    "With two folders, files of the same name are paired and OUT is a folder. "
                    "A colour PET/SPECT input gives a colour result.")
    fuse.add_argument("a", metavar="A", type=Path,
                      help="first image or volume (its grid is kept), a folder of images, "
                           "or a DICOM series folder")
    fuse.add_argument("b", metavar="B", type=Path, help="second image, or a folder")
    fuse.add_argument("-o", "--output", metavar="OUT", type=Path, required=True,
                      help="output file (.png, .jpg, .nii.gz, .nrrd, .mha, ...) or folder")
    add_model_options(fuse)
    fuse.add_argument("--model", choices=("auto", "2d", "3d"), default="auto",
                      help="for volumes: 3d (tri-plane network), 2d (2D network slice by "
                           "slice: for thick slices, slower on a CPU) or auto (3d where "
                           "bundled); 2D images always use 2d")
    fuse.add_argument("--emphasis", metavar="E", default=None,
                      help="from 0 (faithful to the sources: contrast, mutual information) to 1 "
                           "(sharper: entropy, edges); default: the value with the best "
                           "validation rank (docs/results.md); 2D network only")
    fuse.add_argument("--quality", default="fast", metavar="fast|best",
                      help="fast: the network alone; best: each 2D fused image then refined "
                           "on the fusion metrics (about 1 s more a 256x256 pair on two CPU "
                           "cores, docs/quality.md); default: %(default)s")
    fuse.add_argument("--refine-steps", metavar="N", default=None,
                      help="advanced, --quality best: refinement steps (default: the tuned "
                           "value, docs/quality.md); more steps take longer")
    fuse.add_argument("--classify", action="store_true",
                      help="also classify each fused result (tumour class probabilities), "
                           "write its heatmap beside it and a JSON report")
    fuse.add_argument("--classifier", type=Path, default=None,
                      help="classifier weights for --classify (default: the bundled one)")
    fuse.add_argument("--report", type=Path, default=None,
                      help="JSON report of --classify (default: OUT's name + _report.json, "
                           "or OUT/report.json for a folder)")
    fuse.set_defaults(func=_fuse)
