"""Fusion commands: fuse, evaluate, demo, train-fusion."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

DEFAULT_DATA = Path("../shared/data")


def _train_fusion(args: argparse.Namespace) -> int:
    import torch

    from .network import FusionConfig
    from .train_fusion import TrainSettings, train

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dim != 2:
        raise ValueError("--dim 3 training is not available yet")
    settings = TrainSettings(
        data_root=Path(args.data), output=Path(args.output), workdir=Path(args.workdir),
        epochs=args.epochs, crop=args.crop, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, command="clinicalfmamba " + shlex.join(sys.argv[1:]))
    train(settings, FusionConfig(spatial_dims=args.dim))
    return 0


def register(commands) -> None:
    """Add the fusion sub-commands."""
    p = commands.add_parser("train-fusion", help="train the fusion network (unsupervised)")
    p.add_argument("--data", default=str(DEFAULT_DATA / "harvard"),
                   help="Harvard pairs folder (default: %(default)s)")
    p.add_argument("--dim", type=int, choices=(2, 3), default=2)
    p.add_argument("--output", default="Resources/weights/fusion2d.safetensors")
    p.add_argument("--workdir", default="runs/fusion2d",
                   help="checkpoints for resuming (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.set_defaults(func=_train_fusion)
