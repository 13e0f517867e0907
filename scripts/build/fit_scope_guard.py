"""Fit the bundled classifier's scope guard and measure its refusal rates.

    python scripts/build/fit_scope_guard.py --output Resources/weights/scope_guard.safetensors \\
        --report runs/scope-guard

Fitting data: the classifier's feature summary (``clinical.classifier.scope_features``) of the
4-class Training JPEGs and one augmented view of each, as the classifier was trained (one
group per class), and of the eligible axial slices of every brain3d case, contrast and fused
pair (one more group), prepared as ``classify_volume`` prepares them. Measured: the share of
in-scope images refused on the Testing split (not used to fit) and on each brain3d case with
a guard fitted without it (leave one case out), and the decision on images that are not
brain MRI (scikit-image's sample photos, noise, a constant image).
The guard is written by ``save_scope_guard``: the precision as its packed float16 Cholesky
factor (docs/research/results.md, "Weight storage").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ClinicalFMambaLib.clinical.classifier import (BUNDLED_NAME, classify_image, load_classifier,
                                                   scope_features)
from ClinicalFMambaLib.clinical.images import prepare_image
from ClinicalFMambaLib.clinical.scope_guard import (DEFAULT_QUANTILE, fit_scope_guard,
                                                    save_scope_guard)
from ClinicalFMambaLib.clinical.volumes import MIN_BRAIN_FRACTION, prepare_volume
from ClinicalFMambaLib.io.weights import bundled, sha256_of
from ClinicalFMambaLib.training.classifier_augment import augment
from ClinicalFMambaLib.training.classifier_datasets import list_class_folders, load_images
from ClinicalFMambaLib.training.tumour_training import case_images

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "moon", "page", "horse",
          "rocket", "text", "clock", "hubble_deep_field", "immunohistochemistry", "retina",
          "grass", "gravel", "brick", "cell", "colorwheel", "logo", "binary_blobs",
          "checkerboard")


def not_brain_images() -> dict[str, np.ndarray]:
    """scikit-image's bundled sample pictures, noise and a constant image."""
    import skimage.data

    images = {name: getattr(skimage.data, name)() for name in PHOTOS}
    images = {name: image.astype(np.float32) if image.dtype == bool else image  # silhouettes
              for name, image in images.items()}
    rng = np.random.default_rng(0)
    images["rgb noise"] = rng.integers(0, 256, (256, 256, 3)).astype(np.uint8)
    images["grey noise"] = rng.random((256, 256)).astype(np.float32)
    images["constant"] = np.full((256, 256), 7.0, np.float32)
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE,
                        help="share of fitting images inside the threshold")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_classifier(bundled(BUNDLED_NAME), companions=False)

    def pooled(images01: np.ndarray) -> torch.Tensor:
        return scope_features(model, images01)

    def jpeg_images(split: str) -> tuple[np.ndarray, torch.Tensor]:
        paths, labels, _ = list_class_folders(args.data / "tumor-mri" / split)
        images = load_images(paths, model.input_size).astype(np.float32) / 255
        return images, torch.as_tensor(labels)

    images, train_labels = jpeg_images("Training")
    # The classifier was trained on augmented views (zoom, rotation, contrast, imitated skull
    # stripping); the guard accepts what it was made for, so one augmented view of every
    # Training image is fitted too.
    generator = torch.Generator().manual_seed(0)
    views = torch.cat([augment(torch.from_numpy(images[i:i + 256, None]), generator)[:, 0]
                       for i in range(0, len(images), 256)])
    train = torch.cat([pooled(images), pooled(views.numpy())])
    train_labels = torch.cat([train_labels, train_labels])
    test = pooled(jpeg_images("Testing")[0])
    volume_group = int(train_labels.max()) + 1
    volumes = {}
    for case in sorted(p for p in (args.data / "brain3d").iterdir() if p.is_dir()):
        features = []
        for image in case_images(case).values():
            slices = prepare_volume(sitk.GetArrayFromImage(image), model.input_size,
                                    image.GetDirection())
            features.append(pooled(slices.images[slices.brain_area
                                                 >= MIN_BRAIN_FRACTION * slices.brain_area.max()]))
        volumes[case.name] = torch.cat(features)

    def fit(cases: list[str]):
        features = torch.cat([train] + [volumes[c] for c in cases])
        labels = torch.cat([train_labels] + [torch.full((len(volumes[c]),), volume_group)
                                             for c in cases])
        return fit_scope_guard(features, labels, args.quantile)

    loco = {}
    for name in volumes:
        guard = fit([c for c in volumes if c != name])
        loco[name] = float((~guard.in_scope(volumes[name])).float().mean())
    guard = fit(list(volumes))
    others = not_brain_images()
    model.guard = guard  # the decision of the real path: plain checks, then the distance
    prepared = np.stack([prepare_image(image, model.input_size)[0] for image in others.values()])
    distances = guard.distances(pooled(prepared))
    refused = {}
    for (name, image), distance in zip(others.items(), distances):
        result = classify_image(model, image)
        refused[name] = {"distance": round(float(distance), 2), "refused": not result.in_scope,
                         "reason": result.reason}
    report = {"command": "python scripts/build/fit_scope_guard.py " + " ".join(argv or sys.argv[1:]),
              "quantile": args.quantile, "threshold": guard.threshold,
              "false_refusal_testing": float((~guard.in_scope(test)).float().mean()),
              "n_testing": len(test),
              "false_refusal_brain3d_leave_one_case_out": loco,
              "brain3d_slices": {k: len(v) for k, v in volumes.items()},
              "not_brain_mri": refused,
              "not_brain_mri_refused": f"{sum(r['refused'] for r in refused.values())}"
                                       f"/{len(refused)}"}
    args.report.mkdir(parents=True, exist_ok=True)
    (args.report / "report.json").write_text(json.dumps(report, indent=1))
    save_scope_guard(guard, args.output,
                     {"command": report["command"],
                      "classifier_sha256": sha256_of(bundled(BUNDLED_NAME)),
                      "false_refusal_testing": report["false_refusal_testing"],
                      "false_refusal_brain3d_leave_one_case_out": loco})
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
