"""What the compact storage of the bundled classifier and scope guard changes
(``scripts/build/compact_weights.py``: the classifier's tensors in float16, the guard's
precision as its packed float16 Cholesky factor).

The float32 files of a commit before the change, verified against that commit's manifest,
are compared with the bundled compact files, both through the public API with the bundled
tumour-evidence network: the Testing JPEGs as ``classify`` reads them (predictions,
accuracy, refusals), the validation split of classifier2d.md, every brain3d volume (its
verdict; the classifier's class and the refusal of each eligible axial slice), the pictures
that are not brain MRI of ``fit_scope_guard.py``, the scope guard's distances (also of the
compact guard alone, on the float32 classifier's features) and the file sizes. Prints a
Markdown table.

    python scripts/research/weight_storage.py      # about 20 min on one thread
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "build"))

from fit_scope_guard import not_brain_images

from ClinicalFMambaLib.clinical.classifier import (BUNDLED_GUARD, BUNDLED_NAME, Classifier,
                                                   classify_image, load_classifier,
                                                   prepared_probabilities, scope_decisions,
                                                   scope_features)
from ClinicalFMambaLib.clinical.images import prepare_image, read_image
from ClinicalFMambaLib.clinical.scope_guard import ScopeGuard, load_scope_guard
from ClinicalFMambaLib.clinical.tumour_evidence import load_tumour_evidence
from ClinicalFMambaLib.clinical.volume_verdict import VolumeResult, classify_volume
from ClinicalFMambaLib.clinical.volumes import MIN_BRAIN_FRACTION, prepare_volume, read_volume
from ClinicalFMambaLib.io.weights import MANIFEST_NAME, bundled
from ClinicalFMambaLib.training.classifier_datasets import (list_class_folders, load_images,
                                                            stratified_split)

DATA = ROOT.parent / "shared" / "data"
FLOAT32_COMMIT = "33c3b97"
CONTRASTS = ("t1", "t1c", "t2", "flair")


def float32_model(folder: Path, commit: str) -> Classifier:
    """The classifier and scope guard bundled at ``commit``, written to ``folder`` with that
    commit's manifest and loaded from there (verified), with the bundled evidence network."""
    for name in (BUNDLED_NAME, BUNDLED_GUARD, MANIFEST_NAME):
        shown = subprocess.run(["git", "show", f"{commit}:Resources/weights/{name}"], cwd=ROOT,
                               capture_output=True, check=True)
        (folder / name).write_bytes(shown.stdout)
    model = load_classifier(folder / BUNDLED_NAME, companions=False)
    return dataclasses.replace(model, guard=load_scope_guard(folder / BUNDLED_GUARD),
                               evidence=load_tumour_evidence())


@dataclasses.dataclass
class Scope:
    """One model's scope decisions on a set of prepared images and the guard's features."""

    in_scope: np.ndarray    # (N,) bool
    features: torch.Tensor  # (N, D) feature summaries (``scope_features``)


def image_set(model: Classifier, images: list[np.ndarray]) -> tuple[np.ndarray, Scope]:
    """Probabilities (N, C) and scope of 2D images, as ``classify_image`` gives them."""
    results = [classify_image(model, image) for image in images]
    prepared = np.stack([prepare_image(image, model.input_size)[0] for image in images])
    return (np.stack([result.probabilities for result in results]),
            Scope(np.array([result.in_scope for result in results]),
                  scope_features(model, prepared)))


def volume_set(model: Classifier, paths: list[Path]
               ) -> tuple[list[VolumeResult], np.ndarray, Scope]:
    """The volumes' verdicts, and the classifier's probabilities (N, C) and the scope of their
    eligible axial slices (as ``classify_volume`` decides a volume's scope)."""
    results, probabilities, in_scope, features = [], [], [], []
    for path in paths:
        volume, direction, spacing = read_volume(path)
        results.append(classify_volume(model, volume, direction=direction, spacing=spacing,
                                       heatmap=False))
        slices = prepare_volume(volume, model.input_size, direction, spacing=spacing)
        images = slices.images[slices.brain_area >= MIN_BRAIN_FRACTION * slices.brain_area.max()]
        probabilities.append(prepared_probabilities(model, images))
        summary = scope_features(model, images)
        in_scope.append(scope_decisions(model, images, summary)[0])
        features.append(summary)
    return (results, np.concatenate(probabilities),
            Scope(np.concatenate(in_scope), torch.cat(features)))


def distances(guard: ScopeGuard, features: torch.Tensor) -> np.ndarray:
    return guard.distances(features).double().numpy()


def agreement(first: np.ndarray, second: np.ndarray, what: str) -> str:
    return f"{(first == second).sum()}/{len(first)} {what}"


def counts(names: np.ndarray) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(Counter(names).items()))


