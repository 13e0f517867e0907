"""Per-pair minimisers of the unsupervised fusion loss, used as training targets.

Training the network on the loss alone converges slowly on a CPU budget: a few hundred
steps leave it at its starting point, max fusion. Minimising the same loss directly over the
pixels of one pair (from the max-fusion start, in logit space) takes about a second and gives
that pair's optimum under the loss. The network is then trained on the loss plus an L1 pull
towards these optima (amortised optimisation): no ground truth enters anywhere.

The same holds for the metric objective (objective/metric_objective.py): its optimum for one image,
reached from a trained network's output, is a target that network can be fine-tuned towards
(``optimise_pair_metrics``; ``claim_cache`` keeps such targets apart from those of other
starting weights).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..networks.fusion_net import image_batch
from ..objective.metric_objective import MetricObjective
from .losses import FusionLoss


def _descend(start: torch.Tensor, loss_of: Callable, steps: int, lr: float) -> np.ndarray:
    """``start`` ((1, 1, ...) in [0, 1]) moved by ``steps`` Adam steps on ``loss_of(F)[0]``,
    in logit space so that F stays in (0, 1)."""
    logits = torch.logit(start.clamp(1e-3, 1 - 1e-3)).requires_grad_()
    optimiser = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        loss, _ = loss_of(torch.sigmoid(logits))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return torch.sigmoid(logits)[0, 0].detach().numpy()


def optimise_pair(a: np.ndarray, b: np.ndarray, steps: int = 40, lr: float = 0.12) -> np.ndarray:
    """Minimise the fusion loss over the pixels of F for one pair (float [0, 1] arrays)."""
    ta, tb = image_batch(a), image_batch(b)
    return _descend(torch.maximum(ta, tb), FusionLoss(ta, tb), steps, lr)


def optimise_pair_metrics(start: np.ndarray, a: np.ndarray, b: np.ndarray,
                          objective: MetricObjective, steps: int = 300, lr: float = 0.01
                          ) -> np.ndarray:
    """Maximise the metric objective over the pixels of F for one pair, from ``start`` (e.g.
    a network's output; float [0, 1] arrays). The result shows which metric combinations are
    reachable near ``start`` (scripts/research/metric_headroom.py)."""
    ta, tb = image_batch(a), image_batch(b)
    return _descend(image_batch(start), lambda f: objective(f, ta, tb), steps, lr)


def _cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array at ``path`` (.npy), computed and saved first if it is not there yet."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part.npy")  # an interrupted run leaves no bad target
        np.save(partial, compute())
        partial.replace(path)
    return np.load(path)


def cached_volume_target(a: np.ndarray, b: np.ndarray, box: tuple[slice, ...], path: Path,
                         steps: int = 40) -> np.ndarray:
    """The loss optimum of a volume pair inside ``box`` (0 outside, where both inputs are
    background), computed once and kept at ``path`` (.npy, float16: targets need no more)."""
    def compute() -> np.ndarray:
        target = np.zeros(a.shape, np.float16)
        target[box] = optimise_pair(a[box], b[box], steps=steps)
        return target

    return _cached(path, compute)


def target_file(cache: Path, pair) -> Path:
    """Where ``cache`` keeps the target of one Harvard pair."""
    return cache / (pair.name.replace("/", "_") + ".npy")


def cached_targets(pairs: list, images: list[np.ndarray], cache: Path,
                   optimise: Callable[[np.ndarray], np.ndarray], desc: str) -> list[np.ndarray]:
    """Targets ``optimise(image)`` for (2, H, W) image pairs, computed once and kept in
    ``cache`` (one .npy per pair); ``desc`` labels the progress bar."""
    return [_cached(target_file(cache, pair), lambda image=image: optimise(image))
            for pair, image in tqdm(list(zip(pairs, images)), desc=desc, unit="pair")]


def claim_cache(cache: Path, source: dict) -> None:
    """Record in ``cache`` what its targets are computed from, or refuse a folder whose
    targets came from something else (other starting weights or objective settings): a file
    name alone cannot tell such targets apart."""
    record = cache / "SOURCE.json"
    if record.exists():
        found = json.loads(record.read_text())
        if found != source:
            raise ValueError(f"{cache} holds targets computed from {found}, not from {source}; "
                             "choose another --target-cache")
        return
    cache.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(source, indent=1))
