"""The quality mode side by side with the network alone, one row per pair.

    python scripts/research/quality_figure.py [--output docs/quality.png]
        [--pair CT-MRI/2013 --pair SPECT-MRI/9027 ...] [--threads 2]

Each row: the two sources, ``fuse --quality fast`` (the network alone), ``fuse --quality
best`` and the change of the luma, eight times amplified around mid-grey (brighter: the
refinement raised the pixel). Pairs are Harvard <pair type>/<file stem>; the defaults are
held-back pairs (training.harvard_data.VALIDATION_CASES), as the published figures.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from ClinicalFMambaLib.evaluation.figures import side_by_side
from ClinicalFMambaLib.evaluation.image_scores import unit_luma
from ClinicalFMambaLib.fusion.inference import fuse_images, load_fusion_model
from ClinicalFMambaLib.io.images import read_image
from ClinicalFMambaLib.training.harvard_data import PAIR_TYPES

GAIN = 8  # the change is a few grey levels: amplified to be seen


def row(model, data: str, name: str) -> np.ndarray:
    pair_type, stem = name.split("/")
    paths = [f"{data}/{pair_type}/{kind}/{stem}.png" for kind in ("MRI", PAIR_TYPES[pair_type])]
    a, b = (read_image(p)[0] for p in paths)
    fast, best = (fuse_images(model, a, b, quality) for quality in ("fast", "best"))
    change = np.clip(0.5 + GAIN * (unit_luma(best) - unit_luma(fast)), 0, 1)
    labels = ["MRI", PAIR_TYPES[pair_type], "quality fast", "quality best",
              f"change x{GAIN}"]
    return side_by_side([a, b, fast, best, change], [f"{name}: {labels[0]}", *labels[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/harvard")
    parser.add_argument("--pair", action="append", default=None,
                        help="<pair type>/<file stem> (repeatable)")
    parser.add_argument("--output", default="docs/quality.png")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_fusion_model(device="cpu")
    pairs = args.pair or ["CT-MRI/2013", "PET-MRI/41035", "SPECT-MRI/9027"]
    Image.fromarray(np.concatenate([row(model, args.data, p) for p in pairs])).save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
