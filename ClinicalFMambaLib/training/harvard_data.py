"""The Harvard (AANLIB) 2D pairs: discovery, split by case, in-memory training crops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.intensity import split_luma

PAIR_TYPES = {"CT-MRI": "CT", "PET-MRI": "PET", "SPECT-MRI": "SPECT"}
# Held-back cases (about a fifth of each type's pairs; PET-MRI has only two cases).
VALIDATION_CASES = {"CT-MRI": {"2", "41"}, "PET-MRI": {"41"}, "SPECT-MRI": {"9", "40"}}


@dataclass(frozen=True)
class HarvardPair:
    pair_type: str
    case: str
    mri: Path
    other: Path

    @property
    def name(self) -> str:
        return f"{self.pair_type}/{self.mri.stem}"


def case_of(path: Path) -> str:
    """'16003.png' -> '16': the file name is <case><3-digit slice>."""
    return path.stem[:-3]


def find_pairs(root: str | Path) -> list[HarvardPair]:
    root = Path(root)
    pairs = []
    for pair_type, other in PAIR_TYPES.items():
        for mri in sorted((root / pair_type / "MRI").glob("*.png")):
            partner = root / pair_type / other / mri.name
            if partner.exists():
                pairs.append(HarvardPair(pair_type, case_of(mri), mri, partner))
    if not pairs:
        raise FileNotFoundError(f"no Harvard pairs under {root} (expected e.g. CT-MRI/MRI/*.png)")
    return pairs


def split_by_case(pairs: list[HarvardPair]) -> tuple[list[HarvardPair], list[HarvardPair]]:
    """(train, validation): whole cases go to one side, never single slices."""
    val = [p for p in pairs if p.case in VALIDATION_CASES[p.pair_type]]
    train = [p for p in pairs if p.case not in VALIDATION_CASES[p.pair_type]]
    return train, val


def load_luma(path: Path) -> np.ndarray:
    """Float [0, 1] grey of an 8-bit image file, or the luma (Y) of a colour one."""
    return split_luma(np.asarray(Image.open(path)))[0]


def load_luma_pair(pair: HarvardPair) -> tuple[np.ndarray, np.ndarray]:
    """Float [0, 1] (MRI, luma of CT/PET/SPECT)."""
    return load_luma(pair.mri), load_luma(pair.other)


class CropDataset(torch.utils.data.Dataset):
    """Random crops with flips and random input order, from pairs held in memory.

    Each item is (channels, 1, h, w): the two inputs, then any extra planes (training targets)
    appended to ``images`` by the caller, cropped and flipped alike.
    """

    def __init__(self, pairs: list[HarvardPair], crop: int, seed: int):
        self.images = [np.stack(load_luma_pair(p)) for p in pairs]
        self.crop, self.seed, self.epoch = crop, seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        pair = self.images[index]
        h, w = pair.shape[1:]
        y, x = rng.integers(0, h - self.crop + 1), rng.integers(0, w - self.crop + 1)
        crop = pair[:, y:y + self.crop, x:x + self.crop]
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        if rng.random() < 0.5:
            crop = crop[:, ::-1, :]
        if rng.random() < 0.5:  # the network should not depend on which input is which
            crop = crop[[1, 0, *range(2, len(crop))]]
        return torch.from_numpy(np.ascontiguousarray(crop)).unsqueeze(1)  # (2, 1, h, w)
