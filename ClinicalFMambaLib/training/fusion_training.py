"""Unsupervised training of the fusion network: 2D on the Harvard pairs, 3D on brain3d.

Seeded, resumable (a checkpoint in ``workdir`` after every epoch), validated every epoch on
held-back cases; the best epoch (lowest validation loss) is written as safetensors with its
SHA-256, the exact command and the validation numbers in the manifest.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..evaluation.metrics import fusion_metrics, paper_metrics
from ..fusion.inference import fuse_normalized, load_fusion_model
from ..io.weights import load_weights, provenance, save_weights, sha256_of
from ..networks.fusion_net import DEFAULT_CONFIGS, FusionConfig, FusionNet, parameter_count
from ..objective.metric_objective import MetricObjective
from .brain3d_data import PatchDataset3D, find_cases, split_cases, validation_crops
from .fusion_targets import cached_targets, claim_cache, optimise_pair, optimise_pair_metrics
from .harvard_data import CropDataset, find_pairs, load_luma_pair, split_by_case
from .losses import fusion_loss

METRIC_TARGET_LR = 0.01  # Adam step in logit space (docs/design.md: 120 steps vs 300)


@dataclass
class TrainSettings:
    data_root: Path
    output: Path
    workdir: Path
    epochs: int = 10
    crop: int = 96
    batch_size: int = 4
    lr: float = 5e-4
    seed: int = 0
    train_stride: int = 2   # 2D: every n-th training slice (neighbours are near-duplicates)
    val_stride: int = 5     # 2D: validate on every n-th held-back slice (all cases stay in)
    samples_per_epoch: int = 160  # 3D: random patches per epoch
    val_crop: int = 96      # 3D: centre crop of the held-back case for per-epoch validation
    target_weight: float = 10.0  # L1 pull towards each pair's loss optimum (0: off)
    target_cache: Path | None = None  # default: workdir/targets (shareable between runs)
    targets: str = "loss-optima"  # 2D: or "metric-optima", the objective's per-image optima
    target_steps: int = 120  # metric optima: Adam steps per image (from init_weights' output)
    objective: str = "paper"  # "paper": the paper's loss; "metrics": objective/metric_objective.py
    deficit_weight: float = 1.0  # metrics objective: weight of a shortfall vs a baseline
    metric_weights: dict[str, float] | None = None  # metrics objective: per-metric weights
    init_weights: Path | None = None  # start from these weights (fine-tuning)
    pair_types: tuple[str, ...] = ()  # 2D: train and validate on these pair types only (all)
    command: str = ""


def _target_optimiser(settings: TrainSettings, objective: Callable) -> tuple:
    """(optimise(image), progress label) for the 2D targets: the loss optimum of the pair, or
    (``targets="metric-optima"``) the objective's optimum reached from the ``init_weights``
    model's output, in a cache that records that source."""
    if settings.targets == "loss-optima":
        return lambda image: optimise_pair(image[0], image[1]), "loss optima"
    claim_cache(_target_cache(settings), {
        "start_weights": sha256_of(settings.init_weights), "steps": settings.target_steps,
        "lr": METRIC_TARGET_LR, "deficit_weight": settings.deficit_weight,
        "metric_weights": settings.metric_weights})
    start = load_fusion_model(settings.init_weights, device="cpu")

    def optimise(image: np.ndarray) -> np.ndarray:
        fused = fuse_normalized(start, image[0], image[1])
        return optimise_pair_metrics(fused, image[0], image[1], objective,
                                     settings.target_steps, METRIC_TARGET_LR)

    return optimise, "metric optima"


def _data(settings: TrainSettings, dims: int, objective: Callable):
    """(training dataset, validation list of (group, a, b), description of the split)."""
    if dims == 2:
        pairs = [p for p in find_pairs(settings.data_root)
                 if not settings.pair_types or p.pair_type in settings.pair_types]
        train_pairs, val_pairs = split_by_case(pairs)
        train_pairs = train_pairs[::settings.train_stride]
        val_pairs = val_pairs[::settings.val_stride]
        val = [(p.pair_type, *load_luma_pair(p)) for p in val_pairs]
        dataset = CropDataset(train_pairs, settings.crop, settings.seed)
        if settings.target_weight:
            targets = cached_targets(train_pairs, dataset.images, _target_cache(settings),
                                     *_target_optimiser(settings, objective))
            dataset.images = [np.concatenate([image, t[None]])
                              for image, t in zip(dataset.images, targets)]
        return (dataset, val,
                f"training.harvard_data.VALIDATION_CASES, every {settings.val_stride}th slice")
    train_cases, val_cases = split_cases(find_cases(settings.data_root))
    val = [("brain3d", a, b) for _, a, b in validation_crops(val_cases[0], settings.val_crop)]
    cache = _target_cache(settings) if settings.target_weight else None
    return (PatchDataset3D(train_cases, settings.crop, settings.samples_per_epoch, settings.seed,
                           cache),
            val, f"{val_cases[0].name}, all contrast pairs, centre {settings.val_crop}^3 crop")


def _target_cache(settings: TrainSettings) -> Path:
    return settings.target_cache or settings.workdir / "targets"


def validate(model: FusionNet, pairs: list[tuple[str, np.ndarray, np.ndarray]],
             objective: Callable = fusion_loss) -> dict:
    """Mean loss (``objective``) and quality metrics per group (8-bit field metrics in 2D, the
    paper's SSIM and PSNR in 3D) on the validation images or crops."""
    per_type = defaultdict(list)
    model.eval()
    for group, a, b in pairs:
        fused = fuse_normalized(model, a, b)
        with torch.no_grad():
            loss, _ = objective(*(torch.from_numpy(x)[None, None] for x in (fused, a, b)))
        metrics = fusion_metrics if a.ndim == 2 else paper_metrics
        per_type[group].append({"loss": loss.item(), **metrics(a, b, fused)})
    model.train()
    summary = {t: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
               for t, rows in per_type.items()}
    summary["loss"] = float(np.mean([s["loss"] for s in summary.values()]))
    return summary


