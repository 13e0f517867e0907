"""File kinds, completeness of a file before it is read, and safe outputs: a location that
can be written, never an input, written under a temporary name and renamed."""

from __future__ import annotations

import errno
import gzip
import os
import re
import shutil
import socket
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import InputError, OutputError

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MEDICAL_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
# DICOM needs integer pixels and a full header: fused results go to the other formats.
WRITABLE_SUFFIXES = PICTURE_SUFFIXES + MEDICAL_SUFFIXES[:-1]


def suffix_of(path: str | Path) -> str:
    """Lower-case suffix, with '.nii.gz' kept whole."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_HEADER = {348: ("h", 40, "h", 72, "f", 108), 540: ("q", 16, "h", 14, "q", 168)}


def itk_reason(error: Exception) -> str:
    """The cause in an ITK exception's text, on one line (without the source file and the
    reader's address)."""
    text = " ".join(str(error).split())
    if "ITK ERROR:" in text:
        text = text.split("ITK ERROR:", 1)[1]
        text = text.split("): ", 1)[-1] if "(0x" in text else text
    return text[:240]


def check_complete_file(path: str | Path) -> None:
    """Refuse a medical image file that is cut short or corrupt, which SimpleITK would read
    with zeros in place of the missing voxels (NIfTI, compressed or not).

    A gzip stream must decompress to its end with a matching CRC; a NIfTI-1/2 file must
    hold every voxel byte that its header promises. Raises InputError naming the problem.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        compressed = handle.read(2) == _GZIP_MAGIC
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as stream:
            header = stream.read(540)
            rest = iter(lambda: stream.read(1 << 20), b"")
            size = len(header) + sum(len(block) for block in rest)
    except EOFError:
        raise InputError(f"{path} is truncated: its gzip stream ends early (an incomplete "
                         "download or copy?)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as error:
        raise InputError(f"{path} is corrupt: its gzip data cannot be decompressed "
                         f"({error})") from None
    expected = _nifti_bytes(header)
    if expected is not None and size < expected:
        raise InputError(f"{path} is truncated: it holds {size} bytes but its NIfTI header "
                         f"describes {expected} (an incomplete download or copy?)")


def _nifti_bytes(header: bytes) -> int | None:
    """Header plus voxel bytes that a NIfTI-1/2 header promises; None for other formats."""
    for order in "<>":
        if len(header) < 4:
            return None
        layout = _NIFTI_HEADER.get(struct.unpack(order + "i", header[:4])[0])
        if layout is None or len(header) < layout[5] + 8:
            continue
        dim_type, dim_at, bits_type, bits_at, offset_type, offset_at = layout
        dims = struct.unpack_from(f"{order}8{dim_type}", header, dim_at)
        bits = struct.unpack_from(order + bits_type, header, bits_at)[0]
        offset = struct.unpack_from(order + offset_type, header, offset_at)[0]
        if not 1 <= dims[0] <= 7 or bits <= 0:
            return None
        voxels = int(np.prod([max(1, d) for d in dims[1:dims[0] + 1]], dtype=np.int64))
        return int(offset) + voxels * bits // 8
    return None


def check_input_path(path: str | Path) -> Path:
    """``path`` if it exists as a regular file or a folder; else one line naming why not (a
    pipe or a device would block or never end when read)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if not (path.is_file() or path.is_dir()):
        raise InputError(f"{path} is not a regular file (a pipe, device or socket); give an "
                         "image or volume file")
    return path


def check_writable(path: str | Path) -> Path:
    """``path`` if its format can be written, else OutputError (checked before any work)."""
    path = Path(path)
    if suffix_of(path) not in WRITABLE_SUFFIXES:
        raise OutputError(f"cannot write {path}: use one of {', '.join(WRITABLE_SUFFIXES)}")
    return path


def same_file(first: Path, second: Path) -> bool:
    """True when two paths name one file or folder, also through symbolic or hard links."""
    if first.resolve() == second.resolve():
        return True
    try:  # same device and inode
        return os.path.samefile(first, second)
    except OSError:
        return False


def _detached_data_files(header: Path) -> list[Path]:
    """The data files a MetaImage (.mhd) or detached NRRD (.nhdr) header names: its voxels
    live there, so writing over one of them overwrites the image."""
    key = {".mhd": "ElementDataFile", ".nhdr": "data file"}.get(suffix_of(header))
    if key is None:
        return []
    try:
        lines = header.read_text(encoding="latin-1").splitlines()
    except OSError:
        return []
    separator = "=" if key == "ElementDataFile" else ":"
    for number, line in enumerate(lines):
        name, _, value = line.partition(separator)
        if name.strip().lower() in (key.lower(), key.replace(" ", "").lower()):
            value = value.strip()
            if value.upper() == "LOCAL":
                return []
            if value.upper().startswith("LIST"):  # one file name a line after the key
                return [header.parent / entry.strip() for entry in lines[number + 1:]
                        if entry.strip()]
            return [header.parent / value.split()[0]]
    return []


def files_read(path: str | Path) -> list[Path]:
    """Every file reading ``path`` touches: the file itself and the data file(s) a detached
    header names."""
    path = Path(path)
    return [path, *_detached_data_files(path)]


