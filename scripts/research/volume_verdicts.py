"""The volume verdict on every tumour-free and every tumour volume we have: its tumour
probability and verdict, per contrast and fused, heads and brains (docs/classifier.md,
"Specificity").

    python scripts/research/volume_verdicts.py [--data ../shared/data] [--threads 2]
        [--evidence W] [--markdown]

Tumour-free: the templates of ../shared/data/healthy (heads and brains), and each head with its
brain mask applied (the skull-stripped volume a radiologist often loads). Tumour: the three
brain3d cases, each contrast and T2 + FLAIR fused by the bundled 3D model (cached in
/tmp/clinicalfmamba-fused-cases, as the evidence training caches them).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ClinicalFMambaLib.clinical.classifier import load_classifier  # noqa: E402
from ClinicalFMambaLib.clinical.tumour_evidence import load_tumour_evidence  # noqa: E402
from ClinicalFMambaLib.clinical.volume_verdict import classify_volume  # noqa: E402
from ClinicalFMambaLib.training.tumour_training import fused_volume  # noqa: E402

CONTRASTS = ("t1", "t1c", "t2", "flair")
# Heads of healthy/ and the brain mask that strips each.
HEAD_MASKS = {"mni152_nlin6asym_t1_head": "mni152_nlin6asym_brainmask",
              "avg152_t1_head_2mm": "avg152_brainmask_2mm",
              "avg152_t2_head_2mm": "avg152_brainmask_2mm",
              "avg152_pd_head_2mm": "avg152_brainmask_2mm"}


@dataclass(frozen=True)
class Volume:
    name: str
    tumour: bool
    head: bool
    image: sitk.Image


def healthy_volumes(folder: Path) -> list[Volume]:
    found = []
    for path in sorted(folder.glob("*.nii.gz")):
        stem = path.name[:-len(".nii.gz")]
        if "brainmask" in stem:
            continue
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
        found.append(Volume(stem, False, stem in HEAD_MASKS, image))
        if stem in HEAD_MASKS:
            mask = sitk.ReadImage(str(folder / f"{HEAD_MASKS[stem]}.nii.gz"), sitk.sitkFloat32)
            stripped = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)
                                              * (sitk.GetArrayFromImage(mask) > 0.5))
            stripped.CopyInformation(image)
            found.append(Volume(f"{stem} x brain mask", False, False, stripped))
    return found


def tumour_volumes(folder: Path) -> list[Volume]:
    found = []
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        for contrast in CONTRASTS:
            image = sitk.ReadImage(str(case / f"{contrast}.nii.gz"), sitk.sitkFloat32)
            found.append(Volume(f"{case.name} {contrast}", True, False, image))
        found.append(Volume(f"{case.name} T2+FLAIR fused", True, False,
                            fused_volume(case, "t2", "flair")))
    return found


def verdict(model, volume: Volume) -> tuple[float | None, str]:
    image = volume.image
    result = classify_volume(model, sitk.GetArrayFromImage(image), heatmap=False,
                             direction=np.array(image.GetDirection()).reshape(3, 3),
                             spacing=image.GetSpacing())
    if not result.in_scope:
        return None, f"out of scope ({result.reason})"
    return result.tumour_probability, result.prediction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--evidence", type=Path, default=None,
                        help="tumour-evidence weights (default: the bundled ones)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_classifier()
    if args.evidence is not None:
        model.evidence = load_tumour_evidence(args.evidence)
    start = time.time()
    rows = []
    for volume in healthy_volumes(args.data / "healthy") + tumour_volumes(args.data / "brain3d"):
        probability, said = verdict(model, volume)
        rows.append((volume, probability, said))
        shown = "—" if probability is None else f"{probability:.2f}"
        if not args.markdown:
            print(f"{volume.name:<40} {'tumour' if volume.tumour else 'healthy':<8} "
                  f"{'head' if volume.head else 'brain':<6} {shown:>5}  {said}", flush=True)
    if args.markdown:
        print("| volume | truth | head or brain | tumour P | verdict |")
        print("| --- | --- | --- | --- | --- |")
        for volume, probability, said in rows:
            shown = "—" if probability is None else f"{probability:.2f}"
            print(f"| {volume.name} | {'tumour' if volume.tumour else 'healthy'} | "
                  f"{'head' if volume.head else 'brain'} | {shown} | {said} |")
    healthy = [said for volume, _, said in rows if not volume.tumour]
    tumour = [said for volume, _, said in rows if volume.tumour]
    print(f"\nhealthy: {len(healthy)} volumes, tumour calls {healthy.count('tumour')}, "
          f"notumor {healthy.count('notumor')}, uncertain {healthy.count('uncertain')}")
    print(f"tumour: {len(tumour)} volumes, tumour calls {tumour.count('tumour')}, "
          f"notumor {tumour.count('notumor')}, uncertain {tumour.count('uncertain')}")
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