def _check_targets(settings: TrainSettings, dims: int) -> None:
    if settings.targets not in ("loss-optima", "metric-optima"):
        raise ValueError(f"unknown targets {settings.targets!r}: loss-optima or metric-optima")
    if settings.targets == "metric-optima" and not (
            dims == 2 and settings.objective == "metrics" and settings.init_weights):
        raise ValueError("metric-optima targets need --dim 2, --objective metrics and "
                         "--init-weights (they are optimised from that model's outputs)")


# Configuration fields that leave the shapes of existing parameters as they are: a start may
# differ from the network to train in these (new stages start at identity, networks/fusion_net.py).
FILM_LR_FACTOR = 10
START_MAY_DIFFER = ("stem_stride", "pixel_mlp", "emphasis")
NEW_STAGES = ("pixel.", "film.")


def _load_start(model: FusionNet, path: Path) -> None:
    """Initialise ``model`` from trained weights of the same configuration up to
    ``START_MAY_DIFFER``; the stages those weights lack keep their identity initialisation."""
    state, start = load_weights(path)
    different = {k for k, v in model.cfg.to_dict().items()
                 if k not in START_MAY_DIFFER and FusionConfig.from_dict(start).to_dict()[k] != v}
    try:
        keys = None if different else model.load_state_dict(state, strict=False)
    except RuntimeError:  # a parameter of another shape
        keys = None
    if keys is None or keys.unexpected_keys or any(not k.startswith(NEW_STAGES)
                                                   for k in keys.missing_keys):
        raise ValueError(f"{path} holds a network of another configuration ({start}) than the "
                         f"one to train ({model.cfg.to_dict()})")


def train(settings: TrainSettings, config: FusionConfig = DEFAULT_CONFIGS[2]) -> dict:
    _check_targets(settings, config.spatial_dims)
    torch.manual_seed(settings.seed)
    objective = (MetricObjective(deficit_weight=settings.deficit_weight,
                                 metric_weights=settings.metric_weights)
                 if settings.objective == "metrics" else fusion_loss)
    dataset, val_pairs, split = _data(settings, config.spatial_dims, objective)
    model = FusionNet(config)
    origin = provenance(settings.init_weights) if settings.init_weights else None
    if settings.init_weights:
        _load_start(model, settings.init_weights)
    # A new emphasis conditioning starts at zero beside trained weights: it learns at
    # FILM_LR_FACTOR times the rate, or a short fine-tune leaves its two ends almost alike.
    film = [p for name, p in model.named_parameters() if name.startswith("film.")]
    rest = [p for name, p in model.named_parameters() if not name.startswith("film.")]
    groups = [{"params": rest, "lr": settings.lr}]
    if film:
        groups.append({"params": film, "lr": settings.lr * FILM_LR_FACTOR})
    optimizer = torch.optim.Adam(groups)
    steps_per_epoch = math.ceil(len(dataset) / settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, [g["lr"] for g in groups], total_steps=settings.epochs * steps_per_epoch,
        pct_start=0.05)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = settings.workdir / "checkpoint.pt"
    history, best, start_epoch = [], math.inf, 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history, best, start_epoch = json.loads(state["history"]), state["best"], state["epoch"]
        torch.set_rng_state(state["rng"])
        print(f"resumed from {checkpoint} after epoch {start_epoch}")
    print(f"{parameter_count(model):,} parameters; {len(dataset)} training samples per epoch, "
          f"{len(val_pairs)} validation pairs ({split})")

    for epoch in range(start_epoch, settings.epochs):
        dataset.epoch = epoch
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=settings.batch_size, shuffle=True, drop_last=False,
            generator=torch.Generator().manual_seed(settings.seed + epoch))
        started, running = time.time(), []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{settings.epochs}", unit="batch")
        for batch in bar:
            a, b = batch[:, 0], batch[:, 1]
            if config.emphasis:  # one emphasis value per batch, uniform in [0, 1]
                emphasis = torch.rand(()).item()
                fused = model(a, b, emphasis=emphasis)
                loss, _ = objective(fused, a, b, emphasis=emphasis)
            else:
                fused = model(a, b)
                loss, _ = objective(fused, a, b)
            if batch.shape[1] > 2:
                loss = loss + settings.target_weight * (fused - batch[:, 2]).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}")
        val = validate(model, val_pairs, functools.partial(objective, emphasis=model.emphasis)
                       if config.emphasis else objective)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(running)),
                  "seconds": round(time.time() - started), "validation": val}
        history.append(record)
        print(json.dumps(record))
        if val["loss"] < best:
            best = val["loss"]
            save_weights(model.state_dict(), settings.output, config.to_dict(), extra={
                "command": settings.command, "epoch": epoch + 1, "epochs": settings.epochs,
                "parameters": parameter_count(model), "validation": val,
                "objective": settings.objective, "deficit_weight": settings.deficit_weight,
                "metric_weights": settings.metric_weights,
                "targets": settings.targets if settings.target_weight else None,
                "init_weights": origin,
                "validation_cases": split})
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "history": json.dumps(history),
                    "best": best, "epoch": epoch + 1, "rng": torch.get_rng_state()}, checkpoint)
    return {"best_validation_loss": best, "history": history}
