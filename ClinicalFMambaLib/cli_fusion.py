"""Fusion commands: fuse, evaluate, demo, train-fusion."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
from pathlib import Path
from statistics import fmean

DEFAULT_DATA = Path("../shared/data")
TRAIN_DEFAULTS = {
    2: {"data": DEFAULT_DATA / "harvard", "crop": 96, "batch_size": 4},
    3: {"data": DEFAULT_DATA / "brain3d", "crop": 64, "batch_size": 2},
}


def _record_emphasis(args: argparse.Namespace, model) -> None:
    """Keep the emphasis the network fuses with (None: a network without one) for reports."""
    from .fusion import emphasis_of

    args.emphasis_used = emphasis_of(model)


def _model_loader(args: argparse.Namespace):
    from .fusion import check_model_dims, load_fusion_model, set_emphasis

    def load():
        model = set_emphasis(check_model_dims(
            load_fusion_model(args.weights, dims=2, device=args.device), 2, args.weights),
            getattr(args, "emphasis", None))
        _record_emphasis(args, model)
        return model

    return load


def _report_unmatched(batch) -> None:
    for label, names in (("A", batch.only_a), ("B", batch.only_b)):
        if names:
            print(f"skipped {len(names)} file(s) only in folder {label}: {', '.join(names)}",
                  file=sys.stderr)


def _fuse_volumes(args: argparse.Namespace) -> Path:
    from .volume_files import fuse_volume_files, progress_bar

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
    from .errors import InputError
    from .volume_files import is_volume, split_series

    for path in (a, b):
        if not split_series(path)[0].exists():
            raise FileNotFoundError(f"input not found: {path}")
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
    from .errors import OutputError, PartialRunError
    from .fuse_files import check_outputs, fuse_batch, match_inputs
    from .image_io import check_output_location, is_readable

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
    _report_unmatched(batch)
    failed: list[tuple[Path, str]] = []
    written = fuse_batch(batch, _model_loader(args), failed=failed if folders else None)
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
    from .classify import load_classifier
    from .image_io import check_output_location, refuse_overwriting_inputs

    from .fusion import parse_emphasis

    if (args.report or args.classifier) and not args.classify:
        raise ValueError("--report and --classifier apply to --classify only")
    if args.emphasis is not None:  # checked before any file is read
        args.emphasis = parse_emphasis(args.emphasis)
    args.emphasis_used = args.emphasis
    volumes = _check_kinds(args.a, args.b)
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
    from .cli_classifier import classification_record, sibling_name, verdict_line
    from .image_io import write_atomically

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
               "classifier_weights": str(args.classifier or "bundled"),
               "classes": classifier.classes, "results": results}
    write_atomically(report, lambda target: target.write_text(json.dumps(content, indent=1)))
    return report


def _json_value(value: float) -> float | None:
    return value if math.isfinite(value) else None  # PSNR of identical images is inf


def _table(rows: dict[str, dict[str, float]], first: str) -> str:
    """Fixed-width text table: one row per key of ``rows``, one column per metric."""
    keys = list(next(iter(rows.values())))
    width = max(len(first), *map(len, rows))
    lines = [f"{first:<{width}} " + " ".join(f"{k:>10}" for k in keys)]
    lines += [f"{name:<{width}} " + " ".join(f"{v[k]:10.4f}" for k in keys)
              for name, v in rows.items()]
    return "\n".join(lines)


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: fmean(row[key] for row in rows) for key in rows[0]}


def _evaluate(args: argparse.Namespace) -> int:
    from .fuse_files import MODEL_NAME, evaluate_batch, match_inputs

    batch = match_inputs(args.a, args.b, args.fused)
    _report_unmatched(batch)
    results = evaluate_batch(batch)
    if args.json:
        for path, methods in results:
            finite = {method: {k: _json_value(v) for k, v in metrics.items()}
                      for method, metrics in methods.items()}
            print(json.dumps({"fused": str(path), **finite.pop(MODEL_NAME), "baselines": finite}))
        return 0
    rows = {path.name: methods[MODEL_NAME] for path, methods in results}
    if len(rows) > 1:
        rows["average"] = _mean_rows(list(rows.values()))  # "mean" names a baseline below
    print(_table(rows, "fused"))
    means = {method: _mean_rows([methods[method] for _, methods in results])
             for method in results[0][1]}
    print(f"\naverage over {len(results)} pair(s): the fused images and the classical "
          f"baselines on the same pairs (higher is better)\n{_table(means, 'method')}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .fuse_files import run_demo
    from .image_io import check_output_location, write_atomically
    from .metrics import METRIC_NAMES
    from .volume_files import run_volume_demo
    from .volume_fusion import load_volume_model

    check_output_location(args.output, folder=True)
    results = run_demo(_model_loader(args)(), args.output)
    for name, methods in results.items():
        ten = {method: {k: metrics[k] for k in METRIC_NAMES} for method, metrics in methods.items()}
        print(f"\n{name} (8-bit protocol, higher is better)\n{_table(ten, 'method')}")
    model = load_volume_model("auto", args.device)
    volume = run_volume_demo(model, args.output)
    print(f"\nvolume T2 + FLAIR, {model.cfg.spatial_dims}D model (whole volume, higher is "
          f"better)\n{_table(volume, 'method')}")
    tables = {**results, f"volume_{model.cfg.spatial_dims}d": volume}
    metrics = {name: {method: {k: _json_value(v) for k, v in values.items()}
                      for method, values in methods.items()} for name, methods in tables.items()}
    write_atomically(args.output / "metrics.json",
                     lambda target: target.write_text(json.dumps(metrics, indent=1)))
    print(f"\nwrote fused images, side-by-side views, the fused volume and its axial/coronal/"
          f"sagittal views, and these metrics (metrics.json) to {args.output}")
    return 0


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, default=None,
                        help="fusion weights (default: the bundled fusion2d.safetensors)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs (auto: a CUDA GPU when there is one; "
                             "default: %(default)s)")


def parse_metric_weight(text: str) -> tuple[str, float]:
    """``NAME=W`` of --metric-weight, checked against the objective's metrics."""
    from .metric_objective import OBJECTIVE_METRICS

    name, _, weight = text.partition("=")
    if name not in OBJECTIVE_METRICS:
        raise argparse.ArgumentTypeError(
            f"unknown metric {name!r}; the objective has {', '.join(OBJECTIVE_METRICS)}")
    try:
        value = float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=W with a number W") from None
    if not value >= 0:  # a negative weight would reward losing to the baselines
        raise argparse.ArgumentTypeError(f"{text!r}: the weight must be >= 0")
    return name, value


