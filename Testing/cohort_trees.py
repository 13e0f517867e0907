"""Small BIDS trees for the cohort tests (Testing/test_cohort_*.py), made from crops of the
real brain3d volumes in ../shared/data, and what the tests read back from a run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import SimpleITK as sitk

from bad_inputs import DATA

BRAIN3D = DATA / "brain3d"
CASES = ("TCGA-DU-7294", "BraTS-GLI-00001-000", "AURORA")
# x, y, z: 64x64x24 through the middle of the brain; B of one session is cropped wider, so
# that it is resampled onto A's grid.
CROP = (slice(88, 152), slice(88, 152), slice(64, 88))
WIDER = (slice(84, 156), slice(84, 156), slice(62, 90))
FAST = ("--workers", "2", "--threads-per-worker", "1", "--device", "cpu")  # 2 processes


def crop(case: str, contrast: str, target: Path, box: tuple = CROP) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.ReadImage(str(BRAIN3D / case / f"{contrast}.nii.gz"))[box]
    sitk.WriteImage(image, str(target), useCompression=True)
    return target


def anat(root: Path, subject: str, session: str | None = None) -> tuple[Path, str]:
    """(the anat folder, the file-name prefix) of a subject-session."""
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    folder = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    return folder, prefix


def description(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "cohort test", "BIDSVersion": "1.10.0"}))


def make_cohort(root: Path) -> Path:
    """sub-01 with two sessions (ses-2's FLAIR on a wider grid), sub-02 whose FLAIR is cut
    short, sub-03 without FLAIR."""
    if not BRAIN3D.is_dir():
        pytest.skip(f"real data not found: {BRAIN3D}")
    description(root)
    for session, case, box in (("1", CASES[0], CROP), ("2", CASES[1], WIDER)):
        folder, prefix = anat(root, "01", session)
        crop(case, "t2", folder / f"{prefix}_T2w.nii.gz")
        crop(case, "flair", folder / f"{prefix}_FLAIR.nii.gz", box)
    folder, prefix = anat(root, "02")
    crop(CASES[2], "t2", folder / f"{prefix}_T2w.nii.gz")
    flair = crop(CASES[2], "flair", folder / f"{prefix}_FLAIR.nii.gz").read_bytes()
    (folder / f"{prefix}_FLAIR.nii.gz").write_bytes(flair[: len(flair) // 2])
    folder, prefix = anat(root, "03")
    crop(CASES[0], "t2", folder / f"{prefix}_T2w.nii.gz")
    return root


def make_pairs(root: Path, count: int) -> Path:
    """``count`` good subjects without sessions (sub-01, ...), cycling through the cases."""
    if not BRAIN3D.is_dir():
        pytest.skip(f"real data not found: {BRAIN3D}")
    description(root)
    for number in range(1, count + 1):
        folder, prefix = anat(root, f"{number:02d}")
        case = CASES[(number - 1) % len(CASES)]
        crop(case, "t2", folder / f"{prefix}_T2w.nii.gz")
        crop(case, "flair", folder / f"{prefix}_FLAIR.nii.gz")
    return root


def network_loads(out: Path) -> list[str]:
    """The process (host:pid) of every network load that the workers logged."""
    log = out / "logs" / "workers.log"
    text = log.read_text() if log.exists() else ""
    return re.findall(r"^\S+ (\S+:\d+) worker", text, re.M)


def fused_files(out: Path) -> list[Path]:
    return sorted(out.rglob("*_desc-fused_*.nii.gz"))


def partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".partial-*"))
