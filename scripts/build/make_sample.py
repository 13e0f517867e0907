"""Copy the tiny bundled 2D sample (used by ``clinicalfmamba demo``) into Resources/sample.

One MRI-CT and one MRI-SPECT pair of the Harvard Whole Brain Atlas (AANLIB), both from
validation cases (``training.harvard_data.VALIDATION_CASES``) so the sample was never trained on.
The PNGs are copied byte for byte and a README records where each came from.

    python scripts/build/make_sample.py [--data ../shared/data/harvard]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

from ClinicalFMambaLib.evaluation.demo import SAMPLE_DIR, SAMPLE_PAIRS
from ClinicalFMambaLib.training.harvard_data import PAIR_TYPES, VALIDATION_CASES, case_of

ROOT = Path(__file__).resolve().parents[2]
# Sample name -> (Harvard pair type, file name): slices with clear anatomy (and, for CT, a
# lesion) chosen by eye among the validation cases.
SOURCES = {"mri_ct": ("CT-MRI", "41010.png"), "mri_spect": ("SPECT-MRI", "40030.png")}

README = """# Bundled sample images

Tiny co-registered pairs for `clinicalfmamba demo` and quick checks, written by
`scripts/build/make_sample.py`. They come from the Harvard Whole Brain Atlas (AANLIB, Johnson &
Becker), via its public mirror "Havard-Medical-Image-Fusion-Datasets"; research use only.
Every pair is from a case held back from training (`training.harvard_data.VALIDATION_CASES`).

| file | source (pair type / modality / file) | case, slice |
| --- | --- | --- |
{rows}

The SPECT image is RGB pseudo-colour: fusion works on its luma and keeps its colour.
"""


def copy_sample(data: Path) -> list[str]:
    """Copy every sample pair; returns the README table rows."""
    SAMPLE_DIR.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (pair_type, file_name) in SOURCES.items():
        case = case_of(Path(file_name))
        if case not in VALIDATION_CASES[pair_type]:
            raise ValueError(f"{pair_type} case {case} is a training case")
        for target, modality in zip(SAMPLE_PAIRS[name], ("MRI", PAIR_TYPES[pair_type])):
            source = data / pair_type / modality / file_name
            with Image.open(source) as image:
                if image.size != (256, 256):
                    raise ValueError(f"{source} is {image.size}, expected 256x256")
            shutil.copyfile(source, SAMPLE_DIR / target)
            rows.append(f"| `{target}` | {pair_type} / {modality} / {file_name} | "
                        f"{case}, {int(Path(file_name).stem[-3:])} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "harvard")
    args = parser.parse_args()
    rows = copy_sample(args.data)
    (SAMPLE_DIR / "README.md").write_text(README.format(rows="\n".join(rows)))
    print(f"wrote {len(rows)} images and README.md to {SAMPLE_DIR}")


if __name__ == "__main__":
    main()