def _train_fusion(args: argparse.Namespace) -> int:
    import torch

    from .network import DEFAULT_CONFIGS
    from .train_fusion import TrainSettings, train

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.axial_only_scan and args.dim != 3:
        raise ValueError("--axial-only-scan applies to --dim 3 only")
    if args.pixel_mlp < 0:
        raise ValueError(f"--pixel-mlp must be 0 or a positive width, got {args.pixel_mlp}")
    if args.emphasis_conditioned and (args.dim != 2 or args.objective != "metrics"):
        raise ValueError("--emphasis-conditioned applies to --dim 2 with --objective metrics")
    if args.stem_stride is not None and args.stem_stride not in (2, 4):
        raise ValueError(f"--stem-stride must be 2 or 4, got {args.stem_stride}")
    if args.objective != "metrics" and (args.deficit_weight != 1 or args.metric_weight):
        raise ValueError("--deficit-weight and --metric-weight apply to --objective metrics only")
    if args.pair_type and args.dim != 2:
        raise ValueError("--pair-type applies to --dim 2 only")
    from .harvard_data import PAIR_TYPES

    unknown = sorted(set(args.pair_type) - set(PAIR_TYPES))
    if unknown:
        raise ValueError(f"unknown --pair-type {', '.join(unknown)}: the pair types are "
                         f"{', '.join(PAIR_TYPES)}")
    defaults = TRAIN_DEFAULTS[args.dim]
    settings = TrainSettings(
        data_root=Path(args.data or defaults["data"]),
        output=Path(args.output or f"Resources/weights/fusion{args.dim}d.safetensors"),
        workdir=Path(args.workdir or f"runs/fusion{args.dim}d"),
        epochs=args.epochs, crop=args.crop or defaults["crop"],
        batch_size=args.batch_size or defaults["batch_size"], lr=args.lr, seed=args.seed,
        target_weight=args.target_weight, target_cache=args.target_cache,
        targets=args.targets, target_steps=args.target_steps,
        objective=args.objective, deficit_weight=args.deficit_weight,
        metric_weights=dict(args.metric_weight) or None,
        init_weights=args.init_weights, pair_types=tuple(args.pair_type),
        command="clinicalfmamba " + shlex.join(args.argv))
    config = DEFAULT_CONFIGS[args.dim]
    if args.axial_only_scan:
        config = dataclasses.replace(config, axial_only_scan=True)
    if args.pixel_mlp:
        config = dataclasses.replace(config, pixel_mlp=args.pixel_mlp)
    if args.stem_stride:
        config = dataclasses.replace(config, stem_stride=args.stem_stride)
    if args.emphasis_conditioned:
        config = dataclasses.replace(config, emphasis=True)
    if args.init_weights and args.dim == 2 and args.objective == "metrics":
        config = _keep_start(config, args)
    train(settings, config)
    return 0


