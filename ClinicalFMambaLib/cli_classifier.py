"""Classifier commands (classify, train-classifier)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
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

    train = commands.add_parser(
        "train-classifier", help="train a classifier on a folder-per-class dataset or graded cases",
        description="DATA_DIR holds one sub-folder of 2D images per class, or (with --grades) "
                    "one sub-folder per case with a volume named --volume-name; the CSV maps "
                    "case id to label (e.g. BraTS name_mapping.csv). Checkpoints every epoch "
                    "in --workdir; rerunning the same command resumes.")
    train.add_argument("data_dir", type=Path,
                       help="one sub-folder per class, or per case with --grades")
    train.add_argument("--output", type=Path, default=Path("runs/classifier/classifier.safetensors"),
                       help="safetensors weights to write (SHA-256 goes to MANIFEST.json beside "
                            "it; default: %(default)s)")
    train.add_argument("--grades", type=Path, default=None, help="CSV: case id -> label")
    train.add_argument("--volume-name", default="fused.nii.gz",
                       help="volume file inside each case folder (with --grades; default: "
                            "%(default)s)")
    train.add_argument("--id-column", default=None, help="CSV case-id column (default: detected)")
    train.add_argument("--label-column", default=None,
                       help="CSV label column (default: Grade/label/class/diagnosis)")
    train.add_argument("--slice-step", type=int, default=1,
                       help="use every N-th brain slice of each case (with --grades; default: "
                            "%(default)s)")
    train.add_argument("--test-dir", type=Path, default=None,
                       help="folder-per-class test set evaluated once with the final weights")
    train.add_argument("--size", type=int, default=128,
                       help="input side in pixels (default: %(default)s)")
    train.add_argument("--epochs", type=int, default=30,
                       help="passes over the training set (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=64,
                       help="images per step (default: %(default)s)")
    train.add_argument("--lr", type=float, default=3e-3,
                       help="peak AdamW learning rate of the one-cycle schedule (default: "
                            "%(default)s)")
    train.add_argument("--weight-decay", type=float, default=0.05,
                       help="AdamW weight decay (default: %(default)s)")
    train.add_argument("--val-fraction", type=float, default=0.1,
                       help="stratified validation share (whole cases with --grades; default: "
                            "%(default)s)")
    train.add_argument("--seed", type=int, default=0,
                       help="random seed of split, initialisation and order (default: %(default)s)")
    train.add_argument("--init-seed", type=int, default=None,
                       help="seed of initialisation, order and augmentation only, the split "
                            "staying --seed's: another member for an ensemble (default: --seed)")
    train.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads (default: %(default)s)")
    train.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                       help="bf16 autocast: much faster on CPUs with AMX/AVX512-BF16 (default: "
                            "%(default)s)")
    train.add_argument("--workdir", type=Path, default=None,
                       help="checkpoints (default: /tmp/clinicalfmamba-classifier/<output name>)")
    train.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    train.set_defaults(func=run_train)


# --------------------------------------------------------------------------- classify

def _expand_inputs(inputs: list[Path]) -> list[Path]:
    from .classifier_images import is_image_file, is_volume_file

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


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem+suffix``, or ``stem_2``, ``stem_3``, ... when that file exists: a heatmap
    never overwrites a file."""
    target, number = folder / f"{stem}{suffix}", 2
    while target.exists():
        target, number = folder / f"{stem}_{number}{suffix}", number + 1
    return target


def heatmap_stems(files: list[Path]) -> dict[Path, str]:
    """Heatmap name stem per input: its file name without extension, prefixed by its
    folder's name where several inputs share a file name (the case/flair.nii.gz layout)."""
    stems = {path: sibling_name(path, "") for path in files}
    shared = Counter(stems.values())
    return {path: f"{path.parent.name}_{stem}" if shared[stem] > 1 else stem
            for path, stem in stems.items()}


def classification_record(model, path: Path, heatmap_dir: Path | None = None,
                          batch_size: int = 32, slices: bool = False,
                          heatmap_stem: str | None = None) -> dict:
    """Prediction and class probabilities of one image or volume file, as a JSON-ready dict;
    with ``heatmap_dir``, its Grad-CAM heatmap is written there (PNG or NIfTI) and named:
    ``heatmap_stem`` (default: the input's name) + _heatmap, never over an existing file."""
    stem = heatmap_stem or sibling_name(path, "")
    from . import classify as api
    from .classifier_images import is_volume_file, read_image
    from .classifier_volumes import read_volume

    if is_volume_file(path):
        volume, direction, spacing = read_volume(path)
        result = api.classify_volume(model, volume, batch_size=batch_size, direction=direction,
                                     spacing=spacing)
        record = {"input": str(path), "kind": "volume", **api.result_record(result, slices)}
        if heatmap_dir and result.heatmap is not None:
            record["heatmap"] = str(api.save_heatmap_volume(
                result.heatmap, path, free_path(heatmap_dir, stem, "_heatmap.nii.gz")))
        return record
    image = read_image(path, grey=False)
    result = api.classify_image(model, image)
    record = {"input": str(path), "kind": "image", **api.result_record(result)}
    if heatmap_dir and result.in_scope:
        target = free_path(heatmap_dir, stem, "_heatmap.png")
        api.save_heatmap_png(image, api.gradcam(model, image), target)
        record["heatmap"] = str(target)
    return record


