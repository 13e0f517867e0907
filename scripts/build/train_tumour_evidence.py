"""Train the tumour-evidence network leave-one-case-out, calibrate it, train the bundled
model on every labelled case, and report every fold beside the classical anchors.

    python scripts/build/train_tumour_evidence.py --steps 1200 --batch-size 15 --carvemix 0.15 \\
        --synthetic 0.2 --output Resources/weights/tumour_evidence.safetensors \\
        --report runs/tumour-evidence

For each brain3d case with a tumour segmentation: a network trained on the other labelled
cases predicts every contrast and fused pair of it (slice AUC, heatmap share inside the
tumour, peak distance, volume verdict), next to the FLAIR asymmetry anchors. The
out-of-fold slices fit the calibration, a logistic function of two classical cues of the input
slice: its bright-voxel asymmetry and its share of one-sided bright pixels, each smoothed along
the slices (``--slice-smoothing-mm``; reliability table and ECE reported). Each cue's slice
AUC alone, the network's slice score's, and those of calibrations fitted without the held-out
case, at several smoothings and with the network's score as a third feature, are reported
beside it.
Cases without a segmentation (BraTS-GLI-00001-000) train every model with the pseudo mask
of their FLAIR (``--no-pseudo-labels`` leaves them out); they are also predicted by every
model, which is then no independent check. The pseudo masks of the labelled cases are
compared with their segmentations in the report.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ClinicalFMambaLib.clinical.asymmetry import asymmetry_scores, bright_heatmap
from ClinicalFMambaLib.clinical.tumour_evidence import (ASYMMETRY_OFFSET, NO_TUMOUR_AT, TUMOUR_AT,
                                                        VOLUME_RANK, SliceEvidence, TumourEvidence,
                                                        calibrated, slice_features, tumour_verdict,
                                                        volume_evidence, volume_tumour_probability)
from ClinicalFMambaLib.clinical.volumes import brain_mask
from ClinicalFMambaLib.io.weights import save_weights
from ClinicalFMambaLib.networks.tumour_net import DEFAULT_SEG_ARCH, TumourSegNet
from ClinicalFMambaLib.training.classifier_training import roc_auc
from ClinicalFMambaLib.training.tumour_labels import (SEGMENTATION_NAME, flair_lesion_mask,
                                                      read_array, unknown_ring)
from ClinicalFMambaLib.training.tumour_training import (SlicePool, case_images, case_slices,
                                                        jpeg_negatives, train_seg)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
RELIABILITY_BINS = 10


def logistic_fit(features: np.ndarray, labels: np.ndarray, steps: int = 2000) -> list[float]:
    """Weights and bias of p = sigmoid(features @ w + b), by L-BFGS on the log loss."""
    x = torch.tensor(features, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    params = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([params], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ params[:-1] + params[-1],
                                                                    y)
        loss.backward()
        return loss

    optimiser.step(closure)
    return [float(v) for v in params.detach()]


def reliability(probabilities: np.ndarray, labels: np.ndarray) -> tuple[list[dict], float]:
    """Equal-width bins: count, mean predicted, observed rate; expected calibration error."""
    edges = np.linspace(0, 1, RELIABILITY_BINS + 1)
    rows, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (probabilities >= lo) & ((probabilities < hi) | (hi == 1.0))
        if inside.any():
            predicted, observed = probabilities[inside].mean(), labels[inside].mean()
            ece += inside.mean() * abs(predicted - observed)
            rows.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(inside.sum()),
                         "predicted": round(float(predicted), 3),
                         "observed": round(float(observed), 3)})
    return rows, float(ece)


def heatmap_numbers(heat: np.ndarray, tumour: np.ndarray, spacing: tuple[float, ...]) -> dict:
    """Share of the heatmap's mass inside the tumour on tumour slices; in-plane distance
    (mm) from each tumour slice's heatmap peak to the tumour."""
    on = tumour.any(axis=(1, 2))
    share = float((heat[on] * tumour[on]).sum() / max(heat[on].sum(), 1e-12))
    distances = []
    for z in np.flatnonzero(on):
        if heat[z].max() <= 0:
            continue
        peak = np.unravel_index(np.argmax(heat[z]), heat[z].shape)
        field = ndimage.distance_transform_edt(~tumour[z], sampling=(spacing[1], spacing[0]))
        distances.append(field[peak])
    return {"inside_share": share,
            "peak_median_mm": float(np.median(distances)) if distances else None,
            "peak_within_10mm": float(np.mean(np.array(distances) <= 10)) if distances else None}


