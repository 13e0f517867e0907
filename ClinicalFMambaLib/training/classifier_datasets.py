"""Training sets for the tumour classifier: folder-per-class images (decoded once into a
cache), stratified and grouped splits, and graded cases from a CSV such as BraTS
``name_mapping.csv``."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np

from ..clinical.images import is_image_file, prepare_image, read_image
from ..clinical.volumes import MIN_BRAIN_FRACTION, prepare_volume, read_volume

CACHE_DIR = Path("/tmp/clinicalfmamba-classifier-cache")
LABEL_COLUMN_NAMES = ("grade", "label", "class", "diagnosis")


def list_class_folders(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths, integer labels and class names of a folder-per-class dataset."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and is_image_file(p))
        paths += files
        labels += [index] * len(files)
    if len(classes) < 2 or not paths:
        raise ValueError(f"{root} must hold at least two class folders with images "
                         f"(found classes {classes}, {len(paths)} images)")
    return paths, np.array(labels, np.int64), classes


def load_images(paths: list[Path], size: int, progress: bool = True) -> np.ndarray:
    """Decode and prepare images once into a uint8 (N, size, size) array, cached under /tmp.

    The cache key covers the paths, their sizes and modification times and ``size``.
    """
    key = hashlib.sha1(str(size).encode())
    for path in paths:
        stat = path.stat()
        key.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    cache = CACHE_DIR / f"images-{size}-{key.hexdigest()[:16]}.npy"
    if cache.exists():
        return np.load(cache)
    from tqdm import tqdm

    out = np.empty((len(paths), size, size), np.uint8)
    for index, path in enumerate(tqdm(paths, desc="decoding images", disable=not progress)):
        prepared, _ = prepare_image(read_image(path), size)
        out[index] = np.round(prepared * 255)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # One temporary file per process: parallel trainings may decode the same images at once.
    tmp = cache.with_suffix(f".{os.getpid()}.part.npy")
    np.save(tmp, out)
    tmp.replace(cache)
    return out


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices, stratified by label; with ``groups`` (e.g. case ids) every
    group goes wholly to one side so slices of one patient never straddle the split."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    val_groups = []
    for label in np.unique(labels):
        members = np.unique(groups[labels == label])
        rng.shuffle(members)
        n_val = int(round(val_fraction * len(members)))
        if val_fraction > 0 and len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_groups += list(members[:n_val])
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def read_grades(csv_path: str | Path, case_ids: list[str], id_column: str | None = None,
                label_column: str | None = None) -> dict[str, str]:
    """Case id -> label from a CSV such as BraTS ``name_mapping.csv``.

    Without ``id_column``, the column whose values match the most case folders is used;
    without ``label_column``, the first of Grade/label/class/diagnosis present.
    """
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise FileNotFoundError(f"grades CSV not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{csv_path} has no data rows")
    columns = list(rows[0].keys())
    if label_column is None:
        found = [c for c in columns if c.strip().lower() in LABEL_COLUMN_NAMES]
        if not found:
            raise ValueError(f"{csv_path}: no label column among {columns}; pass --label-column")
        label_column = found[0]
    if id_column is None:
        wanted = set(case_ids)
        id_column = max((c for c in columns if c != label_column),
                        key=lambda c: sum(row[c] in wanted for row in rows), default=None)
    for column in (id_column, label_column):
        if column not in columns:
            raise ValueError(f"{csv_path}: column {column!r} not found in {columns}")
    grades = {row[id_column].strip(): row[label_column].strip() for row in rows
              if row[id_column].strip() in case_ids and row[label_column].strip()}
    if not grades:
        raise ValueError(f"{csv_path}: no row of column {id_column!r} names a case folder")
    return grades


def load_graded_cases(data_dir: str | Path, csv_path: str | Path, volume_name: str,
                      size: int, id_column: str | None = None, label_column: str | None = None,
                      slice_step: int = 1, progress: bool = True,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Axial brain slices of ``DATA_DIR/<case>/<volume_name>`` labelled by the case's grade.

    Returns uint8 images (N, size, size), labels, case index per slice, class names. Edge
    slices (brain area under MIN_BRAIN_FRACTION of the case's largest) are left out.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"case folder not found: {data_dir}")
    cases = sorted(p.name for p in data_dir.iterdir() if (p / volume_name).exists())
    if not cases:
        raise ValueError(f"no case folder in {data_dir} contains {volume_name}")
    grades = read_grades(csv_path, cases, id_column, label_column)
    classes = sorted(set(grades.values()))
    if len(classes) < 2:
        raise ValueError(f"need at least two labels among the cases, found {classes}")
    from tqdm import tqdm

    images, labels, groups = [], [], []
    for index, case in enumerate(tqdm(sorted(grades), desc="reading cases", disable=not progress)):
        array, direction, _ = read_volume(data_dir / case / volume_name)
        slices = prepare_volume(array, size, direction)
        keep = np.flatnonzero(slices.brain_area >= MIN_BRAIN_FRACTION * slices.brain_area.max())
        keep = keep[::max(1, slice_step)]
        images.append(np.round(slices.images[keep] * 255).astype(np.uint8))
        labels += [classes.index(grades[case])] * len(keep)
        groups += [index] * len(keep)
    return np.concatenate(images), np.array(labels, np.int64), np.array(groups), classes