def verdict_line(record: dict) -> str:
    if not record["in_scope"]:
        return f"{record['input']}: not classified, {record['reason']}"
    shown = "  ".join(f"{k} {v:.3f}" for k, v in record["probabilities"].items())
    tumour = record.get("tumour_probability")
    if tumour is None:
        return f"{record['input']}: {record['prediction']}  ({shown})"
    return (f"{record['input']}: {volume_verdict(record)}  "
            f"(tumour probability {tumour:.2f}; {shown})")


def volume_verdict(record: dict) -> str:
    """A volume's verdict in words. The tumour type comes from the 2D classifier, trained on
    JPEGs; on volumes it is unvalidated (docs/classifier.md: it named both brain3d gliomas
    meningioma), so it is given as a suggestion, not as the verdict."""
    prediction = record["prediction"]
    if prediction in ("uncertain", "notumor"):
        return prediction
    return f"tumour, {type_suggestion(prediction)}"


def type_suggestion(prediction: str) -> str:
    """How a volume's tumour type is worded wherever it is shown (CLI, Slicer module)."""
    return f"type suggestion {prediction} (not validated on volumes)"


def run_classify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import classify as api
    from .image_io import MEDICAL_SUFFIXES, check_complete_file, check_output_location, suffix_of

    files = _expand_inputs(args.inputs)
    for path in files:  # a truncated volume would be classified with zeros in place of slices
        if suffix_of(path) in MEDICAL_SUFFIXES:
            check_complete_file(path)
    if args.heatmap_dir:
        check_output_location(args.heatmap_dir, folder=True)
    model = api.load_classifier(args.model)
    if args.heatmap_dir:
        args.heatmap_dir.mkdir(parents=True, exist_ok=True)
    stems = heatmap_stems(files)
    for path in tqdm(files, desc="classify", unit="file", disable=len(files) == 1):
        record = classification_record(model, path, args.heatmap_dir, args.batch_size,
                                       args.slices, stems[path])
        tqdm.write(json.dumps(record) if args.json else verdict_line(record), file=sys.stdout)
    return 0


def sibling_name(path: Path, suffix: str) -> str:
    """File name of ``path`` with its extension (.nii.gz counts as one) replaced by ``suffix``."""
    name = path.name
    for ending in (".nii.gz", *(path.suffixes[-1:] or [""])):
        if name.lower().endswith(ending.lower()):
            return name[: len(name) - len(ending)] + suffix
    return name + suffix


# --------------------------------------------------------------------------- train

def _command_line(args: argparse.Namespace) -> str:
    """The command as typed (``cli.main`` keeps its argv), else every option spelled out."""
    if getattr(args, "argv", None):
        return shlex.join(["clinicalfmamba", *args.argv])
    words = ["clinicalfmamba", "train-classifier", str(args.data_dir)]
    for key, value in sorted(vars(args).items()):
        if key in ("func", "command", "data_dir", "workdir") or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words += [flag] if value else []
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def run_train(args: argparse.Namespace) -> int:
    from .classifier_datasets import (list_class_folders, load_graded_cases, load_images,
                                      stratified_split)
    from .classifier_train import TrainOptions, classification_metrics, predict, train
    from .weights import save_weights

    groups = None
    if args.grades is not None:
        images, labels, groups, classes = load_graded_cases(
            args.data_dir, args.grades, args.volume_name, args.size, args.id_column,
            args.label_column, args.slice_step)
        split = (f"validation: {args.val_fraction:.0%} of cases per label (seed {args.seed}), "
                 f"slices of one case never straddle the split")
    else:
        paths, labels, classes = list_class_folders(args.data_dir)
        images = load_images(paths, args.size)
        split = (f"validation: stratified {args.val_fraction:.0%} of {args.data_dir} "
                 f"(seed {args.seed}); image level, the data set has no patient ids")
    train_idx, val_idx = stratified_split(labels, args.val_fraction, args.seed, groups)
    print(f"{len(train_idx)} training and {len(val_idx)} validation samples, classes {classes}",
          flush=True)
    options = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           weight_decay=args.weight_decay,
                           seed=args.seed if args.init_seed is None else args.init_seed,
                           threads=args.threads,
                           precision=args.precision)
    workdir = args.workdir or Path("/tmp/clinicalfmamba-classifier") / args.output.stem
    result = train(images, labels, classes, train_idx, val_idx, options, workdir,
                   resume=not args.no_resume)
    config = result["config"]
    norm = config["normalisation"]
    extra = {"command": _command_line(args), "split": split, "validation": result["best"]}
    if len(val_idx):
        val_probs = predict(result["model"], images[val_idx], norm["mean"], norm["std"])
        extra["validation"]["metrics"] = classification_metrics(labels[val_idx], val_probs,
                                                                classes)
    if args.test_dir is not None:
        test_paths, test_labels, test_classes = list_class_folders(args.test_dir)
        if test_classes != classes:
            raise ValueError(f"test classes {test_classes} differ from training classes {classes}")
        test_probs = predict(result["model"], load_images(test_paths, args.size), norm["mean"],
                             norm["std"])
        extra["test"] = classification_metrics(test_labels, test_probs, classes)
        extra["test"]["data"] = str(args.test_dir)
    digest = save_weights(result["model"].state_dict(), args.output, config, extra)
    print(json.dumps({"output": str(args.output), "sha256": digest, **extra}, indent=1))
    return 0
