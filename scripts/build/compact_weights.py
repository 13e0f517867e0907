"""Store the bundled classifier and scope guard in their compact form, in place.

    python scripts/build/compact_weights.py

``classifier2d.safetensors``: its float32 tensors as float16 (``io.weights.float16_storage``;
``load_weights`` casts them back). ``scope_guard.safetensors``: the precision as its Cholesky
factor, lower triangle packed, in float16 (``clinical.scope_guard.stored_tensors``). Each
file keeps its safetensors metadata and its MANIFEST.json entry, which gets the new
``sha256``, a ``storage`` note and the file's former hash as ``float32_sha256``; the guard's
``classifier_sha256`` follows the classifier to its new hash. Both files are verified against
the manifest first. A file already compact is left alone, so a second run changes nothing.
What the compact form changes in the results: ``scripts/research/weight_storage.py``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ClinicalFMambaLib.clinical.classifier import BUNDLED_GUARD, BUNDLED_NAME
from ClinicalFMambaLib.clinical.scope_guard import load_scope_guard, stored_tensors
from ClinicalFMambaLib.io.weights import (bundled, float16_storage, load_weights,
                                          manifest_entry, set_manifest_entry, sha256_of)

CLASSIFIER_STORAGE = "float32 tensors stored as float16 (load_weights casts them back)"
GUARD_STORAGE = ("precision stored as its Cholesky factor, lower triangle packed row by row, "
                 "float16")


def rewrite(path: Path, tensors: dict[str, torch.Tensor], storage: str) -> None:
    """Replace the file's tensors, keeping its metadata, and record the change in its
    manifest entry."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    entry = manifest_entry(path)
    part = path.with_suffix(path.suffix + ".part")
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(part),
              metadata=metadata)
    shutil.copymode(path, part)
    part.replace(path)
    digest = sha256_of(path)
    set_manifest_entry(path, {**entry, "sha256": digest, "storage": storage,
                              "float32_sha256": entry["sha256"]})
    print(f"{path.name}: {path.stat().st_size} bytes, SHA-256 {digest}")


def main() -> int:
    classifier, guard = bundled(BUNDLED_NAME), bundled(BUNDLED_GUARD)
    if any(value.dtype == torch.float32 for value in load_file(str(classifier)).values()):
        state, _ = load_weights(classifier)
        rewrite(classifier, float16_storage(state), CLASSIFIER_STORAGE)
    if "precision" in load_file(str(guard)):
        rewrite(guard, stored_tensors(load_scope_guard(guard)), GUARD_STORAGE)
    entry, classifier_entry = manifest_entry(guard), manifest_entry(classifier)
    if "classifier_sha256" in entry and \
            entry["classifier_sha256"] == classifier_entry.get("float32_sha256"):
        set_manifest_entry(guard, {**entry, "classifier_sha256": classifier_entry["sha256"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
