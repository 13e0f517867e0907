"""The training commands (``train-fusion``, ``train-classifier``); what they run is imported
only when they run, so the other commands never load training code."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..networks.fusion_net import FusionConfig

DEFAULT_DATA = Path("../shared/data")
TRAIN_DEFAULTS = {
    2: {"data": DEFAULT_DATA / "harvard", "crop": 96, "batch_size": 4},
    3: {"data": DEFAULT_DATA / "brain3d", "crop": 64, "batch_size": 2},
}


def parse_metric_weight(text: str) -> tuple[str, float]:
    """``NAME=W`` of --metric-weight, checked against the objective's metrics."""
    from ..objective.surrogates import OBJECTIVE_METRICS

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

    from ..networks.fusion_net import DEFAULT_CONFIGS
    from ..training.fusion_training import TrainSettings, train

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
    from ..training.harvard_data import PAIR_TYPES

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
    configuration is refused by training.fusion_training._load_start."""
    from ..io.weights import load_weights
    from ..networks.fusion_net import FusionConfig

    start = FusionConfig.from_dict(load_weights(args.init_weights)[1])
    if start.spatial_dims != 2:
        return config
    if not args.stem_stride:
        config = dataclasses.replace(config, stem_stride=start.stem_stride)
    return dataclasses.replace(config, emphasis=config.emphasis or start.emphasis,
                               detail_gain=start.detail_gain)


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
    from ..io.weights import save_weights
    from ..training.classifier_datasets import (list_class_folders, load_graded_cases, load_images,
                                                stratified_split)
    from ..training.classifier_training import TrainOptions, classification_metrics, predict, train

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


def register(commands) -> None:
    """Add the training sub-commands; what they run is imported only when they run."""
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
                        "ClinicalFMambaLib/training/fusion_targets.py; 0 trains on the loss alone; "
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
                        "(ClinicalFMambaLib/objective/metric_objective.py; default: %(default)s)")
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
                        "network (0: none; networks.fusion_net.FusionConfig.pixel_mlp)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--axial-only-scan", action="store_true",
                   help="3D ablation: scan the axial raster only instead of all three planes")
    p.set_defaults(func=_train_fusion)

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
