"""Constants of the field's 8-bit fusion metrics, shared by their numpy definitions
(``evaluation.metrics``) and their differentiable versions (``objective.surrogates``)."""

from __future__ import annotations

import numpy as np

# Xydeas & Petrovic sigmoid constants (edge strength g, orientation a).
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8
QABF_L = 1.0
# Sheikh & Bovik pixel-domain VIF: HVS noise variance in grey levels^2.
VIF_NOISE_VAR = 2.0
VIF_SCALES = 4


def gauss_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised Gaussian taps of ``size`` (centred), as VIF's windows."""
    t = np.arange(size) - (size - 1) / 2.0
    w = np.exp(-(t**2) / (2.0 * sigma**2))
    return w / w.sum()
