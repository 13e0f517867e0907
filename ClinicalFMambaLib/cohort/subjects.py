"""One unit of cohort work, a subject-session and its two input files, and how the cohort is
split into the shares of a job array (``--part K/N``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError

LABEL = re.compile(r"[A-Za-z0-9]+")  # a BIDS label: it becomes part of file names


@dataclass(frozen=True)
class SubjectSession:
    """A subject (and session) with its A and B files; ``problem`` says why it cannot be
    processed when an input was not found (then the task is never sent)."""

    participant: str
    session: str | None
    a: Path | None
    b: Path | None
    problem: str | None = None

    @property
    def prefix(self) -> str:
        """The BIDS file-name prefix: ``sub-X`` or ``sub-X_ses-Y``."""
        return f"sub-{self.participant}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def folder(self) -> Path:
        """Its outputs' folder inside OUT_DIR: ``sub-X[/ses-Y]/anat``."""
        session = [f"ses-{self.session}"] if self.session else []
        return Path(f"sub-{self.participant}", *session, "anat")

    @property
    def name(self) -> str:
        """How messages name it: ``sub-X`` or ``sub-X ses-Y``."""
        return self.prefix.replace("_", " ")


def count(number: int, noun: str) -> str:
    """'1 worker process', '2 worker processes', '3 subject-sessions'."""
    return f"{number} {noun}{'' if number == 1 else 'es' if noun.endswith('s') else 's'}"


def label(text: str, entity: str) -> str:
    """A subject or session label without its ``sub-``/``ses-`` key; InputError unless it
    is alphanumeric (BIDS labels are)."""
    value = text.strip()
    value = value[len(entity) + 1:] if value.startswith(f"{entity}-") else value
    if not LABEL.fullmatch(value):
        raise InputError(f"{entity} label {text!r} is not a BIDS label (letters and digits "
                         "only)")
    return value


def parse_part(text: str) -> tuple[int, int]:
    """``K/N`` as (K, N), 1 <= K <= N; else InputError."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise InputError(f"--part takes K/N with 1 <= K <= N (e.g. 2/10 for the second of "
                         f"ten shares), not {text!r}")
    return int(match[1]), int(match[2])


def share(items: list[SubjectSession], part: tuple[int, int]) -> list[SubjectSession]:
    """The K-th of N shares: every N-th subject-session in sorted order, starting at the
    K-th, so that shares differ by at most one and together hold every one exactly once."""
    k, n = part
    ordered = sorted(items, key=lambda item: (item.participant, item.session or ""))
    return ordered[k - 1::n]
