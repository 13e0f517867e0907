"""One fusion run by the worker process (``FusionJob``: start, poll, cancel, close) and the
interpreter that runs the worker."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import slicer
import vtk

from .verdict import verdictSuffix
from .volume_files import writeVolume


def workerPython() -> str:
    """The interpreter that runs the worker: inside Slicer its ``PythonSlicer`` launcher (which
    sets up Slicer's Python environment; found on PATH as SlicerMONAIAuto3DSeg,
    MONAIAuto3DSeg.py line 1300, and SlicerTotalSegmentator, TotalSegmentator.py line 1119,
    find it), elsewhere the current interpreter."""
    if not hasattr(slicer, "app"):
        return sys.executable
    found = shutil.which("PythonSlicer")
    if not found:
        raise RuntimeError("PythonSlicer was not found on Slicer's PATH; the fusion worker"
                           " cannot start (reinstall Slicer)")
    return found


class FusionJob:
    """One fusion of two volume nodes by the worker process: ``start``, then ``poll`` until it
    returns True; ``cancel`` kills the process tree at once. ``ClinicalFMambaLogic.publish``
    turns a finished job into nodes; ``close`` removes the temporary folder (and kills the
    worker if it still runs). The voxels are copied out of the nodes when the job is made,
    so the inputs may change while it runs without changing the result.

    ``state``: "prepared", "running", "done", "failed" or "cancelled". ``libraryRoot``: the
    folder holding ClinicalFMambaLib, where the worker runs.
    """

    def __init__(self, inputA, inputB, output, a: np.ndarray, b: np.ndarray,
                 worldIJKToRAS: np.ndarray, options: dict, warnings: list[str],
                 libraryRoot: Path) -> None:
        self.inputA, self.inputB, self.output = inputA, inputB, output
        self.a, self.b, self.worldIJKToRAS = a, b, worldIJKToRAS
        self.options = options
        self.warnings = warnings
        self.libraryRoot = libraryRoot
        self.state = "prepared"
        self.fraction, self.status = 0.0, ""
        self.error: str | None = None
        self.result: dict | None = None
        self.folder: Path | None = None
        self.process = None
        self._scene = None
        self._observers: list[int] = []

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def start(self, python: str | None = None) -> FusionJob:
        """Write the inputs and options to a new temporary folder and start the worker on it
        (``python``: the interpreter, default ``workerPython()``)."""
        from ClinicalFMambaLib.worker import process, protocol

        process.remove_orphaned_folders(Path(tempfile.gettempdir()))
        self.folder = Path(tempfile.mkdtemp(prefix=protocol.FOLDER_PREFIX))
        try:
            (self.folder / protocol.JOB_FILE).write_text(json.dumps(
                {key: self.options[key] for key in ("model", "device", "classify", "metrics",
                                                    "classifier", "emphasis")}
                | {"caller": os.getpid()}))
            writeVolume(self.a, self.worldIJKToRAS, self.folder / protocol.INPUT_A)
            writeVolume(self.b, self.worldIJKToRAS, self.folder / protocol.INPUT_B)
            self.process = process.WorkerProcess(python or workerPython(), self.folder,
                                                 self.libraryRoot)
        except BaseException:
            self.close()
            raise
        self.a = self.b = None  # the worker has them now
        self.state, self.status = "running", "Starting the worker"
        self._scene = slicer.mrmlScene
        self._observers = [
            self._scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent, self._onSceneClose),
            self._scene.AddObserver(slicer.vtkMRMLScene.NodeRemovedEvent, self._onNodeRemoved)]
        return self

    def _onSceneClose(self, caller, event) -> None:
        self.cancel("the scene was closed")

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def _onNodeRemoved(self, caller, event, node) -> None:
        for label, used in (("input A", self.inputA), ("input B", self.inputB),
                            ("the output", self.output)):
            if node is used:
                self.cancel(f"{label} was removed")

    def poll(self) -> bool:
        """Read the worker's new lines; True once the job has finished (any outcome)."""
        if self.state != "running":
            return self.finished
        from ClinicalFMambaLib.worker import protocol

        code = self.process.returncode()  # before reading: every line up to an exit is read
        for message in self.process.messages():
            if "progress" in message:
                self.fraction = float(message["progress"])
                self.status = str(message.get("status", self.status))
            if "warning" in message:
                self.warnings.append(str(message["warning"]))
            if "error" in message:
                self.error = str(message["error"])
        if code is None:
            return False
        self.process.kill()  # anything the worker started and left behind
        if code == 0 and (self.folder / protocol.RESULT).is_file():
            self.result = json.loads((self.folder / protocol.RESULT).read_text())
            self.state, self.fraction = "done", 1.0
            self.status = "; ".join([f"Done{verdictSuffix(self.result)}"] + self.warnings)
        else:
            if self.error is None:
                detail = self.process.stderr_tail()
                self.error = (f"the fusion worker {self.process.exit_description()}"
                              + (f": {detail}" if detail else " without a message"))
            self.state, self.status = "failed", f"Failed: {self.error}"
        self._stopObserving()
        return True

    def cancel(self, reason: str = "cancelled") -> None:
        """Kill the worker's process tree now; nothing will be published."""
        if self.finished:
            return
        if self.process is not None:
            self.process.kill()
        self.state, self.status = "cancelled", f"Cancelled ({reason}); nothing was created."
        self._stopObserving()

    def close(self) -> None:
        """Kill the worker if it still runs and remove the temporary folder."""
        if self.state in ("prepared", "running"):
            self.cancel("closed")
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self._stopObserving()

    def _stopObserving(self) -> None:
        for tag in self._observers:
            self._scene.RemoveObserver(tag)
        self._observers = []

    def file(self, name: str) -> Path:
        """A file in the job's folder (``ClinicalFMambaLib.worker.protocol`` names them)."""
        return self.folder / name