SMOOTHING_SWEEP_MM = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)


@dataclass
class OutOfFold:
    """A held-out image through its fold's network: the evidence, and the tumour label and
    brain of each slice."""
    result: SliceEvidence
    labels: np.ndarray
    brain: np.ndarray

    def features(self, smoothing_mm: float) -> np.ndarray:
        """Calibration features of its brain slices at a smoothing of ``smoothing_mm``."""
        return slice_features(self.result.asymmetry, self.result.one_sided, smoothing_mm,
                              self.result.slice_spacing)[self.brain]


def out_of_fold_evidence(evidence: TumourEvidence, case: Path) -> dict[str, OutOfFold]:
    """Every image of a labelled case through ``evidence`` (its fold's network)."""
    tumour = read_array(case / SEGMENTATION_NAME) > 0
    found = {}
    for kind, image in case_images(case).items():
        result = volume_evidence(evidence, sitk.GetArrayFromImage(image), image.GetDirection(),
                                 spacing=image.GetSpacing())
        brain = result.brain_area > 0
        found[kind] = OutOfFold(result, tumour.any(axis=(1, 2))[brain], brain)
    return found


def nested_fit(out_of_fold: dict[str, dict[str, OutOfFold]], held_out: str,
               smoothing_mm: float, with_score: bool = False) -> list[float]:
    """Calibration fitted on the other cases' out-of-fold slices only."""
    others = [o for name, images in out_of_fold.items() if name != held_out
              for o in images.values()]
    features = [o.features(smoothing_mm) for o in others]
    if with_score:
        features = [np.column_stack([o.result.logits[o.brain], f])
                    for o, f in zip(others, features)]
    return logistic_fit(np.concatenate(features), np.concatenate([o.labels for o in others]))


def feature_ablation(out_of_fold: dict[str, dict[str, OutOfFold]], smoothing_mm: float
                     ) -> dict:
    """Per held-out case and image, the slice AUC of the network's score and of each
    calibration feature alone (at ``smoothing_mm``), of a nested calibration (fitted on the
    other cases' out-of-fold slices only; the bundled one also sees the held-out case's) at
    each smoothing of SMOOTHING_SWEEP_MM, and of a nested calibration that also takes the
    network's score (the alternative not kept)."""
    rows = {}
    for held_out, images in out_of_fold.items():
        nested = {mm: nested_fit(out_of_fold, held_out, mm)
                  for mm in {*SMOOTHING_SWEEP_MM, smoothing_mm}}
        with_score = nested_fit(out_of_fold, held_out, smoothing_mm, with_score=True)
        rows[held_out] = {}
        for kind, o in images.items():
            features = o.features(smoothing_mm)
            scores = o.result.logits[o.brain]
            rows[held_out][kind] = {
                "network_score_alone": roc_auc(o.labels, scores),
                "asymmetry_alone": roc_auc(o.labels, features[:, 0]),
                "one_sided_alone": roc_auc(o.labels, features[:, 1]),
                "nested_calibration": roc_auc(o.labels, calibrated(features,
                                                                   nested[smoothing_mm])),
                "nested_by_smoothing_mm": {
                    f"{mm:g}": roc_auc(o.labels, calibrated(o.features(mm), nested[mm]))
                    for mm in SMOOTHING_SWEEP_MM},
                "nested_with_network_score": roc_auc(o.labels, calibrated(
                    np.column_stack([scores, features]), with_score))}
    return rows


def case_row(result: SliceEvidence, image: sitk.Image, tumour: np.ndarray | None) -> dict:
    """Volume verdict and, for a labelled case, slice AUC and heatmap numbers of one image."""
    probability = volume_tumour_probability(result.probabilities, result.eligible)
    row = {"volume_probability": probability, "verdict": tumour_verdict(probability)}
    if tumour is not None:
        brain = result.brain_area > 0
        row["slice_auc"] = roc_auc(tumour.any(axis=(1, 2))[brain], result.probabilities[brain])
        row.update(heatmap_numbers(result.heatmap, tumour, image.GetSpacing()))
    return row


