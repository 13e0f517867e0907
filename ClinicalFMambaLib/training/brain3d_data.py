"""The brain3d multi-contrast volumes: loading, split by case, random 3D training patches."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from ..core.intensity import normalize_intensity, signal_box
from .fusion_targets import cached_volume_target

CONTRASTS = ("t1", "t1c", "t2", "flair")
CONTRAST_PAIRS = tuple(combinations(CONTRASTS, 2))
VALIDATION_CASE = "TCGA-DU-7294"


def find_cases(root: str | Path) -> list[Path]:
    cases = sorted(p for p in Path(root).iterdir()
                   if all((p / f"{c}.nii.gz").exists() for c in CONTRASTS))
    if not cases:
        raise FileNotFoundError(f"no cases with {', '.join(CONTRASTS)} NIfTI files under {root}")
    return cases


def split_cases(cases: list[Path]) -> tuple[list[Path], list[Path]]:
    """(train, validation): the validation case is held back whole."""
    return ([c for c in cases if c.name != VALIDATION_CASE],
            [c for c in cases if c.name == VALIDATION_CASE])


def read_case(case: Path) -> dict[str, np.ndarray]:
    """Every contrast as stored (z, y, x), before normalisation (what fuse_volumes takes)."""
    return {c: sitk.GetArrayFromImage(sitk.ReadImage(str(case / f"{c}.nii.gz")))
            for c in CONTRASTS}


def normalise_case(volumes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every contrast of ``read_case`` as float32 [0, 1], normalised over its brain voxels."""
    return {c: normalize_intensity(volume) for c, volume in volumes.items()}


def load_case(case: Path) -> dict[str, np.ndarray]:
    """Every contrast as float32 [0, 1] (z, y, x), normalised over its brain voxels."""
    return normalise_case(read_case(case))


def brain_box(volumes: dict[str, np.ndarray]) -> tuple[slice, ...]:
    """Bounding box of the voxels that are non-zero in any contrast."""
    box = signal_box(np.any([v > 0 for v in volumes.values()], axis=0))
    if box is None:
        raise ValueError("the volumes hold no brain voxels")
    return box


class PatchDataset3D(torch.utils.data.Dataset):
    """Random patches inside the brain from every contrast pair of every training case.

    Items are (2, 1, d, h, w) tensors (A, B), or (3, 1, d, h, w) with the pair's loss optimum
    as a third channel when ``target_cache`` is given (fusion_targets.py; computed once per
    case and pair, symmetric in A and B like the loss).
    """

    def __init__(self, cases: list[Path], patch: int, samples_per_epoch: int, seed: int,
                 target_cache: Path | None = None):
        self.volumes = [load_case(c) for c in cases]
        self.boxes = [brain_box(v) for v in self.volumes]
        self.patch, self.samples, self.seed, self.epoch = patch, samples_per_epoch, seed, 0
        self.targets = None
        if target_cache is not None:
            self.targets = [
                {(x, y): cached_volume_target(v[x], v[y], box,
                                              target_cache / f"{c.name}_{x}+{y}.npy")
                 for x, y in tqdm(CONTRAST_PAIRS, desc=f"loss optima {c.name}", unit="pair")}
                for c, v, box in zip(cases, self.volumes, self.boxes)]

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        case = rng.integers(len(self.volumes))
        first, second = CONTRAST_PAIRS[rng.integers(len(CONTRAST_PAIRS))]
        volumes, box = self.volumes[case], self.boxes[case]
        region = []
        for axis, extent in enumerate(volumes[first].shape):
            size = min(self.patch, extent)
            low = min(max(box[axis].start, 0), extent - size)
            high = max(min(box[axis].stop - size, extent - size), low)
            start = int(rng.integers(low, high + 1))
            region.append(slice(start, start + size))
        channels = [volumes[first][tuple(region)], volumes[second][tuple(region)]]
        if self.targets is not None:
            channels.append(self.targets[case][first, second][tuple(region)].astype(np.float32))
        pair = np.stack(channels)
        for axis in (1, 2, 3):
            if rng.random() < 0.5:
                pair = np.flip(pair, axis)
        if rng.random() < 0.5:
            pair = pair[[1, 0, *range(2, len(pair))]]
        return torch.from_numpy(np.ascontiguousarray(pair)).unsqueeze(1)  # (2|3, 1, d, h, w)


def validation_crops(case: Path, size: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Centre crops of the brain for every contrast pair: cheap per-epoch validation."""
    volumes = load_case(case)
    box = brain_box(volumes)
    starts = [int(np.clip((s.start + s.stop) // 2 - size // 2, 0, max(n - size, 0)))
              for s, n in zip(box, volumes[CONTRASTS[0]].shape)]
    region = tuple(slice(start, start + size) for start in starts)
    return [(f"{case.name}/{x}+{y}", volumes[x][region], volumes[y][region])
            for x, y in CONTRAST_PAIRS]
