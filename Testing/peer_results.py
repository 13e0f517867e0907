"""Shared by the tests of the scripts that rank against the published methods' fused images
(rank_table.py, metric_headroom.py): where the data and scripts are, and how to load one."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "harvard").is_dir() or not (DATA / "peers").is_dir(),
                                reason="Harvard pairs or the published methods' results are absent")


def import_script(monkeypatch: pytest.MonkeyPatch, name: str) -> ModuleType:
    """scripts/research/<name>.py as a module (the scripts import each other by name)."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts" / "research"))
    return importlib.import_module(name)
