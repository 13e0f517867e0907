"""ClinicalFMamba 3D Slicer module: fuse two co-registered volumes and classify the result.

The networks run in a separate process, ClinicalFMambaLib's worker (``PythonSlicer -m
ClinicalFMambaLib.worker``), never in Slicer's own process: this file checks the inputs,
brings B onto A's grid, writes both to a private temporary folder, starts the worker, follows
its progress lines, and publishes what it wrote as MRML nodes on the main thread. Cancel kills
the worker's whole process tree. Torch is never imported here, so Slicer lists the module
before PyTorch is installed. Without the Slicer application (pip's ``slicer-core``: real MRML,
no Qt) the logic works the same and the GUI classes stay inert.

Supported Slicer versions: 5.6, 5.8 and 5.10 (docs/slicer.md).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.util import VTKObservationMixin
from vtk.util.numpy_support import vtk_to_numpy

try:  # the Slicer application
    import qt
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
    from slicer.ScriptedLoadableModule import (ScriptedLoadableModule,
                                               ScriptedLoadableModuleLogic,
                                               ScriptedLoadableModuleTest,
                                               ScriptedLoadableModuleWidget)
except ModuleNotFoundError:  # pip's slicer-core: MRML without Qt; the GUI classes stay unused
    qt = None

    class _WithoutApplication:
        """Base of the module, widget and test classes where there is no application."""

    ScriptedLoadableModule = ScriptedLoadableModuleWidget = _WithoutApplication
    ScriptedLoadableModuleTest = _WithoutApplication
    ScriptedLoadableModuleLogic = object

    def parameterNodeWrapper(cls):
        return cls


def _libraryRoot() -> Path:
    """Folder holding ClinicalFMambaLib/ and Resources/: this file's folder once installed,
    its parent in a source checkout."""
    here = Path(__file__).resolve().parent
    return here if (here / "ClinicalFMambaLib").is_dir() else here.parent


LIBRARY_ROOT = _libraryRoot()
if str(LIBRARY_ROOT) not in sys.path:
    sys.path.insert(0, str(LIBRARY_ROOT))

SUPPORTED_SLICER = ((5, 6), (5, 8), (5, 10))  # tested against these releases' sources
SAMPLE_DIR = LIBRARY_ROOT / "Resources" / "sample" / "volume"
SAMPLE_FILES = ("TCGA-DU-7294_t2.nii.gz", "TCGA-DU-7294_flair.nii.gz")
MODEL_CHOICES = ("auto", "2d", "3d")  # ClinicalFMambaLib.volume_fusion.MODEL_KINDS
DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEFAULT_EMPHASIS = 0.25  # ClinicalFMambaLib.network.DEFAULT_EMPHASIS (imports torch)
EMPHASIS = "ClinicalFMamba.Emphasis"  # attribute of the fused node: the emphasis fused with
# Import name -> pip requirement of every package the library needs besides torch (which
# comes from the PyTorch extension); the same as pyproject.toml's dependencies.
REQUIREMENTS = {
    "numpy": "numpy>=1.24", "scipy": "scipy>=1.10", "skimage": "scikit-image>=0.21",
    "SimpleITK": "SimpleITK>=2.3", "safetensors": "safetensors>=0.4", "tqdm": "tqdm>=4.60",
    "PIL": "Pillow>=9.0",
}
MINIMUM_TORCH = "2.1"  # pyproject.toml: torch>=2.1
HEATMAP_THRESHOLD = 0.3  # heat below this is transparent, so the fused image shows through
HEATMAP_COLORS = "ClinicalFMamba heatmap"
ROLE = "ClinicalFMamba.Role"  # attribute marking the nodes this module made
VERDICT = "ClinicalFMamba.Verdict"
# Node references from the fused volume to its companions.
REFERENCES = ("Heatmap", "Probabilities", "SliceVerdicts", "Metrics")
POLL_SECONDS = 0.05  # how often the blocking ``fuse`` looks at the worker


class DependencyError(RuntimeError):
    """A package the module needs is missing and was not installed."""


class Cancelled(RuntimeError):
    """The run was cancelled (by the user, a scene close or a removed input)."""


class WorkerFailed(RuntimeError):
    """The worker process reported an error, crashed or was killed."""


#
# Module
#

class ClinicalFMamba(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "ClinicalFMamba"
        self.parent.categories = ["Filtering"]
        self.parent.dependencies = []
        self.parent.contributors = ["ClinicalFMamba developers"]
        self.parent.helpText = (
            "Fuses two co-registered volumes (MRI with CT, PET or SPECT; colour maps are fused"
            " on their luma) with a CNN-Mamba network and shows a tumour classifier's verdict"
            " and heatmap on the result. Volume B is resampled onto volume A when their grids"
            " differ. The networks run in a separate process; Cancel stops it at once."
            " Supported Slicer versions: 5.6, 5.8, 5.10. See docs/slicer.md of the"
            " SlicerClinicalFMamba repository.")
        self.parent.acknowledgementText = (
            "Method: ClinicalFMamba (Zhou and Khalvati, MICCAI MLMI 2025), re-implemented.")


#
# Parameter node
#

@parameterNodeWrapper
class ClinicalFMambaParameterNode:
    inputA: vtkMRMLScalarVolumeNode
    inputB: vtkMRMLScalarVolumeNode
    output: vtkMRMLScalarVolumeNode
    model: Annotated[str, Choice(list(MODEL_CHOICES))] = "auto"
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = "auto"
    classify: bool = True
    metrics: bool = False
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
    emphasis: Annotated[float, WithinRange(0.0, 1.0)] = DEFAULT_EMPHASIS


#
# Widget (needs the Qt application; kept thin: the logic's FusionJob does the work)
#

class ClinicalFMambaWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    POLL_MS = 100

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._guiTag = None
        self._job = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self._uiWidget = slicer.util.loadUI(self.resourcePath("UI/ClinicalFMamba.ui"))
        self.layout.addWidget(self._uiWidget)
        self.ui = slicer.util.childWidgetVariables(self._uiWidget)
        self._uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ClinicalFMambaLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.timeout.connect(self._poll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.fuseButton.clicked.connect(self.onFuseButton)
        if (slicer.app.majorVersion, slicer.app.minorVersion) < SUPPORTED_SLICER[0]:
            self.ui.statusLabel.text = "This Slicer is older than 5.6, which ClinicalFMamba needs."
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the module is reloaded or Slicer quits: the timer stops and the worker
        is killed, so nothing polls deleted widgets or runs on unseen."""
        self._timer.stop()
        if self._job is not None:
            self._job.cancel("the module was closed")
            self._job.close()
            self._job = None
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)  # a running job goes on; its timer publishes the result

    def onSceneStartClose(self, caller, event) -> None:
        # The job cancels itself on the same event (FusionJob._onSceneClose).
        self.setParameterNode(None)
        self._showVerdict("")

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self._updateButton)
        self._parameterNode = parameterNode
        if self._parameterNode:
            # connectGui returns its tag only from 5.10 (wrapper.py, v5.8.1 line 253 lacks the
            # return that v5.10.0 line 253 has), so disconnectGui above did nothing on 5.6/5.8
            # and stale connectors reset Model/Device. connectParametersToGui returns the tag
            # in 5.6-5.10 (wrapper.py lines 194-213).
            self._guiTag = self._parameterNode.connectParametersToGui(self._parameterWidgets())
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButton)
            self._updateButton()

    def _parameterWidgets(self) -> dict:
        return {widget.property("SlicerParameterName"): widget
                for widget in self._uiWidget.findChildren(qt.QWidget)
                if widget.property("SlicerParameterName")}

    def _updateButton(self, caller=None, event=None) -> None:
        if self._job is not None:
            return
        p = self._parameterNode
        self.ui.emphasisSlider.enabled = bool(p and p.model == "2d")  # the 2D network's
        ready = bool(p and p.inputA and p.inputB)
        self.ui.fuseButton.enabled = ready
        self.ui.fuseButton.toolTip = "Fuse A and B" if ready else "Select input volumes A and B"

    def onFuseButton(self) -> None:
        if self._job is not None:
            self._job.cancel("cancelled by the user")
            self._poll()
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("ClinicalFMamba could not start.", waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True)
            self._job = self.logic.start(
                p.inputA, p.inputB, p.output, model=p.model, device=p.device,
                classify=p.classify, metrics=p.metrics, heatmapOpacity=p.heatmapOpacity,
                emphasis=p.emphasis if p.model == "2d" else None)
            self._timer.start()
            self.ui.fuseButton.text = "Cancel"
            self.ui.statusLabel.text = "Starting..."
            self._showVerdict("")

    def _poll(self) -> None:
        job = self._job
        finished = job.poll()
        self.ui.progressBar.value = int(round(100 * job.fraction))
        self.ui.statusLabel.text = job.status
        if not finished:
            return
        self._timer.stop()
        self._job = None
        self.ui.fuseButton.text = "Fuse"
        self._updateButton()
        try:
            if job.state == "failed":
                slicer.util.errorDisplay(f"ClinicalFMamba failed: {job.error}")
            elif job.state == "done":
                with slicer.util.tryWithErrorDisplay("Could not show the result.", waitCursor=True):
                    output = self.logic.publish(job)
                    self._showTables(output)
                    self._showVerdict(output.GetAttribute(VERDICT) or "")
                    self.ui.statusLabel.text = job.status
        finally:
            job.close()

    def _showTables(self, output) -> None:
        self.ui.probabilitiesView.setMRMLTableNode(output.GetNodeReference("Probabilities"))
        self.ui.sliceVerdictsView.setMRMLTableNode(output.GetNodeReference("SliceVerdicts"))
        self.ui.metricsView.setMRMLTableNode(output.GetNodeReference("Metrics"))

    def _showVerdict(self, text: str) -> None:
        """In the module panel and on the upper edge of every slice view. DataProbe's slice
        annotations rewrite only the four corners on each slice change
        (DataProbeLib/SliceViewAnnotations.py, v5.8.1 and v5.10.0: four cornerTexts, lines
        52-86; drawCornerAnnotations, lines 639-666, sets positions 0-3; clearing covers
        range(4), line 401; v5.6.2: the same one line later), so the upper edge (position 7)
        keeps the verdict while the user scrolls."""
        self.ui.verdictLabel.text = text
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        for name in layoutManager.sliceViewNames():
            view = layoutManager.sliceWidget(name).sliceView()
            view.cornerAnnotation().SetText(vtk.vtkCornerAnnotation.UpperEdge, text)
            view.scheduleRender()


