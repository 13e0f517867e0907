"""The 3D results scripts refuse a brain3d case that is not there in one line, before any
fusion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["fusion_results_3d.py", "detail_layer_3d.py"])
def test_unknown_case_is_one_line(script, tmp_path):
    # Where a script writes a report, it is pointed into tmp_path, which must stay empty.
    report = ["--output", str(tmp_path / "out.md")] if script == "fusion_results_3d.py" else []
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "research" / script), "--data",
                           str(tmp_path), "--case", "no-such-case", *report],
                          cwd=ROOT, capture_output=True, encoding="utf-8", timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"{script}: error: no brain3d case {tmp_path / 'no-such-case'}")
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no report written