def files_written(path: str | Path) -> list[Path]:
    """Every file writing ``path`` may create: the file itself and, for a detached header,
    the data file SimpleITK writes beside it (raw or compressed)."""
    path = Path(path)
    if suffix_of(path) == ".mhd":
        return [path, path.with_suffix(".raw"), path.with_suffix(".zraw")]
    if suffix_of(path) == ".nhdr":
        return [path, path.with_suffix(".raw"), path.with_suffix(".raw.gz")]
    return [path]


def refuse_overwriting_inputs(output: str | Path, inputs: list[str | Path]) -> None:
    """OutputError when writing ``output`` would replace a file one of ``inputs`` reads: the
    same path, a symbolic or hard link of it, or a data file of a MetaImage or NRRD header
    on either side (``A.mhd`` written beside an input whose header names ``A.raw``)."""
    output = Path(output)
    for source in map(Path, inputs):
        for target in files_written(output):
            for read in files_read(source):
                if same_file(target, read):
                    which = "" if read == source else f" (its data file {read.name})"
                    raise OutputError(f"output {output} would overwrite the input {source}"
                                      f"{which}; choose another output name")


def check_output_location(path: str | Path, folder: bool = False) -> Path:
    """Refuse, before any work, an output that cannot be created: a file where a folder is
    needed (or the reverse), or a folder that cannot be written (tried with a temporary file)."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"output {path} is a file; give a folder (the results are written "
                          "into it)")
    if not folder and path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name")
    existing = path if folder else path.parent
    while not existing.exists():  # the folders still to be made must start in a folder
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".clinicalfmamba-write-test-"):
            pass
    except OSError as error:
        raise OutputError(f"cannot write {path}: folder {existing} is not writable "
                          f"({error.strerror})") from None
    return path


# Staging folders of write_atomically: ".partial-clinicalfmamba-PID-HOST.RANDOM", so that a
# later run can tell a folder left by a killed run (SIGKILL, a cluster's wall time) from one
# still being written.
PARTIAL_PREFIX = ".partial-clinicalfmamba-"
# A staging folder of another machine (a shared cluster folder) is stale after this long.
FOREIGN_PARTIAL_SECONDS = 24 * 3600


def _staging_owner(folder: Path) -> tuple[int, str] | None:
    """(process id, host) of a staging folder's name, or None for another name."""
    pid, _, rest = folder.name[len(PARTIAL_PREFIX):].partition("-")
    host = rest.rpartition(".")[0]
    return (int(pid), host) if pid.isdigit() and host else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove the staging folders a killed run of ours left in ``folder``: this user's, of
    this host whose process is gone, or of another host and older than a day."""
    removed = []
    for entry in Path(folder).glob(PARTIAL_PREFIX + "*"):
        owner = _staging_owner(entry)
        try:
            if owner is None or not entry.is_dir() or entry.stat().st_uid != os.getuid():
                continue
            pid, host = owner
            stale = (not _process_alive(pid) if host == socket.gethostname() else
                     time.time() - entry.stat().st_mtime > FOREIGN_PARTIAL_SECONDS)
        except OSError:  # removed meanwhile
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _incomplete(path: Path, reason: str) -> OutputError:
    return OutputError(f"cannot write {path}: {reason}; is the disk full, or a file-size limit "
                       "(ulimit -f) set? Nothing was written")


def check_written(path: Path, final: Path) -> None:
    """OutputError when a file just written is incomplete. NIfTI and PNG writers report
    neither a full disk nor a file-size limit: the file is read back (its header, every
    voxel byte, gzip to its end) before it takes its final name ``final``."""
    import SimpleITK as sitk  # here: the Slicer module imports this file in Slicer's process
    from PIL import Image

    try:
        if path.stat().st_size == 0:
            raise _incomplete(final, "the written file is empty")
        if suffix_of(path) in (".nii", ".nii.gz"):
            check_complete_file(path)
        elif suffix_of(path) in PICTURE_SUFFIXES:
            with Image.open(path) as picture:
                picture.load()
        elif suffix_of(path) in MEDICAL_SUFFIXES:
            sitk.ReadImage(str(path))
    except InputError as error:  # check_complete_file's words are about inputs
        reason = str(error).replace(str(path), "the written file")
        raise _incomplete(final, reason.replace(" (an incomplete download or copy?)", "")) from None
    except (OSError, RuntimeError) as error:
        raise _incomplete(final, f"the written file cannot be read back ({itk_reason(error)})"
                          ) from None


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write into a hidden folder beside ``path``, check what was written, then rename every
    file it produced; on any failure nothing is left.

    The folder keeps the final file name, so a MetaImage header (.mhd) still names its data
    file correctly; data files are moved before the file the user asked for. Staging
    folders that killed runs left in that folder are removed first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent)
    prefix = f"{PARTIAL_PREFIX}{os.getpid()}-{socket.gethostname()}."
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=prefix) as folder:
        staged = Path(folder) / path.name
        try:
            write(staged)
        except RuntimeError as error:  # ITK's writers: a full disk, a file-size limit
            reason = re.sub(re.escape(PARTIAL_PREFIX) + r"[^/\s]*/", "", itk_reason(error))
            raise _incomplete(path, f"the writer stopped ({reason})") from None
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise
            raise _incomplete(path, error.strerror) from None
        produced = sorted(Path(folder).iterdir(), key=lambda p: p == staged)
        if staged.suffix.lower() not in (".json", ".txt", ".csv", ".tsv"):
            check_written(staged, path)
        for file in produced:
            os.replace(file, path.parent / file.name)