def evaluate_case(evidence: TumourEvidence, case: Path,
                  out_of_fold: dict[str, OutOfFold] | None = None) -> dict:
    """Every image of a case through ``evidence``, and the anchors on its FLAIR. With the
    case's ``out_of_fold`` evidence (same network), its cues are recalibrated instead of the
    images being run again."""
    labelled = (case / SEGMENTATION_NAME).exists()
    tumour = read_array(case / SEGMENTATION_NAME) > 0 if labelled else None
    rows = {}
    for kind, image in case_images(case).items():
        if out_of_fold is not None:
            result = out_of_fold[kind].result
            result = replace(result, probabilities=evidence.calibrate(
                result.asymmetry, result.one_sided, result.slice_spacing))
        else:
            result = volume_evidence(evidence, sitk.GetArrayFromImage(image),
                                     image.GetDirection(), spacing=image.GetSpacing())
        rows[kind] = case_row(result, image, tumour)
    if labelled:
        flair = read_array(case / "flair.nii.gz").astype(np.float32)
        brain = brain_mask(flair)
        has = tumour.any(axis=(1, 2))
        with_brain = brain.any(axis=(1, 2))
        rows["anchor (FLAIR asymmetry)"] = {
            "slice_auc": roc_auc(has[with_brain], asymmetry_scores(flair, brain)[with_brain]),
            **heatmap_numbers(bright_heatmap(flair, brain) * brain, tumour,
                              sitk.ReadImage(str(case / "flair.nii.gz")).GetSpacing())}
    return rows


def pseudo_mask_quality(case: Path) -> dict:
    """How the FLAIR pseudo mask of a labelled case compares with its segmentation."""
    flair = read_array(case / "flair.nii.gz")
    mask = flair_lesion_mask(flair, brain_mask(flair))
    tumour = read_array(case / SEGMENTATION_NAME) > 0
    on_mask, on_tumour = mask.any(axis=(1, 2)), tumour.any(axis=(1, 2))
    return {"dice": float(2 * (mask & tumour).sum() / (mask.sum() + tumour.sum())),
            "precision": float((mask & tumour).sum() / max(mask.sum(), 1)),
            "tumour_covered_with_unknown_ring":
                float(((mask | unknown_ring(mask)) & tumour).sum() / tumour.sum()),
            "tumour_slices": int(on_tumour.sum()), "pseudo_slices": int(on_mask.sum()),
            "pseudo_slices_with_tumour": int((on_mask & on_tumour).sum())}


def train_on(data: Path, names: list[str], steps: int, batch_size: int, size: int,
             threads: int, carvemix: float, synthetic: float, seed: int
             ) -> dict[str, torch.Tensor]:
    """Weights of a network trained on the named labelled cases (runs in its own process)."""
    torch.set_num_threads(threads)
    negatives = jpeg_negatives(data / "tumor-mri" / "Training", size)
    pool = SlicePool([v for name in names for v in case_slices(data / "brain3d" / name, size)])
    log = lambda line: print(f"[{'+'.join(names)}] {line}", flush=True)  # noqa: E731
    return train_seg(pool, negatives, steps, batch_size, carvemix=carvemix, synthetic=synthetic,
                     seed=seed, log=log).state_dict()