#
# Logic
#

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

    ``state``: "prepared", "running", "done", "failed" or "cancelled".
    """

    def __init__(self, inputA, inputB, output, a: np.ndarray, b: np.ndarray,
                 worldIJKToRAS: np.ndarray, options: dict, warnings: list[str]) -> None:
        self.inputA, self.inputB, self.output = inputA, inputB, output
        self.a, self.b, self.worldIJKToRAS = a, b, worldIJKToRAS
        self.options = options
        self.warnings = warnings
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
        from ClinicalFMambaLib import worker

        worker.remove_orphaned_folders(Path(tempfile.gettempdir()))
        self.folder = Path(tempfile.mkdtemp(prefix=worker.FOLDER_PREFIX))
        try:
            (self.folder / worker.JOB_FILE).write_text(json.dumps(
                {key: self.options[key] for key in ("model", "device", "classify", "metrics",
                                                    "classifier", "emphasis")}
                | {"caller": os.getpid()}))
            _writeVolume(self.a, self.worldIJKToRAS, self.folder / worker.INPUT_A)
            _writeVolume(self.b, self.worldIJKToRAS, self.folder / worker.INPUT_B)
            self.process = worker.WorkerProcess(python or workerPython(), self.folder,
                                                LIBRARY_ROOT)
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
        from ClinicalFMambaLib import worker

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
        if code == 0 and (self.folder / worker.RESULT).is_file():
            self.result = json.loads((self.folder / worker.RESULT).read_text())
            self.state, self.fraction = "done", 1.0
            self.status = "; ".join([f"Done{_verdictSuffix(self.result)}"] + self.warnings)
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
        return self.folder / name


class ClinicalFMambaLogic(ScriptedLoadableModuleLogic):
    """Fusion on MRML nodes, usable from the GUI, the Python console and batch scripts::

        logic = ClinicalFMambaLogic()
        logic.ensureDependencies(askConfirmation=False)
        fused = logic.fuse(volumeA, volumeB)          # blocks; returns the new volume node
        table = fused.GetNodeReference("Probabilities")

    The GUI uses the same worker without blocking: ``job = logic.start(...)``,
    ``job.poll()`` from a timer, then ``logic.publish(job)``.
    """

    def getParameterNode(self):
        return ClinicalFMambaParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ dependencies

    def ensureDependencies(self, askConfirmation: bool = True) -> None:
        """Make torch (>= MINIMUM_TORCH) and the library's packages installed, installing
        what is missing, without importing torch into Slicer's process.

        torch comes from the PyTorch extension (PyTorchUtils), the rest from pip. With
        ``askConfirmation`` the user is asked first; a refusal or a failed installation
        raises ``DependencyError`` saying what is missing. The optional mamba-ssm kernel is
        not installed from here (it compiles for minutes): docs/slicer.md says how.
        """
        if importlib.util.find_spec("torch") is None:
            self._installTorch(askConfirmation)
        else:
            _checkTorchVersion()
        missing = [requirement for name, requirement in REQUIREMENTS.items()
                   if importlib.util.find_spec(name) is None]
        if missing:
            self._confirm(f"ClinicalFMamba needs these Python packages: {', '.join(missing)}."
                          " Download and install them now?", askConfirmation,
                          f"ClinicalFMamba cannot run without {', '.join(missing)} (installation"
                          " was declined)")
            self._pipInstall(missing)

    @staticmethod
    def _confirm(question: str, ask: bool, refusal: str) -> None:
        if ask and not slicer.util.confirmOkCancelDisplay(question):
            raise DependencyError(refusal)

    def _installTorch(self, ask: bool) -> None:
        try:
            import PyTorchUtils
        except ModuleNotFoundError as error:
            raise DependencyError("PyTorch is not installed and the PyTorch extension is missing:"
                                  " install 'PyTorch' from the Extensions Manager, restart Slicer"
                                  " and try again") from error
        self._confirm("ClinicalFMamba needs PyTorch (a large download). Install it now?", ask,
                      "ClinicalFMamba cannot run without PyTorch (installation was declined)")
        try:
            # The version requirement as SlicerTotalSegmentator passes it (TotalSegmentator.py
            # lines 844-887).
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH}")
        except Exception as error:
            raise DependencyError(f"installing PyTorch failed: {error}") from error
        if torch is None:
            raise DependencyError("PyTorch was not installed; ClinicalFMamba cannot run without it")

    @staticmethod
    def _pipInstall(requirements: list[str]) -> None:
        try:
            slicer.util.pip_install(requirements)
        except Exception as error:
            raise DependencyError(
                f"installing {', '.join(requirements)} failed: {error}") from error

    # ------------------------------------------------------------------ fusion

    def fuse(self, inputA, inputB, output=None, *, model: str = "auto", device: str = "auto",
             classify: bool = True, metrics: bool = False, heatmapOpacity: float = 0.4,
             classifier: str | None = None, progress: Callable[[float], None] | None = None,
             cancel: Callable[[], bool] | None = None, emphasis: float | None = None):
        """Fuse two volume nodes and return the fused volume node (blocking).

        ``output``: a volume node to overwrite, or None for a new one beside A in the subject
        hierarchy. With ``classify`` the tumour classifier (``classifier``: weights path,
        default the bundled one) adds a heatmap volume and verdict tables, referenced from
        the output node (``GetNodeReference("Heatmap" | "Probabilities" | "SliceVerdicts"
        | "Metrics")``). ``emphasis`` (2D model): from 0, faithful to the sources, to 1,
        sharper; None: the network's default; the value used is the output's ``EMPHASIS``
        attribute (none, with a warning, for weights without the control).
        ``progress(fraction)`` follows the worker; ``cancel()`` returning True kills it and
        raises ``Cancelled``; a worker error raises ``WorkerFailed``. Inputs are never
        modified, and a cancelled or failed run leaves the scene as it was.
        """
        job = self.start(inputA, inputB, output, model=model, device=device, classify=classify,
                         metrics=metrics, heatmapOpacity=heatmapOpacity, classifier=classifier,
                         emphasis=emphasis)
        try:
            reported = None
            while not job.poll():
                if progress is not None and job.fraction != reported:
                    reported = job.fraction
                    progress(reported)
                if cancel is not None and cancel():
                    job.cancel("cancelled by the caller")
                    break
                if hasattr(slicer, "app"):  # inside Slicer: keep the views painting
                    slicer.app.processEvents()
                time.sleep(POLL_SECONDS)
            if job.state == "done" and progress is not None and reported != 1.0:
                progress(1.0)
            return self.publish(job)
        finally:
            job.close()

    def start(self, inputA, inputB, output=None, **options) -> FusionJob:
        """``prepare`` and start the worker; returns the running job (not blocking)."""
        return self.prepare(inputA, inputB, output, **options).start()

    def prepare(self, inputA, inputB, output=None, *, model: str = "auto", device: str = "auto",
                classify: bool = True, metrics: bool = False, heatmapOpacity: float = 0.4,
                classifier: str | None = None, emphasis: float | None = None) -> FusionJob:
        """Check the inputs and options and copy the voxels out of the nodes (B on A's grid)."""
        _checkInputs(inputA, inputB, output)
        _checkOption("model", model, MODEL_CHOICES)
        _checkOption("device", device, DEVICE_CHOICES)
        if not 0.0 <= heatmapOpacity <= 1.0:
            raise ValueError(f"heatmapOpacity must lie in [0, 1], not {heatmapOpacity}")
        if emphasis is not None and not 0.0 <= emphasis <= 1.0:  # also refuses NaN
            raise ValueError(f"emphasis must lie in [0, 1], not {emphasis}")
        if classifier is not None and not Path(classifier).is_file():
            raise FileNotFoundError(f"classifier weights not found: {classifier}")
        colour = _isColour(inputA) or _isColour(inputB)
        if _isColour(inputA) and _isColour(inputB):
            raise ValueError("both volumes are colour; one must be the grey anatomical volume")
        if output is not None and output.IsA("vtkMRMLVectorVolumeNode") != colour:
            kind = "a vector (colour)" if colour else "a scalar"
            raise ValueError(f"output {output.GetName()!r} must be {kind} volume for this pair;"
                             " leave it empty to create a new one")
        matrixA, matrixB = _worldIJKToRAS(inputA), _worldIJKToRAS(inputB)
        a = np.array(slicer.util.arrayFromVolume(inputA))
        b, warning = _onGridOf(inputA, matrixA, inputB, matrixB)
        options = dict(model=model, device=device, classify=classify, metrics=metrics,
                       emphasis=None if emphasis is None else float(emphasis),
                       heatmapOpacity=heatmapOpacity, colour=colour,
                       classifier=str(Path(classifier).resolve()) if classifier else None)
        return FusionJob(inputA, inputB, output, a, b, matrixA, options,
                         [warning] if warning else [])

    def publish(self, job: FusionJob):
        """Write a finished job's results into nodes and show them; returns the fused node.

        New nodes come first and an existing output node is written last, so a failure
        leaves it as it was; every node made here is removed again (with its display and
        storage nodes and subject-hierarchy item) if anything fails. Fusing again into a
        previous result replaces that result's heatmap and tables.
        """
        _checkPublishable(job)
        from ClinicalFMambaLib import worker

        created = []
        try:
            name = (job.output.GetName() if job.output is not None
                    else slicer.mrmlScene.GenerateUniqueName(_outputName(job)))
            companions = {}
            classification = job.result["classification"]
            if classification is not None:
                companions.update(_publishClassification(job, classification, name, created))
            if job.result["metrics"] is not None:
                table = _newNode(created, "vtkMRMLTableNode", f"{name} metrics")
                _fillTable(table, {"metric": list(job.result["metrics"]),
                                   "value": list(job.result["metrics"].values())})
                companions["Metrics"] = table
            for node in companions.values():
                _placeBeside(node, job.inputA)
            fused = _readVolumeArray(job.file(worker.FUSED), "fused volume",
                                     colour=job.options["colour"])
            if fused.shape[:3] != tuple(reversed(job.inputA.GetImageData().GetDimensions())):
                raise ValueError("volume A changed its grid during the run; fuse again")
            output = job.output
            if output is None:
                output = _newNode(created, "vtkMRMLVectorVolumeNode" if fused.ndim == 4
                                  else "vtkMRMLScalarVolumeNode", name)
                _placeBeside(output, job.inputA)
            previous = [output.GetNodeReference(role) for role in REFERENCES]
            _placeLike(output, job.inputA, fused)  # an existing output: the one write, last
        except Exception:
            for node in reversed(created):
                _removeNode(node)
            raise
        for role in REFERENCES:
            output.SetNodeReferenceID(role, companions[role].GetID() if role in companions
                                      else None)
        output.SetAttribute(VERDICT, _verdictText(classification))
        used = job.result.get("emphasis")
        output.SetAttribute(EMPHASIS, None if used is None else str(used))
        for node in previous:
            if node is not None and node not in (job.inputA, job.inputB):
                _removeNode(node)
        _show(output, companions.get("Heatmap"), job.options["heatmapOpacity"])
        for message in job.warnings:
            logging.warning(message)
        return output

    # ------------------------------------------------------------------ files

    @staticmethod
    def loadVolume(path: str | Path, name: str | None = None):
        """Read a volume file into a new scalar (or colour vector) volume node; a truncated
        or corrupt file is refused by name (the library's check: the reader would fill the
        missing voxels with zeros)."""
        from ClinicalFMambaLib.image_io import check_complete_file  # no torch

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"volume file not found: {path}")
        check_complete_file(path)
        storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                                  name or path.name.split(".")[0])
        if not storage.ReadData(node):
            slicer.mrmlScene.RemoveNode(node)
            slicer.mrmlScene.RemoveNode(storage)
            raise ValueError(f"{path} is not a readable volume")
        node.SetAndObserveStorageNodeID(storage.GetID())
        node.CreateDefaultDisplayNodes()
        return node

    def loadSample(self) -> tuple:
        """The bundled co-registered T2 / FLAIR pair as two volume nodes."""
        return tuple(self.loadVolume(SAMPLE_DIR / name) for name in SAMPLE_FILES)

    @staticmethod
    def saveNode(node, path: str | Path) -> Path:
        """Write a volume or table node to ``path`` (format from the extension) through a
        storage node outside the scene; raises when the writer reports a failure."""
        path = Path(path)
        if node.IsA("vtkMRMLTableNode"):
            storage = slicer.vtkMRMLTableStorageNode()
        else:
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        if not storage.WriteData(node):
            raise OSError(f"could not write {node.GetName()!r} to {path}")
        return path


