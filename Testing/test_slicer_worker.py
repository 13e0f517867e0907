"""The Slicer module's worker process on real MRML (pip's slicer-core) and real subprocesses.

The networks run in ``python -m ClinicalFMambaLib.worker`` (``PythonSlicer`` inside Slicer);
these tests check what the module promises about that process: progress arrives, Cancel
kills the whole process tree within 2 s and leaves no node, process or temporary file, a
worker that fails, crashes or is killed gives one clear error and no node, closing the scene
during a run publishes nothing, and the batch script exits non-zero on every failure.
Full-size runs use ../shared/data/brain3d/TCGA-DU-7294 (240x240x155 T2 and FLAIR).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("slicer_core") is None:
    pytest.skip("slicer-core is not installed (pip install slicer-core)", allow_module_level=True)

import slicer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ClinicalFMamba"))
import ClinicalFMamba as module  # noqa: E402

CASE = ROOT.parent / "shared" / "data" / "brain3d" / "TCGA-DU-7294"
FULL_SIZE = [CASE / "t2.nii.gz", CASE / "flair.nii.gz"]
BATCH = ROOT / "scripts" / "slicer_batch_fuse.py"
needs_case = pytest.mark.skipif(not all(p.is_file() for p in FULL_SIZE),
                                reason=f"{CASE} is not available")


class SpyLogic(module.ClinicalFMambaLogic):
    """The module's logic, keeping the last job it started so a test can look at its
    process and folder after the blocking ``fuse`` returned or raised."""

    job = None

    def start(self, *args, **kwargs):
        self.job = super().start(*args, **kwargs)
        return self.job


def group_members(pgid: int) -> list[int]:
    """Processes (from /proc) in process group ``pgid``: the worker and all it started."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "pid (comm)": state, ppid, pgrp
            members.append(int(stat.parent.name))
    return members


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def temp_folders() -> set[Path]:
    """Job folders in the temporary folder (a test checks that it added none: a start may
    also remove other callers' orphans)."""
    return set(Path(tempfile.gettempdir()).glob("ClinicalFMamba-*"))


def assert_nothing_left(job, scene, nodes: int, temps: set[Path]) -> None:
    pid = job.process.pid
    assert job.process.returncode() is not None
    assert not alive(pid)
    if Path("/proc").is_dir():
        assert group_members(pid) == []
    assert not job.folder.exists() and not temp_folders() - temps
    assert scene.GetNumberOfNodes() == nodes


@pytest.fixture(scope="module")
def scene():
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = slicer.vtkMRMLScene()
    yield slicer.mrmlScene
    slicer.mrmlScene = previous


@pytest.fixture(scope="module")
def sample(scene):
    return module.ClinicalFMambaLogic().loadSample()


@pytest.fixture(scope="module")
def full_pair(scene):
    logic = module.ClinicalFMambaLogic()
    return tuple(logic.loadVolume(path) for path in FULL_SIZE)


# --------------------------------------------------------------------------- full size

