"""Finding every subject-session's two contrasts: in a BIDS tree with pybids, or in a manifest
(CSV: participant_id, session_id, a, b) for data that is not BIDS."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError
from ..io.volumes import split_series
from .subjects import SubjectSession, label

VOLUME_EXTENSIONS = [".nii.gz", ".nii"]
MANIFEST_COLUMNS = ("participant_id", "a", "b")  # session_id is optional


@dataclass(frozen=True)
class Selection:
    """Which files are A and B (BIDS suffixes, plus entities such as acq or ce given as
    ``(key, value)`` pairs), and which participants and sessions (empty: all)."""

    a: str = "T2w"
    b: str = "FLAIR"
    a_entities: tuple[tuple[str, str], ...] = ()
    b_entities: tuple[tuple[str, str], ...] = ()
    participants: tuple[str, ...] = ()
    sessions: tuple[str, ...] = field(default=())


def parse_entity(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (e.g. ``acq=axial``) as a pair; else InputError."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise InputError(f"an entity is given as KEY=VALUE (e.g. acq=axial), not {text!r}")
    return key.strip(), value.strip()


def find_subject_sessions(data_dir: Path, selection: Selection,
                          manifest: Path | None = None) -> list[SubjectSession]:
    """Every selected subject-session, sorted; those whose A or B is missing or ambiguous
    carry the reason as ``problem``. Labels asked for but not found: InputError."""
    if not data_dir.is_dir():
        raise InputError(f"input folder not found: {data_dir}")
    found = _from_manifest(manifest, data_dir) if manifest else _from_bids(data_dir, selection)
    chosen = [item for item in found
              if (not selection.participants or item.participant in selection.participants)
              and (not selection.sessions or item.session in selection.sessions)]
    for wanted, have, what in ((selection.participants, {i.participant for i in found}, "sub"),
                               (selection.sessions, {i.session for i in found}, "ses")):
        missing = sorted(set(wanted) - have)
        if missing:
            raise InputError(f"no {', '.join(f'{what}-{m}' for m in missing)} in "
                             f"{manifest or data_dir}")
    if not chosen:
        raise InputError(f"no subject found in {manifest or data_dir}")
    return sorted(chosen, key=lambda item: (item.participant, item.session or ""))


def _from_bids(root: Path, selection: Selection) -> list[SubjectSession]:
    from bids.layout import BIDSLayout, Query

    try:
        layout = BIDSLayout(root, validate=False)
    except Exception as error:  # pybids raises several kinds for an unusable tree
        raise InputError(f"{root} cannot be read as a BIDS dataset: "
                         f"{' '.join(str(error).split())}") from None
    names = _entity_names(layout)
    chosen = []
    for participant in sorted(layout.get_subjects()):
        for session in sorted(layout.get_sessions(subject=participant)) or [None]:
            where = {"subject": participant, "session": session or Query.NONE}
            a = _one_file(layout, names, where, selection.a, selection.a_entities, "--a-entity")
            b = _one_file(layout, names, where, selection.b, selection.b_entities, "--b-entity")
            problems = [p for p in (a, b) if isinstance(p, str)]
            chosen.append(SubjectSession(participant, session, *(p if isinstance(p, Path)
                                                                 else None for p in (a, b)),
                                         "; ".join(problems) or None))
    return chosen


def _entity_names(layout) -> dict[str, str]:
    """BIDS keys (acq, ce, ...) and pybids names (acquisition, ceagent, ...) -> pybids name."""
    names = {}
    for name, entity in layout.get_entities().items():
        key = re.search(r"(\w+)-\(", entity.pattern or "")
        names.update({name: name, **({key[1]: name} if key else {})})
    return names


def _one_file(layout, names: dict[str, str], where: dict, suffix: str,
              entities: tuple[tuple[str, str], ...], option: str) -> Path | str:
    """The one file of ``suffix`` (and ``entities``) for a subject-session, or the reason
    why there is none or several."""
    unknown = [key for key, _ in entities if key not in names]
    if unknown:
        raise InputError(f"{option}: unknown BIDS entity {', '.join(unknown)} (known: "
                         f"{', '.join(sorted(k for k in names if len(k) <= 5))})")
    filters = {names[key]: value for key, value in entities}
    files = sorted(layout.get(return_type="filename", suffix=suffix,
                              extension=VOLUME_EXTENSIONS, **where, **filters))
    described = suffix + "".join(f" {key}-{value}" for key, value in entities)
    if not files:
        return f"no {described} image found"
    if len(files) > 1:
        return (f"{len(files)} {described} images match ({', '.join(Path(f).name for f in files)}"
                f"); choose one with {option} (e.g. run=1)")
    return Path(files[0])


def _from_manifest(manifest: Path, data_dir: Path) -> list[SubjectSession]:
    """Rows of the manifest; relative paths are taken from DATA_DIR."""
    try:
        with open(manifest, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
            columns = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"manifest {manifest} cannot be read: {error}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"manifest {manifest} has no column {', '.join(missing)} (it needs "
                         "participant_id, a, b and optionally session_id)")
    chosen, seen = [], set()
    for number, row in enumerate(rows, start=2):
        participant = label(row["participant_id"] or "", "sub")
        session = label(row["session_id"], "ses") if (row.get("session_id") or "").strip() \
            else None
        if (participant, session) in seen:
            raise InputError(f"manifest {manifest}, line {number}: sub-{participant}"
                             f"{f' ses-{session}' if session else ''} is listed twice")
        seen.add((participant, session))
        a, b = (data_dir / (row[c] or "").strip() for c in ("a", "b"))
        found = {c: bool((row[c] or "").strip()) and split_series(p)[0].exists()
                 for c, p in (("a", a), ("b", b))}
        chosen.append(SubjectSession(
            participant, session, a if found["a"] else None, b if found["b"] else None,
            "; ".join(f"{c.upper()} not found: {row[c]}" for c in found if not found[c])
            or None))
    return chosen