# ---------------------------------------------------------------------- checks

def _checkTorchVersion() -> None:
    try:
        installed = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return  # a torch without metadata (built from source): nothing to compare
    release = tuple(int(part) for part in installed.split("+")[0].split(".")[:2]
                    if part.isdigit())
    minimum = tuple(int(part) for part in MINIMUM_TORCH.split("."))
    if release < minimum:
        raise DependencyError(f"PyTorch {installed} is too old; ClinicalFMamba needs"
                              f" {MINIMUM_TORCH} or newer (PyTorch Utils module: install with"
                              f" the requirement >={MINIMUM_TORCH})")


def _checkOption(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _checkInputs(inputA, inputB, output) -> None:
    for label, node in (("A", inputA), ("B", inputB)):
        if node is None:
            raise ValueError(f"input volume {label} is not set")
        if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise ValueError(f"input {label} ({node.GetName()!r}) must be a scalar or colour "
                             f"image volume, not a {node.GetClassName()}")
        if node.GetImageData() is None:
            raise ValueError(f"input {label} ({node.GetName()!r}) has no image data")
    if inputA is inputB:
        raise ValueError("inputs A and B are the same volume; choose two different volumes")
    if output is not None and output in (inputA, inputB):
        raise ValueError("the output must not be an input volume (inputs are never modified);"
                         " leave it empty to create a new volume")


def _checkPublishable(job: FusionJob) -> None:
    if job.state == "cancelled":
        raise Cancelled(job.status)
    if job.state == "failed":
        raise WorkerFailed(job.error)
    if job.state != "done":
        raise RuntimeError(f"the job has not finished (state {job.state!r})")
    scene = slicer.mrmlScene
    for label, node in (("input A", job.inputA), ("input B", job.inputB),
                        ("the output", job.output)):
        if node is not None and (node.GetScene() is not scene or not scene.IsNodePresent(node)):
            raise Cancelled(f"{label} was removed during the run; nothing was created")


# ---------------------------------------------------------------------- volumes

def _isColour(node) -> bool:
    return node.GetImageData().GetNumberOfScalarComponents() in (3, 4)


def _worldIJKToRAS(node) -> np.ndarray:
    """IJK-to-RAS of a volume including its (linear) parent transforms."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    transform = node.GetParentTransformNode()
    if transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise ValueError(f"{node.GetName()!r} is under a non-linear transform; harden it"
                             " (Data module) before fusing")
        toWorld = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(toWorld)
        vtk.vtkMatrix4x4.Multiply4x4(toWorld, matrix, matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def _describeGrid(node, matrix: np.ndarray) -> str:
    size = "x".join(str(n) for n in node.GetImageData().GetDimensions())
    spacing = "x".join(f"{s:g}" for s in np.linalg.norm(matrix[:3, :3], axis=0))
    return f"{size} voxels of {spacing} mm"


def _onGridOf(inputA, matrixA: np.ndarray, inputB, matrixB: np.ndarray
              ) -> tuple[np.ndarray, str | None]:
    """B's voxels on A's grid, in world space (linear interpolation, 0 outside B), and a
    warning when B had to be resampled. MRML image data have origin 0 and spacing 1, so
    the reslice axes are A's voxel-to-B's voxel matrix."""
    dimsA = inputA.GetImageData().GetDimensions()
    if dimsA == inputB.GetImageData().GetDimensions() and np.allclose(matrixA, matrixB,
                                                                      atol=1e-4):
        return np.array(slicer.util.arrayFromVolume(inputB)), None
    reslice = vtk.vtkImageReslice()
    reslice.SetInputData(inputB.GetImageData())
    reslice.SetResliceAxes(slicer.util.vtkMatrixFromArray(np.linalg.inv(matrixB) @ matrixA))
    reslice.SetInterpolationModeToLinear()
    reslice.SetBackgroundLevel(0.0)
    reslice.SetOutputOrigin(0.0, 0.0, 0.0)
    reslice.SetOutputSpacing(1.0, 1.0, 1.0)
    reslice.SetOutputExtent(0, dimsA[0] - 1, 0, dimsA[1] - 1, 0, dimsA[2] - 1)
    if not _isColour(inputB):
        reslice.SetOutputScalarType(vtk.VTK_FLOAT)
    reslice.Update()
    scalars = vtk_to_numpy(reslice.GetOutput().GetPointData().GetScalars())
    components = scalars.shape[1:] if scalars.ndim == 2 else ()
    b = scalars.reshape(tuple(reversed(dimsA)) + components).copy()
    return b, (f"volume B resampled from its grid ({_describeGrid(inputB, matrixB)}) onto"
               f" volume A's ({_describeGrid(inputA, matrixA)})")


def _writeVolume(array: np.ndarray, ijkToRAS: np.ndarray, path: Path) -> None:
    """Voxels with a geometry into an uncompressed NRRD file, through a storage node and a
    volume node that never enter the scene."""
    node = slicer.vtkMRMLVectorVolumeNode() if array.ndim == 4 else slicer.vtkMRMLScalarVolumeNode()
    slicer.util.updateVolumeFromArray(node, array)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToRAS))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.UseCompressionOff()
    if not storage.WriteData(node):
        raise OSError(f"could not write the worker's input {path}")


def _readVolumeArray(path: Path, what: str, colour: bool = False) -> np.ndarray:
    """Voxels of a volume file the worker wrote, read outside the scene."""
    node = slicer.vtkMRMLVectorVolumeNode() if colour else slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not path.is_file() or not storage.ReadData(node):
        raise WorkerFailed(f"the worker's {what} ({path.name}) could not be read")
    return np.array(slicer.util.arrayFromVolume(node))


# ---------------------------------------------------------------------- nodes

def _outputName(job: FusionJob) -> str:
    return f"{job.inputA.GetName()} + {job.inputB.GetName()} fused"


def _newNode(created: list, className: str, name: str):
    node = slicer.mrmlScene.AddNewNodeByClass(className, name)
    node.SetAttribute(ROLE, "result")
    created.append(node)
    return node


def _removeNode(node) -> None:
    """Remove a node with its display and storage nodes and its subject-hierarchy item
    (MRML removes none of them with the node)."""
    scene = node.GetScene()
    if scene is None:
        return
    companions = []
    if node.IsA("vtkMRMLDisplayableNode"):
        companions += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        companions.append(node.GetStorageNode())
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = sh.GetItemByDataNode(node)
    if item:
        sh.RemoveItem(item, False, False)
    scene.RemoveNode(node)
    for companion in companions:
        if companion is not None and scene.IsNodePresent(companion):
            scene.RemoveNode(companion)


def _placeLike(node, reference, array: np.ndarray) -> None:
    """Voxels of ``array`` on ``reference``'s grid and under its parent transform."""
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    slicer.util.updateVolumeFromArray(node, array)
    node.CreateDefaultDisplayNodes()


def _shItem(sh, node) -> int:
    return sh.GetItemByDataNode(node) or sh.CreateItem(sh.GetSceneItemID(), node)


def _placeBeside(node, reference) -> None:
    """Put ``node`` in the same subject-hierarchy folder (patient, study) as ``reference``."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    sh.SetItemParent(_shItem(sh, node), sh.GetItemParent(_shItem(sh, reference)))


def _heatmapColors(created: list):
    """The heatmap colour table: one per scene, found by its role (a name made unique by
    GenerateUniqueName, "..._1", would never be found again)."""
    for node in slicer.util.getNodesByClass("vtkMRMLColorTableNode"):
        if node.GetAttribute(ROLE) == "heatmap colours":
            return node
    colors = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode", HEATMAP_COLORS)
    colors.SetAttribute(ROLE, "heatmap colours")
    colors.SetTypeToIron()
    created.append(colors)
    return colors


def _styleHeatmap(heatmap, created: list) -> None:
    display = heatmap.GetDisplayNode()
    display.SetAndObserveColorNodeID(_heatmapColors(created).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetAutoThreshold(False)
    display.SetLowerThreshold(HEATMAP_THRESHOLD)
    display.SetUpperThreshold(1.0)
    display.SetApplyThreshold(True)


def _fillTable(table, columns: dict[str, list]) -> None:
    """Columns of strings or numbers into a table node (replacing its content)."""
    vtkTable = table.GetTable()
    vtkTable.Initialize()
    for name, values in columns.items():
        text = any(isinstance(v, str) for v in values)
        array = vtk.vtkStringArray() if text else vtk.vtkDoubleArray()
        array.SetName(name)
        for value in values:
            array.InsertNextValue(str(value) if text else float(value))
        vtkTable.AddColumn(array)
    table.Modified()


def _publishClassification(job: FusionJob, result: dict, name: str, created: list) -> dict:
    """Heatmap and tables of a classification (the heatmap only for a verdict in scope)."""
    from ClinicalFMambaLib import worker

    nodes = {}
    probabilities = _newNode(created, "vtkMRMLTableNode", f"{name} verdict")
    probabilities.SetAttribute(VERDICT, _verdictWord(result))
    if result.get("in_scope") is False:
        _fillTable(probabilities, {"verdict": ["not brain MRI"],
                                   "reason": [str(result.get("reason") or "")]})
        return {"Probabilities": probabilities}
    _fillTable(probabilities, {"class": result["classes"],
                               "probability": result["probabilities"]})
    nodes["Probabilities"] = probabilities
    slices = _newNode(created, "vtkMRMLTableNode", f"{name} slice verdicts")
    perSlice = np.asarray(result["slice_probabilities"], dtype=float)
    columns = {"slice": list(range(len(perSlice)))}
    columns.update({cls: list(perSlice[:, c]) for c, cls in enumerate(result["classes"])})
    columns["verdict"] = [result["classes"][i] for i in perSlice.argmax(1)]
    columns["in volume verdict"] = ["yes" if e else "no" for e in result["eligible"]]
    _fillTable(slices, columns)
    nodes["SliceVerdicts"] = slices
    if not result.get("heatmap", True):
        return nodes
    heatmap = _newNode(created, "vtkMRMLScalarVolumeNode",
                       f"{name} heatmap ({result['heatmap_class']})")
    _placeLike(heatmap, job.inputA, _readVolumeArray(job.file(worker.HEATMAP), "heatmap"))
    _styleHeatmap(heatmap, created)
    nodes["Heatmap"] = heatmap
    return nodes


# ---------------------------------------------------------------------- verdict

def _verdictWord(result: dict | None) -> str:
    """The volume verdict in a word: a class, "not brain MRI" or "uncertain"."""
    if result is None:
        return ""
    if result.get("in_scope") is False:
        return "not brain MRI"
    if result.get("prediction") in (None, "uncertain"):
        return "uncertain"
    return str(result["prediction"])


def _verdictText(result: dict | None) -> str:
    """What the module panel and the slice views show: the class with its probability, or
    that there is no verdict (out of scope, uncertain) and why."""
    word = _verdictWord(result)
    if not word:
        return ""
    if word in ("not brain MRI", "uncertain"):
        why = [result.get("reason")]
        if word == "uncertain" and result.get("tumour_probability") is not None:
            why.append(f"tumour probability {result['tumour_probability']:.0%}")
        why = "; ".join(text for text in why if text)
        return f"ClinicalFMamba: {word}, no tumour verdict" + (f" ({why})" if why else "")
    if result.get("tumour_probability") is not None and word != "notumor":
        # A volume: the type is the 2D classifier's suggestion, unvalidated on volumes
        # (docs/classifier.md), so the verdict is the calibrated tumour probability.
        from ClinicalFMambaLib.cli_classifier import type_suggestion  # no torch

        return (f"ClinicalFMamba: tumour ({result['tumour_probability']:.0%}), "
                f"{type_suggestion(word)}")
    return f"ClinicalFMamba: {word} ({max(result['probabilities']):.0%})"


def _verdictSuffix(result: dict) -> str:
    word = _verdictWord(result.get("classification"))
    return f": {word}" if word else ""


def _show(output, heatmap, opacity: float) -> None:
    """Fused volume as background, heatmap as foreground (display only: never fails the
    publish, whose nodes are already in place)."""
    inApplication = qt is not None and slicer.app.layoutManager() is not None
    try:
        slicer.util.setSliceViewerLayers(background=output, foreground=heatmap,
                                          foregroundOpacity=opacity, fit=inApplication)
    except Exception as error:
        logging.warning(f"ClinicalFMamba could not show the result in the views: {error}")


#
# Self-test
#

class ClinicalFMambaTest(ScriptedLoadableModuleTest):
    """The whole flow on the bundled sample: Slicer > Developer Tools > Reload and Test."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_fuse_sample()
        self.setUp()
        self.test_cancel_leaves_no_node()

    def test_fuse_sample(self) -> None:
        logic = ClinicalFMambaLogic()
        logic.ensureDependencies(askConfirmation=False)
        volumeA, volumeB = logic.loadSample()
        before = slicer.util.arrayFromVolume(volumeA).copy()
        fused = logic.fuse(volumeA, volumeB, device="cpu")
        self.assertEqual(slicer.util.arrayFromVolume(fused).shape, before.shape)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(volumeA), before))
        matrixA, matrixF = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volumeA.GetIJKToRASMatrix(matrixA)
        fused.GetIJKToRASMatrix(matrixF)
        self.assertTrue(np.allclose(slicer.util.arrayFromVTKMatrix(matrixA),
                                    slicer.util.arrayFromVTKMatrix(matrixF)))
        self.assertIsNotNone(fused.GetNodeReference("Probabilities"))
        self.delayDisplay(f"Fused and classified the sample: {fused.GetAttribute(VERDICT)}")

    def test_cancel_leaves_no_node(self) -> None:
        logic = ClinicalFMambaLogic()
        volumeA, volumeB = logic.loadSample()
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(Cancelled):
            logic.fuse(volumeA, volumeB, device="cpu", cancel=lambda: True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.delayDisplay("Cancelling left the scene unchanged")
