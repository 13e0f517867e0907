"""Join tumour classifiers trained alike from different seeds into one ensemble file (mean
of the members' logits, ``networks.classifier_net.TumourEnsemble``), and measure the ensemble and
each member on the validation split and on Testing, as ``classify`` predicts (image and
left-right mirror averaged) and from the image alone.

Members come from ``clinicalfmamba train-classifier`` with the same data, split (``--seed``)
and options and different ``--init-seed``; they must share classes, input size, architecture
and normalisation. The validation split is derived again from ``--seed`` and
``--val-fraction`` and checked against the members' normalisation (the mean of their
training images), so a member trained on another split is refused. The ensemble is stored
in float16 (``io.weights.float16_storage``; docs/research/results.md, "Weight storage") and
measured as stored.

    python scripts/build/ensemble_classifier.py runs/classifier2d-members/member0.safetensors \\
        runs/classifier2d-members/member1.safetensors \\
        runs/classifier2d-members/member2.safetensors \\
        --data-dir ../shared/data/tumor-mri/Training --test-dir ../shared/data/tumor-mri/Testing \\
        --output Resources/weights/classifier2d.safetensors
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ClinicalFMambaLib.clinical.classifier import Classifier, prepared_probabilities
from ClinicalFMambaLib.io.weights import (float16_storage, load_weights, provenance,
                                          save_weights)
from ClinicalFMambaLib.networks.classifier_net import build_model
from ClinicalFMambaLib.training.classifier_datasets import (list_class_folders, load_images,
                                                            stratified_split)
from ClinicalFMambaLib.training.classifier_training import (classification_metrics, predict,
                                                            training_normalisation)


def load_members(paths: list[Path]) -> tuple[list[dict], dict]:
    """State dicts of the members and their shared config."""
    states, config = [], None
    for path in paths:
        state, member_config = load_weights(path)
        if member_config.get("model") != "TumourNet" or member_config["arch"].get("members", 1) != 1:
            raise ValueError(f"{path} is not a single tumour classifier")
        if config is not None and member_config != config:
            differing = sorted(k for k in config.keys() | member_config.keys()
                               if config.get(k) != member_config.get(k))
            raise ValueError(f"{path} differs from {paths[0]} in {', '.join(differing)} "
                             "(the normalisation differs for another split or data)")
        states.append(state)
        config = member_config
    return states, config


def ensemble_state(states: list[dict]) -> dict:
    return {f"members.{i}.{key}": value for i, state in enumerate(states)
            for key, value in state.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("members", nargs="+", type=Path, help="member weights (two or more)")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the members' training folder (one sub-folder per class)")
    parser.add_argument("--test-dir", type=Path, default=None, help="held-out folder")
    parser.add_argument("--seed", type=int, default=0, help="the members' split seed")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="the members' validation share")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if len(args.members) < 2:
        parser.error("give at least two members")

    try:
        states, config = load_members(args.members)
    except (OSError, ValueError) as error:  # WeightsError is a ValueError
        parser.error(str(error))
    paths, labels, classes = list_class_folders(args.data_dir)
    if classes != config["classes"]:
        parser.error(f"{args.data_dir} has classes {classes}, the members {config['classes']}")
    images = load_images(paths, config["input_size"])
    train_idx, val_idx = stratified_split(labels, args.val_fraction, args.seed)
    norm = config["normalisation"]
    train_mean, _ = training_normalisation(images[train_idx])
    if abs(train_mean - norm["mean"]) > 1e-4:
        parser.error(f"the split of seed {args.seed} has training mean {train_mean:.5f}, the "
                     f"members were normalised with {norm['mean']:.5f}: another split")

    ensemble_config = {**config, "arch": {**config["arch"], "members": len(states)}}
    ensemble = build_model(ensemble_config)
    ensemble.load_state_dict(float16_storage(ensemble_state(states)))  # the stored values
    ensemble.eval()
    members = list(ensemble.members)

    sets = {"validation": (images[val_idx], labels[val_idx])}
    if args.test_dir is not None:
        test_paths, test_labels, test_classes = list_class_folders(args.test_dir)
        if test_classes != classes:
            parser.error(f"{args.test_dir} has classes {test_classes}, the members {classes}")
        sets["test"] = (load_images(test_paths, config["input_size"]), test_labels)

    torch.set_num_threads(2)
    cpu = torch.device("cpu")

    def metrics(net: torch.nn.Module, images: np.ndarray, truth: np.ndarray) -> dict:
        """Through the inference path of ``classify`` (with its mirrored view)."""
        probabilities = prepared_probabilities(Classifier(net, config, cpu), images / 255.0)
        return classification_metrics(truth, probabilities, classes)

    def accuracy_without_mirror(net: torch.nn.Module, images: np.ndarray, truth: np.ndarray
                                ) -> float:
        probabilities = predict(net, images, norm["mean"], norm["std"])
        return float((probabilities.argmax(1) == truth).mean())

    report = {}
    for name, (x, y) in sets.items():
        report[name] = {"metrics": metrics(ensemble, x, y),
                        "member_accuracy": [metrics(m, x, y)["accuracy"] for m in members],
                        "without_mirror": {
                            "accuracy": accuracy_without_mirror(ensemble, x, y),
                            "member_accuracy": [accuracy_without_mirror(m, x, y)
                                                for m in members]}}
    command = shlex.join(["python", "scripts/build/ensemble_classifier.py", *map(str, sys.argv[1:])])
    split = (f"validation: stratified {args.val_fraction:.0%} of {args.data_dir} "
             f"(seed {args.seed}); image level, the data set has no patient ids")
    extra = {"command": command, "split": split,
             "members": [provenance(path) for path in args.members],
             "validation": report["validation"]}
    if "test" in report:
        extra["test"] = {**report["test"]["metrics"], "data": str(args.test_dir),
                         "member_accuracy": report["test"]["member_accuracy"],
                         "without_mirror": report["test"]["without_mirror"]}
    digest = save_weights(float16_storage(ensemble.state_dict()), args.output, ensemble_config,
                          extra)
    print(json.dumps({"output": str(args.output), "sha256": digest, **extra}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
