"""The quality mode: a 2D fused image refined at run time on the metric objective.

A trained network is one rule for all images, and the metric objective's optimum for one
image lies in changes specific to that image (its histograms and edges) that do not carry
from image to image (docs/research/results.md, "The objective's own optima"). So ``best``
quality starts from the network's output and moves its pixels a few Adam steps on that
image's own objective: the per-image loss of objective.metric_objective against the best
baseline of each metric, with the sources' terms and the baselines computed once. The
settings below were chosen on training-side validation pairs (docs/quality.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.errors import InputError, InvalidResultError
from ..networks.fusion_net import image_batch
from ..objective.metric_objective import MetricObjective
from ..objective.surrogates import SSIM_WINDOW

QUALITIES = ("fast", "best")
MAX_STEPS = 1000  # a bound against a mistyped number: 1000 steps take minutes a pair
# The objective of the headroom study (docs/research/results.md), with deficit weight 3;
# the quality mode adds Qabf, where the published methods lead (docs/quality.md).
HEADROOM_WEIGHTS = {"SSIM": 20.0, "AG": 4.0, "VIF": 4.0}


@dataclass(frozen=True)
class RefineSettings:
    """Adam on the pixels, its step size falling linearly to 0 over ``steps`` (large moves
    early, settling into the optimum late; the pixels stay in [0, 1]). ``lr`` is in
    intensity units (0.016: about 4 grey levels a step at first); ``beta1`` well below
    Adam's 0.9 lets the few steps follow the gradient rather than its history."""

    steps: int = 20
    lr: float = 0.016
    beta1: float = 0.3
    deficit_weight: float = 3.0
    metric_weights: dict[str, float] = field(
        default_factory=lambda: HEADROOM_WEIGHTS | {"Qabf": 4.0})

    @classmethod
    def with_steps(cls, steps: str | int | None) -> RefineSettings:
        """The tuned settings with ``steps`` (checked by ``parse_steps``; None: the tuned
        number)."""
        return cls() if steps is None else cls(parse_steps(steps))

    def objective(self) -> MetricObjective:
        return MetricObjective(deficit_weight=self.deficit_weight,
                               metric_weights=self.metric_weights)


def parse_quality(value: str) -> str:
    """``value`` if it names a quality mode, else ValueError."""
    if value not in QUALITIES:
        raise ValueError(f"quality must be fast (the network alone) or best (each image "
                         f"refined on the fusion metrics, slower), got {value!r}")
    return value


def parse_steps(value: str | int) -> int:
    """A number of refinement steps (1..MAX_STEPS) from text or a number; else ValueError."""
    try:
        steps = int(value)
    except (TypeError, ValueError):
        steps = 0
    if not 1 <= steps <= MAX_STEPS or str(value).strip() != str(steps):
        raise ValueError(f"refinement steps must be a whole number from 1 to {MAX_STEPS}, "
                         f"got {value!r}")
    return steps


def refine(fused: np.ndarray, a: np.ndarray, b: np.ndarray,
           settings: RefineSettings = RefineSettings(),
           device: torch.device | str = "cpu") -> np.ndarray:
    """``fused`` (a 2D float [0, 1] fusion of the grey sources ``a`` and ``b``, e.g. a
    network's output) after ``settings.steps`` steps on its own metric objective; float32."""
    if not fused.shape == a.shape == b.shape or fused.ndim != 2:
        raise ValueError(f"refine takes three 2D images of one shape, got {fused.shape}, "
                         f"{a.shape} and {b.shape}")
    if min(fused.shape) < len(SSIM_WINDOW):
        raise InputError(f"quality best needs images of at least {len(SSIM_WINDOW)} pixels a "
                         f"side (the SSIM window of its objective); this one is "
                         f"{fused.shape[1]}x{fused.shape[0]}")
    objective = settings.objective()
    ta, tb = (image_batch(x).to(device) for x in (a, b))
    terms, best = objective.prepare(ta, tb)
    pixels = image_batch(fused).to(device).clamp(0, 1).requires_grad_()
    optimiser = torch.optim.Adam([pixels], lr=settings.lr, betas=(settings.beta1, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 1 - step / settings.steps)
    for _ in range(settings.steps):
        loss, _ = objective.loss(terms.metrics(pixels), best, per_image=True)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            pixels.clamp_(0, 1)  # projected: a pixel pushed past black or white stays there
    result = pixels.detach()[0, 0].cpu().numpy()
    if not np.isfinite(result).all():
        raise InvalidResultError("the quality refinement produced NaN/Inf; nothing written")
    return result
