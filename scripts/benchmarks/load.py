"""The machine's load, printed beside every timing: on a shared machine a figure measured
under load can be many times slower, so ratios measured side by side are what compare."""

from __future__ import annotations

import os


def load_average() -> str:
    """'load average 1.20 0.90 0.70' (1, 5 and 15 minutes; os.getloadavg)."""
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