def markdown(report: dict) -> str:
    """The report's tables: every leave-one-case-out fold beside the anchors, calibration."""
    def number(value, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = ["| held-out case | input | slice AUC | heatmap share in tumour (tumour slices) "
             "| peak ≤ 10 mm | median peak distance, mm | volume P(tumour) | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for held_out, cases in report["leave_one_case_out"].items():
        for kind, row in cases[held_out].items():
            lines.append(f"| {held_out} | {kind} | {number(row.get('slice_auc'))} | "
                         f"{number(row.get('inside_share'))} | "
                         f"{number(row.get('peak_within_10mm'), 2)} | "
                         f"{number(row.get('peak_median_mm'), 1)} | "
                         f"{number(row.get('volume_probability'), 2)} | "
                         f"{row.get('verdict', '–')} |")
    lines += ["", "Slice AUC by feature (out-of-fold): the network's score and each "
              "calibration feature alone, the calibration fitted without the held-out case "
              "(nested), and the same with the network's score as a third feature.",
              "", "| held-out case | input | network score alone | asymmetry alone "
              "| one-sided share alone | nested calibration | nested, with the network's score |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for held_out, images in report["feature_ablation"].items():
        for kind, row in images.items():
            lines.append(f"| {held_out} | {kind} | {row['network_score_alone']:.3f} | "
                         f"{row['asymmetry_alone']:.3f} | {row['one_sided_alone']:.3f} | "
                         f"{row['nested_calibration']:.3f} | "
                         f"{row['nested_with_network_score']:.3f} |")
    sweep = list(next(iter(next(iter(report["feature_ablation"].values())).values()))
                 ["nested_by_smoothing_mm"])
    lines += ["", "Nested calibration's slice AUC by the smoothing of the cues along the "
              f"slices (sigma, mm; bundled: {report['slice_smoothing_mm']:g}).", "",
              "| held-out case | input | " + " | ".join(f"{mm} mm" for mm in sweep) + " |",
              "| --- | --- | " + " | ".join("---" for _ in sweep) + " |"]
    for held_out, images in report["feature_ablation"].items():
        for kind, row in images.items():
            lines.append(f"| {held_out} | {kind} | " + " | ".join(
                f"{row['nested_by_smoothing_mm'][mm]:.3f}" for mm in sweep) + " |")
    lines += ["", "| labelled case | pseudo mask Dice | precision | tumour inside mask + ring "
              "| tumour slices | pseudo-mask slices | of which tumour |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for case, q in report["pseudo_mask_against_segmentation"].items():
        lines.append(f"| {case} | {q['dice']:.3f} | {q['precision']:.3f} | "
                     f"{q['tumour_covered_with_unknown_ring']:.3f} | {q['tumour_slices']} | "
                     f"{q['pseudo_slices']} | {q['pseudo_slices_with_tumour']} |")
    trained = ", ".join(report["pseudo_labelled_training_cases"]) or "none"
    lines += ["", f"Trained on with pseudo masks: {trained}.", "",
              "| model | unlabelled case | input | volume P(tumour) | verdict |",
              "| --- | --- | --- | --- | --- |"]
    models = {f"fold without {k}": v for k, v in report["leave_one_case_out"].items()}
    models["bundled (all labelled cases)"] = report["final_model_on_unlabelled_cases"]
    for model, cases in models.items():
        for case, rows in cases.items():
            if case in report["leave_one_case_out"]:
                continue
            for kind, row in rows.items():
                lines.append(f"| {model} | {case} | {kind} | "
                             f"{number(row['volume_probability'], 2)} | {row['verdict']} |")
    w_asymmetry, w_one_sided, bias = report["calibration"]
    lines += ["", "Calibration (logistic, on the out-of-fold slices): p = sigmoid("
              f"{w_asymmetry:.3f} * log(asymmetry + {ASYMMETRY_OFFSET:g}) + {w_one_sided:.3f} "
              f"* log(one-sided share + {ASYMMETRY_OFFSET:g}) + {bias:.3f}), each log "
              f"smoothed along the slices by a Gaussian of {report['slice_smoothing_mm']:g} mm; "
              f"ECE {report['ece']:.3f}.", "",
              "| predicted | slices | mean predicted | observed tumour rate |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {r['bin']} | {r['n']} | {r['predicted']:.3f} | {r['observed']:.3f} |"
              for r in report["reliability"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--steps", type=int, default=1200, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=15)
    parser.add_argument("--size", type=int, default=96, help="slice size the network sees")
    parser.add_argument("--threads", type=int, default=1, help="threads per training process")
    parser.add_argument("--jobs", type=int, default=3,
                        help="networks trained at once (the folds and the final model)")
    parser.add_argument("--carvemix", type=float, default=0.15,
                        help="share of tumour-free training slices given a pasted real tumour")
    parser.add_argument("--synthetic", type=float, default=0.2,
                        help="share of tumour-free training slices given a synthetic lesion")
    parser.add_argument("--seed", type=int, default=0, help="seed of every training run")
    parser.add_argument("--slice-smoothing-mm", type=float, default=2.0,
                        help="sigma (mm along the slices) of the Gaussian that smooths the "
                             "calibration's cues")
    parser.add_argument("--no-pseudo-labels", action="store_true",
                        help="leave out the cases without a segmentation (otherwise every "
                             "model also trains on their FLAIR pseudo masks)")
    parser.add_argument("--output", type=Path, required=True, help="weights of the final model")
    parser.add_argument("--report", type=Path, required=True, help="folder for report.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    cases = sorted(p for p in (args.data / "brain3d").iterdir() if p.is_dir())
    labelled = [c for c in cases if (c / SEGMENTATION_NAME).exists()]
    for case in labelled:  # the fused inputs are made (and cached) once, before the workers
        case_images(case)
    config = {"model": "TumourSegNet", "arch": DEFAULT_SEG_ARCH, "input_size": args.size,
              "calibration": [1.0, 0.0, 0.0],  # fitted below
              "slice_smoothing_mm": args.slice_smoothing_mm}
    unlabelled = [c for c in cases if c not in labelled]
    pseudo = [] if args.no_pseudo_labels else [c.name for c in unlabelled]
    for case in unlabelled:
        case_images(case)
    plans = {held_out.name: [c.name for c in labelled if c != held_out] + pseudo
             for held_out in labelled}
    plans["final"] = [c.name for c in labelled] + pseudo
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {key: pool.submit(train_on, args.data, names, args.steps, args.batch_size,
                                    args.size, args.threads, args.carvemix, args.synthetic,
                                    args.seed)
                   for key, names in plans.items()}
        nets = {}
        for key, future in futures.items():
            nets[key] = TumourSegNet(DEFAULT_SEG_ARCH["widths"])
            nets[key].load_state_dict(future.result())
            nets[key].eval()
    print(f"trained {list(nets)} ({time.time() - start:.0f} s)", flush=True)
    args.report.mkdir(parents=True, exist_ok=True)
    for key, net in nets.items():  # the fold models, for later checks
        torch.save(net.state_dict(), args.report / f"net_{key}.pt")
    final = nets.pop("final")
    fold_nets = nets
    out_of_fold = {held_out.name: out_of_fold_evidence(
        TumourEvidence(fold_nets[held_out.name], config), held_out) for held_out in labelled}
    every = [o for images in out_of_fold.values() for o in images.values()]
    features = np.concatenate([o.features(args.slice_smoothing_mm) for o in every])
    labels = np.concatenate([o.labels for o in every])
    config["calibration"] = logistic_fit(features, labels)
    table, ece = reliability(calibrated(features, config["calibration"]), labels.astype(float))
    print(f"calibration {config['calibration']}, ECE {ece:.3f}", flush=True)
    folds = {name: {c.name: evaluate_case(TumourEvidence(net, config), c,
                                          out_of_fold.get(c.name))
                    for c in [args.data / "brain3d" / name] + unlabelled}
             for name, net in fold_nets.items()}
    final_rows = {c.name: evaluate_case(TumourEvidence(final, config), c) for c in unlabelled}
    command = "python scripts/build/train_tumour_evidence.py " + " ".join(argv or sys.argv[1:])
    report = {"command": command, "pseudo_labelled_training_cases": pseudo,
              "pseudo_mask_against_segmentation": {c.name: pseudo_mask_quality(c)
                                                   for c in labelled},
              "calibration": config["calibration"],
              "reliability": table, "ece": ece, "leave_one_case_out": folds,
              "slice_smoothing_mm": args.slice_smoothing_mm,
              "feature_ablation": feature_ablation(out_of_fold, args.slice_smoothing_mm),
              "final_model_on_unlabelled_cases": final_rows,
              "rule": {"volume_rank": VOLUME_RANK, "tumour_at": TUMOUR_AT,
                       "no_tumour_at": NO_TUMOUR_AT},
              "seconds": round(time.time() - start)}
    args.report.mkdir(parents=True, exist_ok=True)
    (args.report / "report.json").write_text(json.dumps(report, indent=1))
    (args.report / "report.md").write_text(markdown(report), encoding="utf-8")
    save_weights(final.state_dict(), args.output, config,
                 {"command": command, "ece": ece,
                  "trained_on": [c.name for c in labelled] + pseudo,
                  "leave_one_case_out_slice_auc": {
                      name: {kind: row.get("slice_auc") for kind, row in rows[name].items()}
                      for name, rows in folds.items()}})
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