def table(rows: list[tuple]) -> str:
    lines = ["| check | n | float32 files | compact files | same | largest change |",
             "| --- | --- | --- | --- | --- | --- |"]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--float32-commit", default=FLOAT32_COMMIT,
                        help="a commit whose bundled classifier and guard are float32")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()

    def done(step: str) -> None:
        print(f"{step}: {time.time() - start:.0f} s", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as folder:
        models = {"float32": float32_model(Path(folder), args.float32_commit),
                  "compact": load_classifier()}
        sizes = {"float32": [(Path(folder) / name).stat().st_size
                             for name in (BUNDLED_NAME, BUNDLED_GUARD)],
                 "compact": [bundled(name).stat().st_size
                             for name in (BUNDLED_NAME, BUNDLED_GUARD)]}
    size = models["compact"].input_size

    paths, test_labels, _ = list_class_folders(args.data / "tumor-mri" / "Testing")
    images = [read_image(path, grey=False) for path in paths]
    testing = {name: image_set(model, images) for name, model in models.items()}
    done("Testing JPEGs")
    train_paths, train_labels, _ = list_class_folders(args.data / "tumor-mri" / "Training")
    _, val_idx = stratified_split(train_labels, 0.1, 0)
    val_images = load_images([train_paths[i] for i in val_idx], size, progress=False) / 255.0
    validation = {name: prepared_probabilities(model, val_images)
                  for name, model in models.items()}
    done("validation split")
    cases = sorted(path for path in (args.data / "brain3d").iterdir() if path.is_dir())
    volume_paths = [case / f"{contrast}.nii.gz" for case in cases for contrast in CONTRASTS]
    volumes = {name: volume_set(model, volume_paths) for name, model in models.items()}
    done("brain3d volumes")
    pictures = list(not_brain_images().values())
    others = {name: image_set(model, pictures) for name, model in models.items()}
    done("not brain MRI")

    rows = []
    for name, truth, probs in (("Testing JPEGs: accuracy", test_labels,
                                {k: v[0] for k, v in testing.items()}),
                               ("validation split: accuracy", train_labels[val_idx],
                                validation)):
        predicted = {k: v.argmax(1) for k, v in probs.items()}
        rows.append((name, len(truth), *(f"{(predicted[k] == truth).mean():.4f}"
                                         for k in models),
                     agreement(predicted["float32"], predicted["compact"], "predictions"),
                     f"{np.abs(probs['float32'] - probs['compact']).max():.1e} probability"))
    classes = np.array(models["compact"].classes)
    slice_probs = {k: v[1] for k, v in volumes.items()}
    slice_classes = {k: classes[v.argmax(1)] for k, v in slice_probs.items()}
    rows.append(("brain3d eligible slices: classifier's class", len(slice_classes["float32"]),
                 *(counts(slice_classes[k]) for k in models),
                 agreement(slice_classes["float32"], slice_classes["compact"], "predictions"),
                 f"{np.abs(slice_probs['float32'] - slice_probs['compact']).max():.1e}"
                 " probability"))

    results = {k: v[0] for k, v in volumes.items()}
    verdicts = {k: np.array([str(r.prediction) for r in v]) for k, v in results.items()}
    change = max(np.abs(a.probabilities - b.probabilities).max()
                 for a, b in zip(results["float32"], results["compact"]))
    rows.append((f"brain3d volumes ({len(cases)} cases × {', '.join(CONTRASTS)}): verdict",
                 len(volume_paths),
                 *(counts(verdicts[k]) for k in models),
                 agreement(verdicts["float32"], verdicts["compact"], "verdicts"),
                 f"{change:.1e} volume probability"))

    guards = {k: model.guard for k, model in models.items()}
    threshold = guards["float32"].threshold
    margins = []
    for name, runs in (("Testing JPEGs", testing), ("brain3d eligible slices", volumes),
                       ("not brain MRI", others)):
        sets = {k: v[-1] for k, v in runs.items()}
        dist = {k: distances(guards[k], sets[k].features) for k in models}
        rows.append((f"{name}: refused", len(dist["float32"]),
                     *(int((~sets[k].in_scope).sum()) for k in models),
                     agreement(sets["float32"].in_scope, sets["compact"].in_scope, "decisions"),
                     f"{np.abs(dist['float32'] - dist['compact']).max():.1e} distance"))
        alone = distances(guards["compact"], sets["float32"].features)
        rows.append((f"{name}: compact guard alone, distance refusals", len(alone),
                     int((dist["float32"] > threshold).sum()), int((alone > threshold).sum()),
                     agreement(dist["float32"] > threshold, alone > threshold, "decisions"),
                     f"{np.abs(dist['float32'] - alone).max():.1e} distance"))
        margins.append(f"{name} {np.abs(dist['float32'] - threshold).min():.3f}")
    for index, name in enumerate((BUNDLED_NAME, BUNDLED_GUARD)):
        rows.append((f"{name}: bytes", "", *(f"{sizes[k][index]:,}" for k in models), "",
                     f"× {sizes['compact'][index] / sizes['float32'][index]:.3f}"))

    print(table(rows))
    print(f"\nScope-guard threshold {threshold:.4f}; smallest |distance - threshold| with the "
          "float32 files: " + ", ".join(margins) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