@needs_case
def test_full_size_run_in_a_worker_with_torch_blocked_here():
    """Fuse + classify the full-size pair through the logic in a process where importing
    torch fails: the networks can only have run in the worker. Gives the fused node on A's
    grid, its heatmap, and progress reports from the worker."""
    code = f"""
import json, sys, time
sys.modules["torch"] = None  # any `import torch` in this process now fails
sys.path.insert(0, {str(ROOT / "ClinicalFMamba")!r})
import numpy as np, slicer
slicer.mrmlScene = slicer.vtkMRMLScene()
import ClinicalFMamba as module
logic = module.ClinicalFMambaLogic()
a, b = (logic.loadVolume(p) for p in {[str(p) for p in FULL_SIZE]!r})
reports = []
begun = time.perf_counter()
fused = logic.fuse(a, b, device="cpu", progress=reports.append)
seconds = time.perf_counter() - begun
def matrix(node):
    import vtk
    m = vtk.vtkMatrix4x4(); node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m).tolist()
heatmap = fused.GetNodeReference("Heatmap")
print(json.dumps({{
    "seconds": seconds, "reports": reports,
    "shape": list(slicer.util.arrayFromVolume(fused).shape),
    "shape_a": list(slicer.util.arrayFromVolume(a).shape),
    "same_grid": matrix(fused) == matrix(a),
    "heatmap_shape": list(slicer.util.arrayFromVolume(heatmap).shape),
    "heatmap_max": float(slicer.util.arrayFromVolume(heatmap).max()),
    "verdict": fused.GetAttribute(module.VERDICT),
    "library_modules": sorted(m for m in sys.modules if m.startswith("ClinicalFMambaLib")),
}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8",
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"full-size fuse + classify through the module's logic: {run['seconds']:.1f} s")
    assert run["shape"] == run["shape_a"] == [155, 240, 240] and run["same_grid"]
    # The heatmap holds tumour probabilities at or above the evidence network's floor.
    from ClinicalFMambaLib.clinical.tumour_evidence import HEATMAP_FLOOR
    assert run["heatmap_shape"] == run["shape"] and HEATMAP_FLOOR <= run["heatmap_max"] <= 1.0
    assert run["verdict"].startswith("ClinicalFMamba: ")
    # torch could not be imported here, so no network ran here; nor was network code (the
    # networks, fusion and training subpackages) or the command line loaded:
    assert "ClinicalFMambaLib.worker" in run["library_modules"]
    assert not [name for name in run["library_modules"]
                if name.split(".")[1:2] in (["networks"], ["fusion"], ["training"], ["cli"])]
    reports = run["reports"]
    assert reports == sorted(reports) and reports[-1] == 1.0
    # Fusion reports once per 3D patch (on the CPU the brain box is one patch: its end is
    # 0.7 of the run), classification once per batch of slices.
    assert 0.7 in reports, "fusion progress from the worker"
    assert len([r for r in reports if 0.7 < r < 1.0]) >= 3, "classification progress"


@needs_case
@pytest.mark.parametrize("when", ["one second after the call", "once fusing has begun"])
def test_cancel_full_size_kills_the_tree_within_two_seconds(scene, full_pair, when):
    logic = SpyLogic()
    nodes, temps = scene.GetNumberOfNodes(), temp_folders()
    begun = time.monotonic()
    asked: list[float] = []

    def cancel() -> bool:
        due = (time.monotonic() - begun >= 1.0 if when == "one second after the call"
               else logic.job.fraction > 0.0)  # the worker reported fusion progress
        if due and not asked:
            asked.append(time.monotonic())
        return due

    with pytest.raises(module.Cancelled, match="nothing was created"):
        logic.fuse(*full_pair, device="cpu", cancel=cancel)
    took = time.monotonic() - asked[0]
    print(f"cancel {when}: raised {took:.2f} s after the request")
    assert took < 2.0
    assert logic.job.process.returncode() == -signal.SIGKILL
    assert_nothing_left(logic.job, scene, nodes, temps)


# --------------------------------------------------------------------------- failures

@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_worker_killed_or_crashing_gives_a_clear_error_and_no_node(scene, sample, sig):
    logic = SpyLogic()
    nodes, temps = scene.GetNumberOfNodes(), temp_folders()

    def progress(fraction: float) -> None:
        if alive(logic.job.process.pid):
            os.kill(logic.job.process.pid, sig)  # from outside, as the OS or a crash would

    with pytest.raises(module.WorkerFailed, match=f"killed by signal {sig.name}") as raised:
        logic.fuse(*sample, device="cpu", progress=progress)
    assert "\n" not in str(raised.value)
    assert_nothing_left(logic.job, scene, nodes, temps)


def test_worker_error_is_one_line_and_leaves_no_node(scene, sample, tmp_path):
    """Classifier weights that are no safetensors file: the worker names the problem."""
    broken = tmp_path / "classifier.safetensors"
    broken.write_bytes(FULL_SIZE[0].read_bytes()[:4096] if FULL_SIZE[0].is_file()
                       else b"not a weights file" * 100)
    logic = SpyLogic()
    nodes, temps = scene.GetNumberOfNodes(), temp_folders()
    with pytest.raises(module.WorkerFailed) as raised:
        logic.fuse(*sample, device="cpu", classifier=str(broken))
    message = str(raised.value)
    assert "\n" not in message and "Traceback" not in message and message
    assert logic.job.process.returncode() == 1
    assert_nothing_left(logic.job, scene, nodes, temps)


def test_worker_that_cannot_start_leaves_no_folder(scene, sample):
    logic = module.ClinicalFMambaLogic()
    job = logic.prepare(*sample, classify=False)
    temps = temp_folders()
    with pytest.raises(FileNotFoundError):
        job.start(python=str(ROOT / "no-such-python"))
    assert not temp_folders() - temps and not job.folder.exists()


def test_scene_close_during_a_run_publishes_nothing(sample):
    """A scene of its own, closed from the progress callback while the worker runs: the
    job is cancelled by the scene's StartCloseEvent, the worker killed, nothing added."""
    shared = slicer.mrmlScene
    own = slicer.mrmlScene = slicer.vtkMRMLScene()
    try:
        logic = SpyLogic()
        volume_a, volume_b = logic.loadSample()
        temps = temp_folders()

        def progress(fraction: float) -> None:
            if own.GetNumberOfNodes():
                own.Clear(0)

        with pytest.raises(module.Cancelled, match="the scene was closed"):
            logic.fuse(volume_a, volume_b, device="cpu", progress=progress)
        assert logic.job.state == "cancelled"
        assert_nothing_left(logic.job, own, 0, temps)
    finally:
        slicer.mrmlScene = shared