def _keep_start(config: "FusionConfig", args: argparse.Namespace) -> "FusionConfig":
    """Fine-tuning on the metric objective keeps the start's stem stride (unless
    --stem-stride is given), its emphasis conditioning and its detail layer, so the bundled 2D
    weights (stride 4, conditioned, detail gain 1) fine-tune as they are; a start of another
    configuration is refused by train_fusion._load_start."""
    from .network import FusionConfig
    from .weights import load_weights

    start = FusionConfig.from_dict(load_weights(args.init_weights)[1])
    if start.spatial_dims != 2:
        return config
    if not args.stem_stride:
        config = dataclasses.replace(config, stem_stride=start.stem_stride)
    return dataclasses.replace(config, emphasis=config.emphasis or start.emphasis,
                               detail_gain=start.detail_gain)


def register(commands) -> None:
    """Add the fusion sub-commands."""
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
    _add_model_options(fuse)
    fuse.add_argument("--model", choices=("auto", "2d", "3d"), default="auto",
                      help="for volumes: 3d (tri-plane network), 2d (2D network slice by "
                           "slice: for thick slices, slower on a CPU) or auto (3d where "
                           "bundled); 2D images always use 2d")
    fuse.add_argument("--emphasis", metavar="E", default=None,
                      help="from 0 (faithful to the sources: contrast, mutual information) to 1 "
                           "(sharper: entropy, edges); default: the value with the best "
                           "validation rank (docs/results.md); 2D network only")
    fuse.add_argument("--classify", action="store_true",
                      help="also classify each fused result (tumour class probabilities), "
                           "write its heatmap beside it and a JSON report")
    fuse.add_argument("--classifier", type=Path, default=None,
                      help="classifier weights for --classify (default: the bundled one)")
    fuse.add_argument("--report", type=Path, default=None,
                      help="JSON report of --classify (default: OUT's name + _report.json, "
                           "or OUT/report.json for a folder)")
    fuse.set_defaults(func=_fuse)

    evaluate = commands.add_parser(
        "evaluate", help="fusion quality metrics of fused images",
        description="The ten 8-bit-protocol metrics (EN SD SF AG MI SCD VIF Qabf SSIM PSNR) "
                    "and the paper's SSIM/PSNR (paper_*) of FUSED against A and B; files, or "
                    "folders matched by file name. A colour source and a colour fused image "
                    "are measured by their luma (Y of YCbCr).")
    evaluate.add_argument("a", metavar="A", type=Path, help="first source image or folder")
    evaluate.add_argument("b", metavar="B", type=Path, help="second source image or folder")
    evaluate.add_argument("fused", metavar="FUSED", type=Path, help="fused image or folder")
    evaluate.add_argument("--json", action="store_true",
                          help="one JSON record per image (non-finite values as null)")
    evaluate.set_defaults(func=_evaluate)

    demo = commands.add_parser(
        "demo", help="fuse the bundled sample pairs and compare with classical baselines",
        description="Fuse the bundled MRI-CT and MRI-SPECT pairs (Resources/sample), write "
                    "each fused image and an A | B | fused PNG, and print the metrics of the "
                    "network and of the mean, max and Laplacian-pyramid baselines.")
    demo.add_argument("-o", "--output", metavar="OUTDIR", type=Path, default=Path("out/demo"),
                      help="output folder (default: %(default)s)")
    _add_model_options(demo)
    demo.set_defaults(func=_demo)

    p = commands.add_parser("train-fusion", help="train the fusion network (unsupervised)")
    p.add_argument("--dim", type=int, choices=(2, 3), default=2,
                   help="2: Harvard image pairs; 3: brain3d volumes (random 3D patches) "
                        "(default: %(default)s)")
    p.add_argument("--data", help="data folder (default: ../shared/data/harvard or brain3d)")
    p.add_argument("--output", help="weights (default: Resources/weights/fusion{2,3}d.safetensors)")
    p.add_argument("--workdir", help="checkpoints for resuming (default: runs/fusion{2,3}d)")
    p.add_argument("--epochs", type=int, default=10,
                   help="passes over the training pairs (default: %(default)s)")
    p.add_argument("--crop", type=int, help="crop / patch edge (default: 96 in 2D, 64 in 3D)")
    p.add_argument("--batch-size", type=int,
                   help="pairs or patches per step (default: 4 in 2D, 2 in 3D)")
    p.add_argument("--lr", type=float, default=5e-4,
                   help="peak Adam learning rate of the one-cycle schedule "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of initialisation, crops and order (default: %(default)s)")
    p.add_argument("--target-weight", type=float, default=10.0,
                   help="weight of the L1 pull towards each pair's target (--targets; "
                        "ClinicalFMambaLib/fusion_targets.py; 0 trains on the loss alone; "
                        "default: %(default)s)")
    p.add_argument("--target-cache", type=Path, default=None,
                   help="folder of the cached targets (default: WORKDIR/targets); runs on "
                        "the same data and targets can share it")
    p.add_argument("--targets", choices=("loss-optima", "metric-optima"), default="loss-optima",
                   help="2D: what the L1 pull aims at: each pair's optimum of the paper's loss, or "
                        "of the metrics objective reached from the --init-weights model's output "
                        "(default: %(default)s)")
    p.add_argument("--target-steps", type=int, default=120,
                   help="metric-optima: Adam steps per image (about 0.25 s each for 256x256; "
                        "default: %(default)s)")
    p.add_argument("--objective", choices=("paper", "metrics"), default="paper",
                   help="paper: the paper's intensity/gradient/SSIM loss; metrics: reward the "
                        "8-bit fusion metrics over the best classical baseline of each image "
                        "(ClinicalFMambaLib/metric_objective.py; default: %(default)s)")
    p.add_argument("--deficit-weight", type=float, default=1.0,
                   help="metrics objective: how many times a metric's shortfall against the "
                        "best baseline counts compared with its gain (1: symmetric; default: "
                        "%(default)s)")
    p.add_argument("--metric-weight", type=parse_metric_weight, action="append", default=[],
                   metavar="NAME=W",
                   help="metrics objective: weight of one metric's term (default 1; 0 leaves it "
                        "out); repeat for several metrics")
    p.add_argument("--init-weights", type=Path, default=None,
                   help="start from these weights (same configuration, or one without the "
                        "--pixel-mlp stage, --emphasis-conditioned stage or --stem-stride) "
                        "instead of at random; 2D metrics objective: their stem stride and "
                        "emphasis conditioning are kept")
    p.add_argument("--pair-type", action="append", default=[], metavar="TYPE",
                   help="2D: train and validate on this pair type only (CT-MRI, PET-MRI or "
                        "SPECT-MRI; repeatable; default: all)")
    p.add_argument("--stem-stride", type=int, default=None, metavar="S",
                   help="stride of the first convolution: 2 (the default configuration) or 4 "
                        "(the network works at a quarter of the resolution; faster; the "
                        "bundled 2D weights'); default: that of --init-weights (metrics "
                        "objective), else 2")
    p.add_argument("--emphasis-conditioned", action="store_true",
                   help="2D metrics objective: condition the network on an emphasis value in "
                        "[0, 1], drawn per batch, that weights the detail metrics' terms "
                        "(fuse --emphasis chooses it at run time)")
    p.add_argument("--pixel-mlp", type=int, default=0, metavar="WIDTH",
                   help="add a full-resolution per-pixel MLP of this hidden width to the "
                        "network (0: none; network.FusionConfig.pixel_mlp)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--axial-only-scan", action="store_true",
                   help="3D ablation: scan the axial raster only instead of all three planes")
    p.set_defaults(func=_train_fusion)
