"""The ExtensionsIndex refuses an extension whose clone (work tree and .git) exceeds 100 MB
(scripts/check_description_files.py, check_repository_size, MB of 2**20 bytes). This keeps
10 MB of room: git history (packed and loose objects) plus the tracked files must stay
under 90 MB."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MB = 90
MB = 2**20


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True,
                          text=True).stdout


def test_history_and_tracked_files_fit_the_index_limit():
    try:
        top = Path(git("rev-parse", "--show-toplevel").strip()).resolve()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    if top != ROOT:
        pytest.skip("not a git checkout of this repository")
    counts = dict(line.split(": ") for line in git("count-objects", "-v").splitlines())
    history = (int(counts["size-pack"]) + int(counts["size"])) * 1024  # both in KiB
    tracked = sum((ROOT / name).stat().st_size for name in git("ls-files", "-z").split("\0")
                  if name and (ROOT / name).is_file())
    total = history + tracked
    assert total < LIMIT_MB * MB, (
        f"git history {history / MB:.1f} MB (packed {int(counts['size-pack']) / 1024:.1f}, "
        f"loose {int(counts['size']) / 1024:.1f}) + tracked files {tracked / MB:.1f} MB = "
        f"{total / MB:.1f} MB, over {LIMIT_MB} MB")
