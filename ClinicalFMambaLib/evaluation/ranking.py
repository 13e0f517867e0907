"""Comparing methods on the fusion metrics: which is better on a metric, wins of one method
against another, mean ranks over a table of methods."""

from __future__ import annotations

import numpy as np

from .metrics import HIGHER_IS_BETTER, METRIC_NAMES


def beats_best_baseline(ours: dict[str, float], baselines: list[dict[str, float]],
                        columns: tuple[str, ...] = METRIC_NAMES) -> list[str]:
    """The ``columns`` on which ``ours`` scores higher than every one of ``baselines``
    (every metric here is higher-is-better)."""
    return [c for c in columns if ours[c] > max(b[c] for b in baselines)]


def is_better(metric: str, x: float, y: float) -> bool:
    """Whether ``x`` is strictly better than ``y`` on ``metric`` (``HIGHER_IS_BETTER``)."""
    return x > y if HIGHER_IS_BETTER[metric] else x < y


def metric_wins(ours: dict[str, float], other: dict[str, float],
                columns: tuple[str, ...] = METRIC_NAMES) -> list[str]:
    """The ``columns`` on which ``ours`` is strictly better than ``other``; a tie is no win."""
    return [c for c in columns if is_better(c, ours[c], other[c])]


def mean_ranks(table: dict[str, dict[str, float]],
               columns: tuple[str, ...] = METRIC_NAMES) -> dict[str, float]:
    """Each method's rank among all methods of ``table`` ({method: {metric: value}}) on each
    of ``columns`` (1 = best, in the direction of ``HIGHER_IS_BETTER``), averaged over the
    columns. Exactly equal values share the mean of the ranks they span (fractional ranking:
    two methods tied for best both rank 1.5), so every column's ranks sum to n(n + 1) / 2."""
    if any(np.isnan(v[c]) for v in table.values() for c in columns):
        raise ValueError("cannot rank NaN metric values")

    def rank(method: str, column: str) -> float:
        value = table[method][column]
        others = [v[column] for m, v in table.items() if m != method]
        return (1 + sum(is_better(column, o, value) for o in others)
                + sum(o == value for o in others) / 2)

    return {m: float(np.mean([rank(m, c) for c in columns])) for m in table}
