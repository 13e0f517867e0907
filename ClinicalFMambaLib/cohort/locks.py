"""One lock per subject-session, so that two runs into one OUT_DIR never write the same files
at once, and the removal of what an interrupted writer left.

The locks are ``flock`` locks on files in ``OUT_DIR/.locks``: the kernel (or the NFS server)
releases them when their process dies, so a killed worker or a lost node never leaves a
subject-session locked. Outputs are written under hidden ``.partial-*`` names and renamed
(``io.files.write_atomically``); a process killed before the rename leaves such a folder,
which the next holder of the lock removes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_FOLDER = ".locks"
PARTIAL_PATTERN = ".partial-*"  # io.files.write_atomically's staging folders


def _lock_file(out_dir: Path, prefix: str) -> int:
    folder = out_dir / LOCK_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return os.open(folder / f"{prefix}.lock", os.O_RDWR | os.O_CREAT, 0o644)


@contextmanager
def subject_lock(out_dir: Path, prefix: str, wait: bool = True) -> Iterator[bool]:
    """Hold the lock of one subject-session (``prefix``: sub-X[_ses-Y]). With ``wait``,
    blocks until another run lets it go and yields True; without, yields whether it was
    free (and holds it if so)."""
    handle = _lock_file(out_dir, prefix)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            held = True
        except BlockingIOError:
            held = False
        yield held
    finally:
        os.close(handle)  # releases the lock


def remove_partials(folder: Path) -> None:
    """Remove the staging folders that an interrupted write left in ``folder``."""
    for partial in folder.glob(PARTIAL_PATTERN):
        shutil.rmtree(partial, ignore_errors=True)
