"""What a subject-session's outputs were made from: the inputs' and the models' SHA-256 and
the options. Equal keys mean equal outputs, so a rerun skips what its sidecar matches."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..clinical.classifier import BUNDLED_GUARD, BUNDLED_NAME
from ..clinical.tumour_evidence import BUNDLED_EVIDENCE
from ..fusion.inference import BUNDLED_MODELS
from ..io.volumes import split_series
from ..io.weights import bundled, sha256_of
from .subjects import SubjectSession


def input_sha256(path: Path) -> str:
    """SHA-256 of a volume file; for a DICOM folder, of its files' names and hashes in
    order (and the series UID of ``FOLDER#UID``)."""
    folder, uid = split_series(path)
    if not folder.is_dir():
        return sha256_of(folder)
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(folder)}\0{sha256_of(file)}\n".encode())
    digest.update((uid or "").encode())
    return digest.hexdigest()


def fusion_weights_file(model: str, weights: Path | None) -> Path:
    """The weights file that ``fusion.volumes.load_volume_model(model, ..., weights)`` loads
    for this model kind, so that the file hashed is the file the workers load."""
    if weights is not None:
        return weights
    three_d = bundled(BUNDLED_MODELS[3])
    if model == "3d" and not three_d.exists():
        raise FileNotFoundError(f"the 3D fusion model is not bundled ({three_d} is missing); "
                                "use --model auto or 2d")
    return three_d if model != "2d" and three_d.exists() else bundled(BUNDLED_MODELS[2])


def model_files(fusion: Path, classifier: Path | None, classify: bool) -> dict[str, Path]:
    """Every weights file that goes into the outputs: the fusion network and, with the
    verdict, the classifier and (for the bundled one) its scope guard and tumour evidence."""
    files = {"fusion": fusion}
    if classify:
        files["classifier"] = classifier or bundled(BUNDLED_NAME)
        if classifier is None or classifier.resolve() == bundled(BUNDLED_NAME).resolve():
            files.update(scope_guard=bundled(BUNDLED_GUARD),
                         tumour_evidence=bundled(BUNDLED_EVIDENCE))
    return files


def model_hashes(files: dict[str, Path]) -> dict[str, dict[str, str]]:
    """{role: {"file": name, "sha256": hash}} for the sidecars and dataset_description."""
    return {role: {"file": path.name, "sha256": sha256_of(path)} for role, path in files.items()}


def run_key(item: SubjectSession, options: dict, models: dict[str, dict[str, str]]) -> dict:
    """What decides a subject-session's outputs: its inputs' hashes, the options, the models'
    hashes (not the paths: a moved dataset stays done)."""
    return {"inputs": {"a": input_sha256(item.a), "b": input_sha256(item.b)},
            "options": options,
            "models": {role: entry["sha256"] for role, entry in models.items()}}
