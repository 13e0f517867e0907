"""Score the 3D models against classical fusion on a brain3d case (the held-back one by default).

    python scripts/research/fusion_results_3d.py [--weights W] [--case NAME]
                                        [--ablation runs/fusion3d-axial/fusion3d-axial.safetensors]
                                        [--output docs/research/results_3d.md]
                                        [--figure docs/fusion3d_views.png]

Every contrast pair of the held-back case (brain3d_data.VALIDATION_CASE, or ``--case``: a
training case, to see whether a setting chosen on the held-back case holds elsewhere; whole
240x240x155 volumes) is fused by the bundled tri-plane 3D model, by the axial-only ablation
(weights from `clinicalfmamba train-fusion --dim 3 --axial-only-scan ...`, if given), by the
bundled 2D model slice by slice, and by the mean / max / Laplacian-pyramid baselines. Scored
inside the brain's bounding box: PSNR, SSIM, MS-SSIM and EN of the whole volume
(metrics.volume_metrics), and the ten 2D metrics of the 8-bit protocol averaged over
``--slices`` axial slices spread through the brain (evaluation.volume_metrics.volume_fusion_metrics).
Also: on how many of those ten each model beats each baseline (a tie is no win), and the grain
of every method in the flat regions of both sources (evaluation/grain.py: standard deviation of the
high-pass residual there).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from PIL import Image
from tqdm import tqdm

from ClinicalFMambaLib.evaluation.figures import orthogonal_views
from ClinicalFMambaLib.evaluation.grain import flat_mask, flat_noise
from ClinicalFMambaLib.evaluation.metrics import METRIC_NAMES
from ClinicalFMambaLib.evaluation.ranking import beats_best_baseline, metric_wins
from ClinicalFMambaLib.evaluation.volume_metrics import VOLUME_TABLE_COLUMNS as COLUMNS
from ClinicalFMambaLib.evaluation.volume_metrics import volume_table_metrics
from ClinicalFMambaLib.fusion.inference import BUNDLED_MODELS, load_fusion_model
from ClinicalFMambaLib.fusion.volumes import fuse_volumes
from ClinicalFMambaLib.io.weights import bundled
from ClinicalFMambaLib.objective.baselines import BASELINES
from ClinicalFMambaLib.training.brain3d_data import (CONTRAST_PAIRS, CONTRASTS, VALIDATION_CASE,
                                                     brain_box, normalise_case)

OURS = "tri-plane 3D"


def table(methods: dict[str, dict[str, float]], baselines: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for method, values in methods.items():
        cells = []
        for column in COLUMNS:
            best = max(m[column] for m in methods.values())
            cells.append(f"**{values[column]:.3f}**" if values[column] == best
                         else f"{values[column]:.3f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def wins(ours: dict, methods: dict, baselines: list[str]) -> int:
    """Columns on which ``ours`` beats every baseline (higher is better for all)."""
    return len(beats_best_baseline(ours, [methods[b] for b in baselines], COLUMNS))


def pairwise_wins(ours: dict, methods: dict, baselines: list[str]) -> str:
    """"mean a/10, max b/10, ...": the 2D metrics on which ``ours`` beats each baseline."""
    def slice_metrics(row: dict) -> dict:
        return {k: row[f"2D {k}"] for k in METRIC_NAMES}

    return ", ".join(f"{b} {len(metric_wins(slice_metrics(ours), slice_metrics(methods[b])))}"
                     f"/{len(METRIC_NAMES)}" for b in baselines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/brain3d")
    parser.add_argument("--weights", type=Path, default=None,
                        help="weights of the tri-plane model (default: the bundled one)")
    parser.add_argument("--ablation", type=Path, default=None,
                        help="weights of the axial-only model (train-fusion --axial-only-scan)")
    parser.add_argument("--slices", type=int, default=30,
                        help="axial slices for the averaged 2D metrics")
    parser.add_argument("--output", default="docs/research/results_3d.md")
    parser.add_argument("--figure", default="docs/fusion3d_views.png",
                        help="axial/coronal/sagittal views of the T2 + FLAIR pair")
    parser.add_argument("--case", default=VALIDATION_CASE,
                        help="the brain3d case to score (default: the held-back one)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    case = Path(args.data) / args.case
    if not case.is_dir():
        parser.error(f"no brain3d case {case}")
    images = {c: sitk.ReadImage(str(case / f"{c}.nii.gz")) for c in CONTRASTS}
    raw = {c: sitk.GetArrayFromImage(image) for c, image in images.items()}
    unit = normalise_case(raw)
    box = brain_box(unit)
    models = {OURS: load_fusion_model(args.weights or bundled(BUNDLED_MODELS[3]), dims=3,
                                      device="cpu")}
    if args.ablation:
        models["axial-only 3D (ablation)"] = load_fusion_model(args.ablation, dims=3, device="cpu")
    models["2D slice by slice"] = load_fusion_model(dims=2, device="cpu")
    baselines = list(BASELINES)
    results, seconds, grain = {}, defaultdict(list), {}
    for x, y in tqdm(CONTRAST_PAIRS, desc="pairs", unit="pair"):
        fused = {}
        for name, model in models.items():
            started = time.perf_counter()
            fused[name] = fuse_volumes(model, raw[x], raw[y]).luma
            seconds[name].append(time.perf_counter() - started)
        fused.update({name: fn(unit[x], unit[y]) for name, fn in BASELINES.items()})
        results[f"{x}+{y}"] = {
            m: volume_table_metrics(unit[x], unit[y], f, box, args.slices)
            for m, f in fused.items()}
        flat = flat_mask(unit[x], unit[y])
        grain[f"{x}+{y}"] = {m: flat_noise(f, flat)
                             for m, f in {x: unit[x], y: unit[y], **fused}.items()}
        if (x, y) == ("t2", "flair") and args.figure:
            views = orthogonal_views({"T2": unit[x], "FLAIR": unit[y], "max": fused["max"],
                                      OURS: fused[OURS]}, images["t2"].GetSpacing())
            Image.fromarray(views).save(args.figure)

    methods = list(next(iter(results.values())))
    mean = {m: {c: float(np.mean([r[m][c] for r in results.values()])) for c in COLUMNS}
            for m in methods}
    lines = ["<!-- written by scripts/research/fusion_results_3d.py; do not edit by hand -->",
             f"## Mean over the {len(results)} contrast pairs of {args.case}", "",
             *table(mean, baselines), ""]
    for name in models:
        lines.append(f"* {name}: beats the best baseline on **{wins(mean[name], mean, baselines)}"
                     f"/{len(COLUMNS)}** columns on average, and on "
                     + ", ".join(f"{p} {wins(r[name], r, baselines)}" for p, r in results.items())
                     + f" per pair; fusion {np.mean(seconds[name]):.1f} s per pair "
                     f"({args.threads} threads).")
        lines.append(f"  Ten 2D metrics won against each baseline: on average "
                     f"{pairwise_wins(mean[name], mean, baselines)}; "
                     + "; ".join(f"{p} {pairwise_wins(r[name], r, baselines)}"
                                 for p, r in results.items()) + ".")
    lines += ["", "### Grain in flat regions", "",
              "Standard deviation of the high-pass residual (volume minus its Gaussian "
              "smoothing, sigma 1 voxel) where both sources are flat (evaluation/grain.py); the "
              "sources' own in the first two columns.", "",
              "| pair | source A | source B | " + " | ".join(methods) + " |",
              "|---" * (len(methods) + 3) + "|"]
    for pair, values in grain.items():
        a_name, b_name = pair.split("+")
        lines.append(f"| {pair} | {values[a_name]:.4f} | {values[b_name]:.4f} | "
                     + " | ".join(f"{values[m]:.4f}" for m in methods) + " |")
    for pair, methods_of_pair in results.items():
        lines += ["", f"### {pair}", "", *table(methods_of_pair, baselines)]
    text = "\n".join(lines) + "\n"
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
