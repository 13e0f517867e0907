"""File kinds, completeness of a file before it is read, and safe outputs: a location that
can be written, never an input, written under a temporary name and renamed."""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
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


def check_writable(path: str | Path) -> Path:
    """``path`` if its format can be written, else OutputError (checked before any work)."""
    path = Path(path)
    if suffix_of(path) not in WRITABLE_SUFFIXES:
        raise OutputError(f"cannot write {path}: use one of {', '.join(WRITABLE_SUFFIXES)}")
    return path


def _same_file(output: Path, source: Path) -> bool:
    if output.resolve() == source.resolve():
        return True
    try:  # through hard links and symbolic links: same device and inode
        return os.path.samefile(output, source)
    except OSError:
        return False


def refuse_overwriting_inputs(output: str | Path, inputs: list[str | Path]) -> None:
    """OutputError when writing ``output`` would replace one of ``inputs`` (same path, a
    symbolic link to it or a hard link of it; for MetaImage, also its .raw data file)."""
    output = Path(output)
    written = [output]
    if suffix_of(output) == ".mhd":
        written += [output.with_suffix(".raw"), output.with_suffix(".zraw")]
    for source in map(Path, inputs):
        for target in written:
            if _same_file(target, source):
                raise OutputError(f"output {output} would overwrite the input {source}; "
                                  "choose another output name")


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


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write into a hidden folder beside ``path``, then rename every file it produced.

    The folder keeps the final file name, so a MetaImage header (.mhd) still names its data
    file correctly; data files are moved before the file the user asked for.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".partial-") as folder:
        staged = Path(folder) / path.name
        write(staged)
        for produced in sorted(Path(folder).iterdir(), key=lambda p: p == staged):
            os.replace(produced, path.parent / produced.name)