def test_input_removed_during_a_run_publishes_nothing(scene):
    logic = SpyLogic()
    volume_a, volume_b = logic.loadSample()
    nodes, temps = scene.GetNumberOfNodes(), temp_folders()

    def progress(fraction: float) -> None:
        if scene.IsNodePresent(volume_b):
            scene.RemoveNode(volume_b)

    with pytest.raises(module.Cancelled, match="input B was removed"):
        logic.fuse(volume_a, volume_b, device="cpu", classify=False, progress=progress)
    assert logic.job.process.returncode() == -signal.SIGKILL  # killed then, not run to the end
    assert_nothing_left(logic.job, scene, nodes - 1, temps)


def test_worker_ends_when_its_caller_dies(tmp_path):
    """The worker runs in its own session, so it is not killed with its caller: when the
    caller (here a Python process standing in for a crashed Slicer) dies, the worker notices
    within a second, removes its folder and exits."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(ROOT / "ClinicalFMamba")!r})
import slicer
slicer.mrmlScene = slicer.vtkMRMLScene()
import ClinicalFMamba as module
logic = module.ClinicalFMambaLogic()
job = logic.start(*logic.loadSample(), device="cpu")
print(json.dumps({{"pid": job.process.pid, "folder": str(job.folder)}}), flush=True)
time.sleep(600)
"""
    caller = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, encoding="utf-8")
    try:
        started = json.loads(caller.stdout.readline())
    finally:
        caller.kill()
        caller.wait()
    died = time.monotonic()
    while alive(started["pid"]) and time.monotonic() - died < 10:
        time.sleep(0.1)
    gone = time.monotonic() - died
    assert not alive(started["pid"]), "the worker outlived its caller by 10 s"
    assert gone < 3.0 and not Path(started["folder"]).exists()


