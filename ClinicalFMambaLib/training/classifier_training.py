"""Training loop and metrics of the tumour classifier.

AdamW with a one-cycle learning rate, label smoothing, batch-level augmentation
(``classifier_augment.augment``) and an exponential moving average (EMA) of the weights, which
is what gets validated and shipped. Every epoch is checkpointed (resumable); the EMA
weights of the best validation epoch are returned at the end.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from ..clinical.images import WINDOW_PERCENTILES
from ..networks.classifier_net import DEFAULT_ARCH, build_model
from .classifier_augment import augment


@dataclass
class TrainOptions:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    ema_decay: float = 0.995
    seed: int = 0
    threads: int = 1
    precision: str = "fp32"  # "bf16": CPU autocast, several times faster where AMX exists
    arch: dict = field(default_factory=lambda: dict(DEFAULT_ARCH))


# --------------------------------------------------------------------------- metrics

def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN if one class is absent."""
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/one-vs-rest AUC, confusion matrix
    (rows: true class, columns: predicted class)."""
    labels = np.asarray(labels)
    predicted = probs.argmax(1)
    k = len(classes)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for index, name in enumerate(classes):
        tp = confusion[index, index]
        precision = tp / max(confusion[:, index].sum(), 1)
        recall = tp / max(confusion[index].sum(), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        per_class[name] = {"precision": float(precision), "recall": float(recall),
                           "f1": float(f1), "auc": roc_auc(labels == index, probs[:, index]),
                           "support": int(confusion[index].sum())}
    return {"n": int(len(labels)), "accuracy": float((predicted == labels).mean()),
            "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
            "per_class": per_class, "confusion": confusion.tolist(), "classes": list(classes)}


# --------------------------------------------------------------------------- training

def _to_input(batch_uint8: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return ((batch_uint8.float() / 255.0 - mean) / std)[:, None]


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, mean: float, std: float,
            batch_size: int = 128) -> np.ndarray:
    """Softmax probabilities of prepared uint8 images (N, S, S)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = _to_input(torch.from_numpy(images[i:i + batch_size]), mean, std)
        out.append(torch.softmax(model(x.contiguous(memory_format=torch.channels_last)), 1))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def model_config(classes: list[str], size: int, mean: float, std: float, arch: dict) -> dict:
    """Everything needed to rebuild the network and prepare its inputs."""
    return {"model": "TumourNet", "classes": list(classes), "input_size": int(size),
            "arch": dict(arch), "normalisation": {"window_percentiles": list(WINDOW_PERCENTILES),
                                                  "mean": float(mean), "std": float(std)},
            "no_tumour_class": next((c for c in classes if c.lower() in ("notumor", "notumour",
                                                                         "no_tumor", "no_tumour",
                                                                         "normal")), None)}


class WeightAverage:
    """Exponential moving average of a model's parameters and buffers. The decay ramps up
    as (1 + n) / (10 + n) so early averages are not dominated by the random init."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        self.updates = 0
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        mine = self.module.state_dict()
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                mine[name].lerp_(value, 1 - decay)
            else:
                mine[name].copy_(value)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


def training_normalisation(train_images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the training images (uint8, prepared) in [0, 1]: the
    network's input normalisation."""
    values = train_images.astype(np.float32) / 255.0
    return float(values.mean()), float(values.std()) or 1.0


def train(images: np.ndarray, labels: np.ndarray, classes: list[str], train_idx: np.ndarray,
          val_idx: np.ndarray, options: TrainOptions, workdir: str | Path,
          resume: bool = True) -> dict:
    """Train on ``images[train_idx]`` (uint8, prepared), select on ``images[val_idx]``.

    Checkpoints go to ``workdir`` (``last.pt`` every epoch, ``best.pt`` on improvement);
    with ``resume`` an existing ``last.pt`` is continued. Returns ``config``, the ``best``
    validation record and the best epoch's EMA ``model`` (eval mode).
    """
    from tqdm import tqdm

    if len(train_idx) == 0:
        raise ValueError("the training split is empty")
    torch.set_num_threads(max(1, options.threads))
    torch.manual_seed(options.seed)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    size = images.shape[-1]
    mean, std = training_normalisation(images[train_idx])
    config = model_config(classes, size, mean, std, options.arch)

    model = build_model(config).to(memory_format=torch.channels_last)
    ema = WeightAverage(model, options.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr,
                                  weight_decay=options.weight_decay)
    steps_per_epoch = max(1, len(train_idx) // options.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=options.lr, total_steps=options.epochs * steps_per_epoch,
        pct_start=0.15)
    state = {"epoch": 0, "best": None, "history": []}
    last = workdir / "last.pt"
    if resume and last.exists():
        checkpoint = torch.load(last, map_location="cpu", weights_only=False)
        if checkpoint["options"] != asdict(options) or checkpoint["classes"] != list(classes):
            raise ValueError(f"{last} was made with other options or classes; "
                             "use another workdir or --no-resume")
        model.load_state_dict(checkpoint["model"])
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        state = checkpoint["state"]
        print(f"resumed from {last} after epoch {state['epoch']}", flush=True)

    data = torch.from_numpy(images)
    targets = torch.from_numpy(labels)
    autocast = options.precision == "bf16"
    for epoch in range(state["epoch"], options.epochs):
        model.train()
        generator = torch.Generator().manual_seed(options.seed * 1000 + epoch)
        order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=generator)]
        started, total_loss = time.time(), 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{options.epochs}",
                   mininterval=10)
        for step in bar:
            index = order[step * options.batch_size:(step + 1) * options.batch_size]
            x = augment(data[index].float()[:, None] / 255.0, generator)
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), targets[index],
                                   label_smoothing=options.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            ema.update(model)
            total_loss += loss.item()
            bar.set_postfix(loss=f"{total_loss / (step + 1):.3f}", refresh=False)
        record = {"epoch": epoch + 1, "train_loss": total_loss / steps_per_epoch,
                  "seconds": round(time.time() - started, 1)}
        if len(val_idx):
            probs = predict(ema.module, images[val_idx], mean, std)
            metrics = classification_metrics(labels[val_idx], probs, classes)
            record.update(val_accuracy=metrics["accuracy"], val_macro_f1=metrics["macro_f1"],
                          val_loss=float(F.nll_loss(torch.log(torch.from_numpy(probs) + 1e-8),
                                                    targets[val_idx])))
        print(json.dumps(record), flush=True)
        state["history"].append(record)
        state["epoch"] = epoch + 1
        key = (record.get("val_accuracy", 0.0), -record.get("val_loss", 0.0), epoch)
        if state["best"] is None or key > tuple(state["best"]["key"]):
            state["best"] = {**record, "key": list(key)}
            torch.save({"ema": ema.module.state_dict(), "record": record}, workdir / "best.pt")
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "state": state, "options": asdict(options), "classes": list(classes)},
                   workdir / "last.pt.part")
        (workdir / "last.pt.part").replace(last)
        (workdir / "history.json").write_text(json.dumps(state["history"], indent=1))

    best = torch.load(workdir / "best.pt", map_location="cpu", weights_only=True)
    best_record = {k: v for k, v in state["best"].items() if k != "key"}
    final = build_model(config)
    final.load_state_dict(best["ema"])
    return {"config": config, "best": best_record, "model": final.eval()}
