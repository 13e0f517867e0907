"""The output tree, BIDS derivatives: ``dataset_description.json``; per subject-session the
fused volume ``sub-X[_ses-Y]_desc-fused_<A><B>.nii.gz`` on A's grid, its JSON sidecar (what
it was made from, the verdict, timing, worker) and the heatmap
``sub-X[_ses-Y]_label-tumour_probseg.nii.gz``; per subject-session logs in ``logs/``.

The sidecar is written last: a sidecar whose key matches means complete, current outputs. A
file whose content would not change is not rewritten, so a rerun leaves every byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..io.files import write_atomically
from .locks import remove_partials
from .subjects import SubjectSession

BIDS_VERSION = "1.10.0"
DESCRIPTION = "dataset_description.json"
LOG_FOLDER = "logs"


@dataclass(frozen=True)
class Outputs:
    """Where one subject-session's files go."""

    fused: Path
    sidecar: Path
    heatmap: Path
    log: Path
    failure: Path  # the last failure's record, removed on success

    @property
    def folder(self) -> Path:
        return self.fused.parent


def outputs_of(out_dir: Path, item: SubjectSession, a_name: str, b_name: str) -> Outputs:
    stem = out_dir / item.folder / f"{item.prefix}_desc-fused_{a_name}{b_name}"
    logs = out_dir / LOG_FOLDER
    return Outputs(stem.with_name(stem.name + ".nii.gz"), stem.with_name(stem.name + ".json"),
                   out_dir / item.folder / f"{item.prefix}_label-tumour_probseg.nii.gz",
                   logs / f"{item.prefix}.log", logs / f"{item.prefix}_failure.json")


def remove_unfinished(outputs: Outputs) -> None:
    """After an interrupted run: no staging folder, and no output without its sidecar, so a
    subject-session has all its outputs or none."""
    remove_partials(outputs.folder)
    if not outputs.sidecar.exists():
        outputs.fused.unlink(missing_ok=True)
        outputs.heatmap.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds it; True when written."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_atomically(path, lambda target: target.write_text(text, encoding="utf-8"))
    return True


def write_json(path: Path, content: dict) -> bool:
    return write_text(path, json.dumps(content, indent=1) + "\n")


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing or not a JSON object."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def key_of(sidecar: dict) -> dict | None:
    """The run key (provenance.run_key) that a sidecar records; None for a foreign file."""
    try:
        return {"inputs": {role: sidecar["inputs"][role]["sha256"] for role in ("a", "b")},
                "options": sidecar["options"],
                "models": {role: entry["sha256"] for role, entry in sidecar["models"].items()}}
    except (KeyError, TypeError, AttributeError):
        return None


def is_done(outputs: Outputs, key: dict) -> bool:
    """The outputs exist and their sidecar records ``key``: nothing to redo."""
    sidecar = read_json(outputs.sidecar)
    if sidecar is None or key_of(sidecar) != key or not outputs.fused.exists():
        return False
    return not sidecar.get("outputs", {}).get("heatmap") or outputs.heatmap.exists()


def known_input_failure(outputs: Outputs, key: dict | None) -> str | None:
    """The recorded failure's reason when it was one of the inputs and the inputs, options and
    models are still the same (a rerun would only repeat it); else None."""
    record = read_json(outputs.failure) or {}
    same = record.get("input_error") is True and record.get("key") == key
    return record.get("error") if same else None


def record_failure(outputs: Outputs, item: SubjectSession, error: str, key: dict | None,
                   input_error: bool, details: dict) -> None:
    """Keep the reason in ``logs/`` for the group level and the next run; the record of the
    same failure is left as it was."""
    if input_error and known_input_failure(outputs, key) == error:
        return
    write_json(outputs.failure, {"participant_id": item.participant,
                                 "session_id": item.session, "error": error, "key": key,
                                 "input_error": input_error, **details})


def write_log(outputs: Outputs, item: SubjectSession, lines: list[str]) -> None:
    """The subject-session's log (its last attempt): what it was made from, then ``lines``."""
    write_text(outputs.log, "\n".join([item.name, f"A: {item.a or 'not found'}",
                                      f"B: {item.b or 'not found'}", *lines])
               + "\n")


def dataset_description(data_dir: Path, models: dict[str, dict[str, str]]) -> dict:
    """The derivative dataset's description: the tool's version and models, and the source."""
    source = {"URL": data_dir.resolve().as_uri()}
    doi = (read_json(data_dir / DESCRIPTION) or {}).get("DatasetDOI")
    if doi:
        source["DOI"] = doi
    return {"Name": "ClinicalFMamba fusion and tumour verdict", "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "ClinicalFMamba", "Version": __version__,
                             "Description": "CNN-Mamba fusion of two contrasts on the first "
                                            "one's grid, and the tumour verdict on the result",
                             "Models": models}],
            "SourceDatasets": [source]}