def test_folders_of_dead_callers_are_removed_at_the_next_start(scene, sample):
    """A caller killed after its worker ended leaves its folder; the next job removes it,
    and keeps the folder of a caller that is alive."""
    from ClinicalFMambaLib.worker.protocol import FOLDER_PREFIX, JOB_FILE

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folders = {}
    for name, pid in (("dead", dead.pid), ("alive", os.getpid())):
        folders[name] = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
        (folders[name] / JOB_FILE).write_text(json.dumps({"caller": pid}))
    try:
        job = module.ClinicalFMambaLogic().start(*sample, device="cpu", classify=False)
        job.close()
        assert not folders["dead"].exists() and folders["alive"].exists()
    finally:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- batch script

def batch(*args: str) -> subprocess.CompletedProcess:
    """The batch script under plain Python with slicer-core, as a subprocess."""
    return subprocess.run([sys.executable, str(BATCH), *args], capture_output=True, encoding="utf-8",
                          timeout=900)


def one_line_error(result: subprocess.CompletedProcess) -> bool:
    return "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) >= 1


def test_batch_bad_arguments_exit_2(tmp_path):
    result = batch(str(tmp_path / "a.nii.gz"), "-o", str(tmp_path))
    assert result.returncode == 2 and "in pairs" in result.stderr


def test_batch_output_that_is_a_file_exits_1(tmp_path):
    """An error before the loop (the output folder cannot be made) still ends the run."""
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should be")
    a, b = (str(module.SAMPLE_DIR / name) for name in module.SAMPLE_FILES)
    result = batch(a, b, "-o", str(blocker), "--device", "cpu")
    assert result.returncode == 1 and one_line_error(result)
    assert len(result.stderr.strip().splitlines()) == 1 and "results" in result.stderr


def test_batch_unreadable_inputs_exit_1(tmp_path):
    truncated = tmp_path / "truncated.nrrd"
    truncated.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 9 9 9\n"
                          b"encoding: raw\n\n" + bytes(10))
    a = str(module.SAMPLE_DIR / module.SAMPLE_FILES[0])
    result = batch(str(tmp_path / "missing.nii.gz"), a, a, str(truncated),
                   "-o", str(tmp_path / "out"), "--device", "cpu")
    assert result.returncode == 1 and one_line_error(result)
    failures = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert len(failures) == 2 and "not found" in failures[0] and "not a readable" in failures[1]
    assert "0 of 2 pairs" in result.stdout


def test_batch_saves_results_and_fails_on_a_failed_write(tmp_path):
    """Two pairs: the first is fused and saved; the second's fused file cannot be written
    (a folder holds its name), which counts as a failure: exit 1, '1 of 2'."""
    t2, flair = (module.SAMPLE_DIR / name for name in module.SAMPLE_FILES)
    out = tmp_path / "out"
    (out / "TCGA-DU-7294_flair_fused.nii.gz").mkdir(parents=True)
    result = batch(str(t2), str(flair), str(flair), str(t2), "-o", str(out), "--device", "cpu")
    assert result.returncode == 1, result.stderr
    assert "1 of 2 pairs" in result.stdout and one_line_error(result)
    assert "could not write" in result.stderr
    assert {p.name for p in out.iterdir() if p.is_file()} == {
        f"TCGA-DU-7294_t2_{suffix}" for suffix in
        ("fused.nii.gz", "heatmap.nii.gz", "verdict.tsv", "slices.tsv",
         "verdict.schema.tsv", "slices.schema.tsv")}  # tables' column types beside them
    import SimpleITK as sitk

    fused = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "TCGA-DU-7294_t2_fused.nii.gz")))
    assert fused.shape == (40, 96, 96) and 0.0 <= fused.min() and fused.max() <= 1.0
    assert np.isfinite(fused).all() and fused.max() > 0.5
    verdict = (out / "TCGA-DU-7294_t2_verdict.tsv").read_text(encoding="utf-8").splitlines()
    assert verdict[0].split("\t") == ["class", "probability"] and len(verdict) >= 3
