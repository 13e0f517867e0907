"""An objective that rewards what the field's 8-bit fusion metrics measure.

The paper's loss (training/losses.py) pulls the fused image towards the voxel-wise maximum and
the sources' strongest gradients; its optimum sits close to max fusion and loses to the
classical baselines on most of the ten metrics used to compare fusion methods
(evaluation/metrics.py). This objective scores a fused image with the differentiable metrics
(``surrogates``) against the best of the mean / max / Laplacian baselines on that same image.
Each metric's reward stops at a small margin above the best baseline, so no single metric
(e.g. sharpness) can be bought by giving up the others.
"""

from __future__ import annotations

import numpy as np
import torch

from .baselines import BASELINES
from .surrogates import OBJECTIVE_METRICS, SourceTerms

# An emphasis value e in [0, 1] trades the detail metrics against the others (fidelity to the
# sources): the detail terms weigh DETAIL_WEIGHT[0] at e = 0 up to DETAIL_WEIGHT[1] at e = 1
# and their gain is rewarded up to ``margin`` + e * EXTRA_MARGIN over the best baseline
# (published methods lead the baselines by 5-16 % on them, docs/results.md); the fidelity
# terms keep their weights and are rewarded up to ``margin`` + (1 - e) * EXTRA_MARGIN. With
# the fixed margin alone, metrics already past it resist nothing and the two ends barely
# differ.
DETAIL_METRICS = ("EN", "SF", "AG", "Qabf")
DETAIL_WEIGHT = (0.25, 2.0)
EXTRA_MARGIN = 0.27


def axial_slices(x: torch.Tensor, step: int) -> torch.Tensor:
    """(N, 1, D, H, W) volumes as (N * ceil(D / step), 1, H, W) images: every ``step``-th
    slice of the first spatial axis (the axial slices of a (z, y, x) volume)."""
    return x[:, :, ::step].transpose(1, 2).flatten(0, 1)


class MetricObjective:
    """Loss = minus the sum over ``OBJECTIVE_METRICS`` of each metric's gain over the best
    baseline on the same image, relative to that baseline's batch mean and capped at
    ``margin``; a shortfall counts ``deficit_weight`` times (above 1, the metrics still behind
    a baseline pull harder than those already ahead). ``metric_weights`` scales single
    metrics' terms (e.g. {"MI": 0} leaves MI out; unnamed metrics count once). 3D batches are
    scored on every ``slice_step``-th axial slice, the baselines being computed on the whole
    patch (as they are on whole volumes)."""

    def __init__(self, margin: float = 0.03, slice_step: int = 4, deficit_weight: float = 1.0,
                 metric_weights: dict[str, float] | None = None):
        unknown = set(metric_weights or {}) - set(OBJECTIVE_METRICS)
        if unknown:
            raise ValueError(f"unknown metric(s) {sorted(unknown)}: the objective has "
                             f"{', '.join(OBJECTIVE_METRICS)}")
        self.margin, self.slice_step, self.deficit_weight = margin, slice_step, deficit_weight
        self.metric_weights = {k: 1.0 for k in OBJECTIVE_METRICS} | dict(metric_weights or {})

    def prepare(self, a: torch.Tensor, b: torch.Tensor
                ) -> tuple[SourceTerms, dict[str, torch.Tensor]]:
        """The sources' terms and the best baseline's value of each metric per image: what
        scoring any fused image of this pair needs (3D: on its scored axial slices)."""
        with torch.no_grad():
            sources = [x.detach().cpu().numpy()[:, 0] for x in (a, b)]
            references = [torch.from_numpy(np.stack([fn(x, y) for x, y in zip(*sources)]))[:, None]
                          for fn in BASELINES.values()]
            if a.dim() == 5:
                a, b, *references = (axial_slices(x, self.slice_step)
                                     for x in (a, b, *references))
            terms = SourceTerms(a, b)
            scores = [terms.metrics(r.to(a)) for r in references]
            best = {k: torch.stack([s[k] for s in scores]).max(0).values for k in OBJECTIVE_METRICS}
        return terms, best

    def loss(self, ours: dict[str, torch.Tensor], best: dict[str, torch.Tensor],
             emphasis: float | None = None, per_image: bool = False
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, gain per metric) of the metrics ``ours`` against ``best`` (``prepare``).
        ``emphasis``: weight the DETAIL_METRICS' terms by it (above); None: as given.
        ``per_image``: each image's gains relative to its own best baseline and capped on
        their own, the loss summed over the images (images optimised each for itself);
        otherwise the batch's mean gain, as in training."""
        if per_image:
            gains = {k: (ours[k] - best[k]) / (best[k].abs() + 1e-6) for k in OBJECTIVE_METRICS}
        else:
            gains = {k: ((ours[k] - best[k]) / (best[k].abs().mean() + 1e-6)).mean()
                     for k in OBJECTIVE_METRICS}
        weights, margins = dict(self.metric_weights), dict.fromkeys(gains, self.margin)
        if emphasis is not None:
            low, high = DETAIL_WEIGHT
            for k in gains:
                detail = k in DETAIL_METRICS
                weights[k] *= low + (high - low) * emphasis if detail else 1.0
                margins[k] += EXTRA_MARGIN * (emphasis if detail else 1.0 - emphasis)
        loss = -sum(weights[k]
                    * (g.clamp(max=margins[k]) + (self.deficit_weight - 1) * g.clamp(max=0))
                    for k, g in gains.items())
        return loss.sum(), gains

    def __call__(self, fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                 emphasis: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, mean gain per metric) of a batch of fused images (emphasis: ``loss``)."""
        terms, best = self.prepare(a, b)
        if fused.dim() == 5:
            fused = axial_slices(fused, self.slice_step)
        loss, gains = self.loss(terms.metrics(fused), best, emphasis)
        return loss, {k: g.mean().item() for k, g in gains.items()}
