"""Fine-tune the 3D fusion model's full-resolution refinement so that it stops adding grain.

    python scripts/build/train_fusion3d_texture.py --init-weights Resources/weights/fusion3d.safetensors
        [--noise-weight 1] [--metric-weight NAME=W ...] [--epochs 8] [--patches 96]
        [--crop 64] [--val-crop 96] [--lr 1e-3] [--threads 1]
        [--workdir runs/fusion3d-texture] [--output runs/fusion3d-texture/fusion3d.safetensors]

The metric objective (objective.metric_objective.MetricObjective) rewards SF and AG, which the
full-resolution refinement (FusionNet.refine, 3 -> 8 -> 1 channels) can buy by sharpening
everything, the sources' noise in flat regions included: a mottled texture (evaluation/grain.py
measures it). Only the refinement is trained here, on the objective plus ``--noise-weight``
times the flat-region grain beyond max fusion's (evaluation.grain.noise_excess); every other weight
keeps its initial value, so the stages before the refinement run once per patch and their
output is cached. ``--patches`` random patches of the training cases
(brain3d_data.PatchDataset3D) are drawn once and visited in a new order each epoch; each
epoch is validated on the held-back case's centre crops (--val-crop voxels a side) of its six
contrast pairs, and the epoch with the lowest validation loss is written to --output with its
record in that folder's MANIFEST.json (none when no epoch improves on the initial weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ClinicalFMambaLib.cli.train_commands import parse_metric_weight
from ClinicalFMambaLib.evaluation.grain import flat_mask, flat_noise, noise_excess
from ClinicalFMambaLib.fusion.inference import load_fusion_model
from ClinicalFMambaLib.io.weights import provenance, save_weights
from ClinicalFMambaLib.networks.fusion_net import FusionNet, parameter_count
from ClinicalFMambaLib.objective.metric_objective import MetricObjective
from ClinicalFMambaLib.training.brain3d_data import (PatchDataset3D, find_cases, split_cases,
                                                     validation_crops)


class FrozenStages:
    """Everything before the refinement run once per patch (its weights stay as loaded); the
    refinement's input cached, so that a training step costs the refinement and the loss."""

    def __init__(self, model: FusionNet):
        self.model = model

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> Batch:
        if any(s % self.model.multiple for s in a.shape[2:]):
            raise ValueError(f"patch sides must be multiples of {self.model.multiple}")
        inputs = []
        hook = self.model.refine[0].register_forward_hook(
            lambda _, args, __: inputs.append(args[0]))
        try:
            expected = self.model(a, b)
        finally:
            hook.remove()
        batch = Batch(a, b, inputs[0],
                      torch.from_numpy(np.stack([flat_mask(x[0], y[0]) for x, y in
                                                 zip(a.numpy(), b.numpy())]))[:, None])
        if not torch.allclose(fused_output(self.model, batch), expected, atol=1e-5):
            raise RuntimeError("the cached stages do not reproduce FusionNet.forward")
        return batch


@dataclasses.dataclass
class Batch:
    a: torch.Tensor
    b: torch.Tensor
    refine_input: torch.Tensor  # (correction, A, B) as FusionNet.forward hands the refinement
    flat: torch.Tensor  # evaluation.grain.flat_mask of each pair


def fused_output(model: FusionNet, batch: Batch) -> torch.Tensor:
    """The end of FusionNet.forward (for a network without pixel MLP, unpadded input)."""
    correction = batch.refine_input[:, :1] + model.refine(batch.refine_input)
    return model.output(correction, batch.a, batch.b)


def loss_terms(model, objective, batch: Batch, noise_weight: float):
    """(loss, metric objective, grain excess) of a batch."""
    fused = fused_output(model, batch)
    metric_loss, _ = objective(fused, batch.a, batch.b)
    excess = noise_excess(fused, batch.a, batch.b, batch.flat)
    return metric_loss + noise_weight * excess, metric_loss, excess


@torch.no_grad()
def validate(model, objective, batches: list[Batch], noise_weight: float) -> dict:
    rows = []
    for batch in batches:
        loss, metric_loss, excess = loss_terms(model, objective, batch, noise_weight)
        fused = fused_output(model, batch)[0, 0].numpy()
        a, b, mask = batch.a[0, 0].numpy(), batch.b[0, 0].numpy(), batch.flat[0, 0].numpy()
        rows.append({"loss": loss.item(), "objective": metric_loss.item(),
                     "noise_excess": excess.item(),
                     "flat_noise_ratio": flat_noise(fused, mask) / flat_noise(np.maximum(a, b),
                                                                               mask)})
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/brain3d")
    parser.add_argument("--init-weights", type=Path, required=True)
    parser.add_argument("--noise-weight", type=float, default=1.0)
    parser.add_argument("--metric-weight", type=parse_metric_weight, action="append", default=[],
                        metavar="NAME=W", help="weight of one metric's term of the objective "
                                               "(default 1); repeat for several")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patches", type=int, default=96, help="training patches (drawn once)")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--val-crop", type=int, default=96,
                        help="side of the held-back case's centre crops for validation")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("runs/fusion3d-texture"))
    parser.add_argument("--output", type=Path,
                        default=Path("runs/fusion3d-texture/fusion3d.safetensors"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    command = "python scripts/build/train_fusion3d_texture.py " + shlex.join(sys.argv[1:])
    train_cases, val_cases = split_cases(find_cases(args.data))
    model = load_fusion_model(args.init_weights, dims=3, device="cpu")
    model.requires_grad_(False)
    model.refine.requires_grad_(True)
    frozen = FrozenStages(model)
    dataset = PatchDataset3D(train_cases, args.crop, args.patches, args.seed)
    patches = [frozen(pair[0:1], pair[1:2]) for pair in
               (dataset[i] for i in tqdm(range(len(dataset)), desc="patches"))]
    crops = [frozen(*(torch.from_numpy(v)[None, None] for v in (x, y)))
             for _, x, y in validation_crops(val_cases[0], args.val_crop)]
    optimizer = torch.optim.Adam(model.refine.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * args.patches)
    objective = MetricObjective(metric_weights=dict(args.metric_weight) or None)
    args.workdir.mkdir(parents=True, exist_ok=True)
    history, best = [], validate(model, objective, crops, args.noise_weight)
    print(json.dumps({"epoch": 0, "validation": best}), flush=True)
    best_loss = best["loss"]
    for epoch in range(args.epochs):
        started, running = time.time(), []
        for index in np.random.default_rng((args.seed, epoch)).permutation(args.patches):
            loss, _, _ = loss_terms(model, objective, patches[index], args.noise_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running.append(loss.item())
        val = validate(model, objective, crops, args.noise_weight)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(running)),
                  "seconds": round(time.time() - started), "validation": val}
        history.append(record)
        print(json.dumps(record), flush=True)
        if val["loss"] < best_loss:
            best_loss = val["loss"]
            save_weights(model.state_dict(), args.output, model.cfg.to_dict(), extra={
                "command": command, "epoch": epoch + 1, "epochs": args.epochs,
                "parameters": parameter_count(model), "trained": ["refine"],
                "objective": "metrics + noise", "noise_weight": args.noise_weight,
                "metric_weights": dict(args.metric_weight) or None,
                "validation": {"brain3d": val, "loss": val["loss"]},
                "init_weights": provenance(args.init_weights),
                "validation_cases": f"{val_cases[0].name}, all contrast pairs, centre "
                                    f"{args.val_crop}^3 crop"})
    (args.workdir / "history.json").write_text(json.dumps(history, indent=1) + "\n")


if __name__ == "__main__":
    main()
