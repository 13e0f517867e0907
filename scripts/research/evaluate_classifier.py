"""Clinical check of the tumour classifier.

1. Testing split of ../shared/data/tumor-mri: accuracy, macro-F1, per-class one-vs-rest AUC,
   confusion matrix (through the public API, from the JPEG files).
2. TCGA-DU-7294 (brain3d, with tumor_seg.nii.gz): slice-level AUC of the tumour probability
   (1 - P(notumor)) against "the segmentation has tumour in this slice", the volume verdict,
   and how much of the heatmap falls inside the segmentation. Run on each contrast and on a
   rule-based fused stand-in (voxel-wise max of brain-windowed T2 and FLAIR, the intensity
   target of the fusion loss), or on a fused volume given with --fused.
3. Volume aggregation: the shipped brain-area-weighted mean against the mean of the most
   suspicious slices, on all brain3d cases and on TCGA's tumour-free slab (the slices more
   than 5 mm below the tumour).

Writes report.json and a few PNGs (what the model sees) to --out.

    python scripts/research/evaluate_classifier.py --out runs/classifier-eval
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ClinicalFMambaLib.clinical.classifier import classify_images, load_classifier
from ClinicalFMambaLib.clinical.heatmaps import heatmap_overlay
from ClinicalFMambaLib.clinical.images import prepare_image, read_image, window
from ClinicalFMambaLib.clinical.volume_verdict import classify_volume
from ClinicalFMambaLib.clinical.volumes import prepare_volume, read_volume
from ClinicalFMambaLib.training.classifier_datasets import list_class_folders
from ClinicalFMambaLib.training.classifier_training import classification_metrics, roc_auc

CONTRASTS = ("t1", "t1c", "t2", "flair")


def evaluate_testing(model, testing: Path) -> dict:
    paths, labels, classes = list_class_folders(testing)
    if classes != model.classes:
        raise ValueError(f"Testing classes {classes} differ from the model's {model.classes}")
    probs = np.concatenate([classify_images(model, [read_image(p) for p in paths[i:i + 64]])
                            for i in range(0, len(paths), 64)])
    report = classification_metrics(labels, probs, classes)
    report["misclassified"] = [
        {"file": str(paths[i].relative_to(testing)), "predicted": classes[int(probs[i].argmax())]}
        for i in np.flatnonzero(probs.argmax(1) != labels)]
    return report


def top_slices_tumour(slice_probs: np.ndarray, eligible: np.ndarray, no_tumour: int) -> float:
    """The rejected alternative aggregation: mean tumour probability of the most suspicious
    eligible slices (top 10%, at least 3)."""
    tumour = np.sort(1 - slice_probs[eligible, no_tumour])[::-1]
    return float(tumour[:max(3, int(np.ceil(0.1 * len(tumour))))].mean())


def aggregations(result, no_tumour: int) -> dict:
    """Volume tumour probability by the shipped rule and by the alternative."""
    return {"area_weighted_mean": float(1 - result.probabilities[no_tumour]),
            "top_slices": top_slices_tumour(result.slice_probabilities, result.eligible,
                                            no_tumour)}


def slice_check(model, volume: np.ndarray, direction, spacing, seg: np.ndarray, name: str
                ) -> dict:
    result = classify_volume(model, volume, direction=direction, spacing=spacing)
    no_tumour = model.no_tumour_index
    tumour_prob = 1 - result.slice_probabilities[:, no_tumour]
    has_tumour = (seg > 0).any(axis=(1, 2))
    has_brain = result.brain_area > 0
    z_index = np.arange(len(has_brain))
    inside = seg > 0
    heat = result.heatmap
    tumour_slices = np.flatnonzero(has_tumour & result.eligible)
    peaks = [np.unravel_index(np.argmax(heat[z]), heat[z].shape) for z in tumour_slices
             if heat[z].max() > 0]
    # In-plane distance (voxels = mm in brain3d) from each heatmap peak to the segmentation.
    distance = [ndimage.distance_transform_edt(~inside[z])[peak]
                for z, peak in zip(tumour_slices, peaks)]
    brain = prepare_volume(volume, model.input_size, direction).mask
    return {
        "input": name,
        "volume_prediction": result.prediction,
        "volume_probabilities": dict(zip(model.classes, map(float, result.probabilities))),
        "heatmap_class": result.heatmap_class,
        "slices_with_brain": int(has_brain.sum()),
        "slices_with_tumour": int(has_tumour.sum()),
        "slice_auc_brain_slices": roc_auc(has_tumour[has_brain], tumour_prob[has_brain]),
        "slice_auc_eligible_slices": roc_auc(has_tumour[result.eligible],
                                             tumour_prob[result.eligible]),
        # Post hoc breakdown: TCGA-DU-7294's posterior fossa and skull base lie below axial
        # slice 60 (read off the per-slice table); the false positives concentrate there.
        "slice_auc_slices_from_z60": roc_auc(has_tumour[has_brain & (z_index >= 60)],
                                             tumour_prob[has_brain & (z_index >= 60)]),
        "mean_tumour_prob_below_z60": float(tumour_prob[has_brain & (z_index < 60)].mean()),
        "mean_tumour_prob_tumour_slices": float(tumour_prob[has_tumour].mean()),
        "mean_tumour_prob_other_brain_slices": float(tumour_prob[has_brain & ~has_tumour].mean()),
        # Share of all heatmap mass that lies inside the segmentation, and the share of the
        # brain the segmentation covers (what a uniform heatmap would score).
        "heatmap_mass_inside_seg": float(heat[inside].sum() / max(heat.sum(), 1e-12)),
        "chance_level_seg_share_of_brain": float(inside.sum() / brain.sum()),
        "heatmap_mass_inside_seg_tumour_slices": float(
            heat[tumour_slices][inside[tumour_slices]].sum()
            / max(heat[tumour_slices].sum(), 1e-12)),
        "chance_level_tumour_slices": float(inside[tumour_slices].sum()
                                            / brain[tumour_slices].sum()),
        "heatmap_peak_inside_seg_rate": float(np.mean(np.equal(distance, 0))),
        "heatmap_peak_within_10mm_rate": float(np.mean(np.less_equal(distance, 10))),
        "heatmap_peak_median_distance_mm": float(np.median(distance)),
        "aggregation": aggregations(result, no_tumour),
        "_result": result,
    }


def tumour_free_slab(model, volume: np.ndarray, direction, spacing, seg: np.ndarray) -> dict:
    z = np.flatnonzero((seg > 0).any(axis=(1, 2)))
    slabs = {"below": volume[: max(z.min() - 5, 0)], "above": volume[z.max() + 6:]}
    report = {}
    for side, slab in slabs.items():
        if slab.shape[0] < 10:
            continue
        try:
            result = classify_volume(model, slab, direction=direction, spacing=spacing,
                                     heatmap=False)
        except ValueError as error:  # e.g. the slab above the tumour holds no brain
            report[side] = {"slices": int(slab.shape[0]), "skipped": str(error)}
            continue
        report[side] = {"slices": int(slab.shape[0]),
                        **aggregations(result, model.no_tumour_index)}
    return report


def save_model_view(model, volume, direction, testing: Path, out: Path, name: str) -> None:
    """Axial slices as the model sees them, next to training-style JPEGs of each class."""
    slices = prepare_volume(volume, model.input_size, direction)
    eligible = np.flatnonzero(slices.brain_area >= 0.25 * slices.brain_area.max())
    picks = eligible[np.linspace(0, len(eligible) - 1, 4).round().astype(int)]
    row1 = np.concatenate([slices.images[z] for z in picks], 1)
    jpegs = [sorted((testing / c).glob("*.jpg"))[0] for c in model.classes]
    row2 = np.concatenate([prepare_image(read_image(p), model.input_size)[0] for p in jpegs], 1)
    grid = np.round(255 * np.concatenate([row1, row2], 0)).astype(np.uint8)
    Image.fromarray(grid).save(out / f"model_view_{name}.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--fused", type=Path, default=None,
                        help="a fused TCGA-DU-7294 volume on the case's grid to check as well")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "classifier-eval")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_classifier(args.model)
    started = time.time()
    report = {"model": str(args.model or "bundled classifier2d.safetensors")}

    report["testing"] = evaluate_testing(model, args.data / "tumor-mri" / "Testing")
    t = report["testing"]
    print(f"Testing: accuracy {t['accuracy']:.4f}  macro-F1 {t['macro_f1']:.4f}  AUC "
          + " ".join(f"{c} {v['auc']:.4f}" for c, v in t["per_class"].items()), flush=True)
    print(f"confusion (rows true, cols predicted; {t['classes']}): {t['confusion']}", flush=True)

    case = args.data / "brain3d" / "TCGA-DU-7294"
    seg = read_volume(case / "tumor_seg.nii.gz")[0]
    volumes = {}
    for contrast in CONTRASTS:
        volumes[contrast] = read_volume(case / f"{contrast}.nii.gz")
    geometry = volumes["flair"][1:]
    t2, flair = (volumes[c][0].astype(np.float32) for c in ("t2", "flair"))
    brain = (t2 != 0) | (flair != 0)
    volumes["max(t2, flair) stand-in"] = (np.maximum(window(t2, brain), window(flair, brain))
                                          * brain, *geometry)
    if args.fused is not None:
        volumes[f"fused: {args.fused.name}"] = read_volume(args.fused)
    report["tcga_slices"] = []
    for name, (volume, vol_direction, vol_spacing) in volumes.items():
        check = slice_check(model, volume, vol_direction, vol_spacing, seg, name)
        result = check.pop("_result")
        report["tcga_slices"].append(check)
        print(f"TCGA {name}: slice AUC {check['slice_auc_brain_slices']:.3f} (eligible "
              f"{check['slice_auc_eligible_slices']:.3f}, from z 60 "
              f"{check['slice_auc_slices_from_z60']:.3f}), heatmap inside seg "
              f"{check['heatmap_mass_inside_seg']:.3f} (chance "
              f"{check['chance_level_seg_share_of_brain']:.3f}), on tumour slices "
              f"{check['heatmap_mass_inside_seg_tumour_slices']:.3f} (chance "
              f"{check['chance_level_tumour_slices']:.3f}), peak inside "
              f"{check['heatmap_peak_inside_seg_rate']:.2f} / within 10 mm "
              f"{check['heatmap_peak_within_10mm_rate']:.2f}, verdict "
              f"{check['volume_prediction']}", flush=True)
        if name == "flair":
            z = int(np.argmax((seg > 0).sum(axis=(1, 2))))
            overlay = heatmap_overlay(volume[z].astype(np.float32), result.heatmap[z])
            outline = (seg[z] > 0) & ~ndimage.binary_erosion(seg[z] > 0)
            overlay[outline] = (0, 255, 0)
            Image.fromarray(overlay).save(args.out / "tcga_flair_heatmap.png")
            save_model_view(model, volume, vol_direction, args.data / "tumor-mri" / "Training",
                            args.out, "tcga_flair")

    report["aggregation"] = {}
    for name in ("AURORA", "BraTS-GLI-00001-000", "TCGA-DU-7294"):
        entry = {}
        for contrast in CONTRASTS:
            volume, vol_direction, vol_spacing = read_volume(
                args.data / "brain3d" / name / f"{contrast}.nii.gz")
            result = classify_volume(model, volume, direction=vol_direction,
                                     spacing=vol_spacing, heatmap=False)
            entry[contrast] = {"prediction": result.prediction,
                               **aggregations(result, model.no_tumour_index)}
        report["aggregation"][name] = entry
    report["aggregation"]["TCGA-DU-7294 tumour-free slabs"] = {
        contrast: tumour_free_slab(model, *volumes[contrast], seg) for contrast in CONTRASTS}
    print(json.dumps(report["aggregation"], indent=1), flush=True)
    report["seconds"] = round(time.time() - started, 1)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
