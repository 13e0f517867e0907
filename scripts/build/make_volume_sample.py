"""Write the bundled co-registered volume pair (Resources/sample/volume/) from shared data.

T2 and FLAIR of TCGA-DU-7294 (brain3d, BraTS space, 1 mm) are averaged over 2x2x2 voxel
bins (2 mm isotropic, anti-aliased) and cropped to 96x96x40 voxels around the brain's in-plane
centre and the tumour's slices (kept inside the brain, so no slice is empty). Both volumes
are cut from one grid, so the pair stays co-registered with identical geometry. Usage: python scripts/build/make_volume_sample.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT.parent / "shared" / "data" / "brain3d" / "TCGA-DU-7294"
OUT = ROOT / "Resources" / "sample" / "volume"
CONTRASTS = ("t2", "flair")
SHRINK = 2
SIZE = (96, 96, 40)  # i, j, k voxels after shrinking


def crop_start(mask: np.ndarray, tumour: np.ndarray) -> list[int]:
    """ROI start (i, j, k) on the shrunk grid: in-plane centre of the brain, slices centred
    on the tumour but not beyond the brain's first and last slices."""
    zs, ys, xs = np.nonzero(mask)
    tz = np.nonzero(tumour)[0]
    centre = ((xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, (tz.min() + tz.max()) / 2)
    start = [round(c / SHRINK - s / 2) for c, s in zip(centre, SIZE)]
    first, last = zs.min() // SHRINK, zs.max() // SHRINK + 1
    start[2] = max(first, min(start[2], last - SIZE[2]))
    limits = (mask.shape[2], mask.shape[1], mask.shape[0])
    return [int(np.clip(s, 0, n // SHRINK - size)) for s, size, n in zip(start, SIZE, limits)]


def shrunk(image: sitk.Image, start: list[int]) -> sitk.Image:
    small = sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), [SHRINK] * 3)
    roi = sitk.RegionOfInterest(small, SIZE, start)
    return sitk.Cast(sitk.Round(roi), sitk.sitkInt16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=CASE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    images = {name: sitk.ReadImage(str(args.case / f"{name}.nii.gz")) for name in CONTRASTS}
    mask = sitk.GetArrayFromImage(images["t2"]) != 0
    tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(args.case / "tumor_seg.nii.gz"))) > 0
    start = crop_start(mask, tumour)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        path = args.out / f"{args.case.name}_{name}.nii.gz"
        sitk.WriteImage(shrunk(image, start), str(path), useCompression=True)
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
              f"{path.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
