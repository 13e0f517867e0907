"""Shared helpers of the bad-input and fault suite (Testing/test_bad_inputs_*.py).

Every case runs the real command line, in this process (``cli``) or as a subprocess
(``cli_process``, where exit codes and signals matter), on files made from the real data
in ../shared/data, and checks what a user sees: the exit code, one line naming the problem
(no traceback), inputs byte-identical afterwards and no partial output left.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ClinicalFMambaLib.cli.main import main

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CASE = DATA / "brain3d" / "TCGA-DU-7294"
HARVARD = DATA / "harvard"
SAMPLE = REPO / "Resources" / "sample"
CT_PAIR = (HARVARD / "CT-MRI" / "MRI" / "2013.png", HARVARD / "CT-MRI" / "CT" / "2013.png")
SPECT_PAIR = (HARVARD / "SPECT-MRI" / "MRI" / "9027.png",
              HARVARD / "SPECT-MRI" / "SPECT" / "9027.png")
CROP = (slice(88, 152), slice(88, 152), slice(64, 88))  # x, y, z: 64x64x24 around the tumour

torch.set_num_threads(1)  # other jobs share the CPU; more threads only wait on each other

needs_data = pytest.mark.skipif(not (CASE.is_dir() and HARVARD.is_dir()),
                                reason=f"real data not found: {DATA}")


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    warnings: tuple[str, ...] = ()  # in this process, warnings are caught, not printed

    @property
    def messages(self) -> list[str]:
        """stderr lines, without progress-bar redraws and warnings."""
        lines = [line.split("\r")[-1].strip() for line in self.err.splitlines()]
        return [line for line in lines if line and not line.startswith("fuse:")
                and ": warning: " not in line]


def cli(*args: str) -> Run:
    """The command line in this process (fast: torch is already loaded)."""
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code = main([str(a) for a in args])
    return Run(code, out.getvalue(), err.getvalue(), tuple(str(w.message) for w in seen))


# Progress bars draw with Unicode blocks: decode as UTF-8 whatever the locale says.
TEXT = {"encoding": "utf-8", "errors": "replace"}


def cli_process(*args: str, timeout: float = 180, runner: tuple[str, ...] = ()) -> Run:
    """The command line as a real process, as a user or a batch script runs it (``runner``:
    a command that runs it, e.g. as another user)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*runner, sys.executable, "-m", "ClinicalFMambaLib.cli",
                             *map(str, args)],
                            cwd=REPO, env=env, capture_output=True, timeout=timeout, **TEXT)
    return Run(result.returncode, result.stdout, result.stderr)


def assert_refused(run: Run, code: int, *words: str) -> str:
    """Exit ``code``, no traceback, exactly one error line that holds every one of ``words``."""
    assert run.code == code, run.err
    assert "Traceback" not in run.err, run.err
    assert len(run.messages) == 1, run.err
    line = run.messages[0]
    assert line.startswith("clinicalfmamba "), line
    assert code > 128 or ": error: " in line, line  # a signal is no error
    for word in words:
        assert str(word) in line, line
    return line


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (hidden ones included), by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def write_volume(path: Path, array: np.ndarray, like: sitk.Image | None = None,
                 origin: tuple[float, ...] | None = None) -> Path:
    image = sitk.GetImageFromArray(array)
    if like is not None:
        image.CopyInformation(like)
    if origin is not None:
        image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def write_dicom_series(volume: sitk.Image, folder: Path, uid: str, description: str = "",
                       prefix: str = "slice", skip: int | None = None) -> Path:
    """``volume`` as one DICOM series in ``folder``, a file per slice with its position and
    orientation tags; ``skip``: a slice left out, as a transfer that lost one."""
    folder.mkdir(exist_ok=True)
    volume = sitk.Cast(volume, sitk.sitkInt16)
    for k in range(volume.GetDepth()):
        if k == skip:
            continue
        plane = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
                "0020|000e": uid, "0020|000d": "1.2.826.0.1.3680043.8.498.9",
                "0008|103e": description, "0020|0013": str(k + 1),
                "0020|0032": "\\".join(f"{v:f}" for v in position),
                "0020|0037": "\\".join(f"{volume.GetDirection()[i]:f}"
                                        for i in (0, 3, 6, 1, 4, 7)),
                "0018|0050": f"{volume.GetSpacing()[2]:f}",
                "0028|0030": "\\".join(f"{v:f}" for v in volume.GetSpacing()[:2]),
                "0008|0060": "MR"}.items():
            plane.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{prefix}_{k:03d}.dcm"))
        writer.Execute(plane)
    return folder


@pytest.fixture(scope="session")
def crops(tmp_path_factory) -> dict[str, Path]:
    """T2 and FLAIR of a real glioma case, cropped to 64x64x24 around the tumour."""
    if not CASE.is_dir():
        pytest.skip(f"real data not found: {CASE}")
    folder, written = tmp_path_factory.mktemp("crops"), {}
    for name in ("t2", "flair"):
        written[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(sitk.ReadImage(str(CASE / f"{name}.nii.gz"))[CROP], str(written[name]))
    return written


@pytest.fixture
def pair(crops, tmp_path) -> tuple[Path, Path]:
    """The cropped T2 and FLAIR copied into this test's folder."""
    return tuple(copy(crops[name], tmp_path / crops[name].name) for name in ("t2", "flair"))


def copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target


def signalled(args: list, signum: int, when: str, timeout: float = 180) -> Run:
    """Run the command line as a process and send it ``signum`` once ``when`` has appeared
    on its stderr (e.g. the progress bar: the work has started)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "ClinicalFMambaLib.cli", *map(str, args)],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err, seen = bytearray(), threading.Event()

    def read() -> None:
        for chunk in iter(lambda: os.read(process.stderr.fileno(), 4096), b""):
            err.extend(chunk)
            if when.encode() in err:
                seen.set()
        seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(timeout), err.decode(**TEXT)
    time.sleep(0.2)  # past the bar's drawing, into the work (seconds on the sample)
    process.send_signal(signum)
    out = process.stdout.read()  # stderr is the reader's alone
    process.wait(timeout)
    reader.join(timeout)
    return Run(process.returncode, out.decode(**TEXT), err.decode(**TEXT))


# Runs the command line with SimpleITK's writer patched to send this process ``signum`` right
# after the file has been written under its temporary name, before it is renamed: the
# moment a signal used to leave a hidden .partial-* folder behind.
SIGNAL_DURING_WRITE = """
import os, sys, SimpleITK
from PIL import Image
from ClinicalFMambaLib.cli.main import main
signum = int(sys.argv[1])
def interrupted(write):
    def wrapper(*args, **kwargs):
        write(*args, **kwargs)
        os.kill(os.getpid(), signum)
        raise SystemExit("the signal was not acted on")
    return wrapper
SimpleITK.WriteImage = interrupted(SimpleITK.WriteImage)
Image.Image.save = interrupted(Image.Image.save)
sys.exit(main(sys.argv[2:]))
"""


def signalled_during_write(args: list, signum: int, timeout: float = 180) -> Run:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", SIGNAL_DURING_WRITE, str(int(signum)),
                             *map(str, args)], cwd=REPO, env=env, capture_output=True,
                            timeout=timeout, **TEXT)
    return Run(result.returncode, result.stdout, result.stderr)
