"""ClinicalFMamba 3D Slicer module: fuse two co-registered volumes and classify the result.

The numbers are computed by ClinicalFMambaLib (installed beside this file by the extension,
one folder up in a source checkout); this file moves volumes between MRML nodes and arrays,
sets up the display and binds the GUI to a parameter node. Torch is imported only after
``ClinicalFMambaLogic.ensureDependencies``, so Slicer can list the module before PyTorch is
installed. Without the Slicer application (pip's ``slicer-core``: real MRML, no Qt) the logic
works the same and the GUI classes stay inert.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.util import VTKObservationMixin

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

SAMPLE_DIR = LIBRARY_ROOT / "Resources" / "sample" / "volume"
SAMPLE_FILES = ("TCGA-DU-7294_t2.nii.gz", "TCGA-DU-7294_flair.nii.gz")
MODEL_CHOICES = ("auto", "2d", "3d")  # ClinicalFMambaLib.volume_fusion.MODEL_KINDS
DEVICE_CHOICES = ("auto", "cpu", "cuda")
# Import name -> pip requirement of every package the library needs besides torch (which
# comes from the PyTorch extension); the same as pyproject.toml's dependencies.
REQUIREMENTS = {
    "numpy": "numpy>=1.24", "scipy": "scipy>=1.10", "skimage": "scikit-image>=0.21",
    "SimpleITK": "SimpleITK>=2.3", "safetensors": "safetensors>=0.4", "tqdm": "tqdm>=4.60",
    "PIL": "Pillow>=9.0",
}
MAMBA_REQUIREMENT = "mamba-ssm>=2.0"
FUSION_SHARE = 0.7  # part of the progress bar for fusion when the result is classified
HEATMAP_THRESHOLD = 0.3  # heat below this is transparent, so the fused image shows through
HEATMAP_COLORS = "ClinicalFMamba heatmap"
# Node references from the fused volume to its companions.
REFERENCES = ("Heatmap", "Probabilities", "SliceVerdicts", "Metrics")


class DependencyError(RuntimeError):
    """A package the module needs is missing and was not installed."""


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
            " differ. See docs/slicer.md of the ClinicalFMamba repository.")
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


#
# Widget
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
        self._thread = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ClinicalFMamba.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ClinicalFMambaLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.timeout.connect(self._poll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.fuseButton.clicked.connect(self.onFuseButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._requestCancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self._requestCancel()
        self.setParameterNode(None)

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
            self._guiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButton)
            self._updateButton()

    def _updateButton(self, caller=None, event=None) -> None:
        if self._job is not None:
            return
        p = self._parameterNode
        ready = bool(p and p.inputA and p.inputB)
        self.ui.fuseButton.enabled = ready
        self.ui.fuseButton.toolTip = "Fuse A and B" if ready else "Select input volumes A and B"

    def onFuseButton(self) -> None:
        if self._job is not None:
            self._requestCancel()
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("ClinicalFMamba could not start.", waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True)
            self._job = self.logic.prepare(
                p.inputA, p.inputB, p.output, model=p.model, device=p.device,
                classify=p.classify, metrics=p.metrics, heatmapOpacity=p.heatmapOpacity)
            # The network runs in a thread (torch releases the GIL); MRML is touched only
            # here, on the main thread, before and after.
            self._thread = threading.Thread(target=self._job.runCatching, daemon=True)
            self._thread.start()
            self._timer.start()
            self.ui.fuseButton.text = "Cancel"
            self.ui.statusLabel.text = "Starting..."

    def _requestCancel(self) -> None:
        if self._job is not None:
            self._job.cancelRequested = True
            self.ui.statusLabel.text = "Cancelling..."

    def _poll(self) -> None:
        job = self._job
        self.ui.progressBar.value = int(round(100 * job.fraction))
        self.ui.statusLabel.text = job.status
        if self._thread.is_alive():
            return
        self._timer.stop()
        self._job = self._thread = None
        self.ui.fuseButton.text = "Fuse"
        self._updateButton()
        if job.cancelled:
            self.ui.statusLabel.text = "Cancelled; nothing was created."
        elif job.error is not None:
            self.ui.statusLabel.text = f"Failed: {job.error}"
            slicer.util.errorDisplay(f"ClinicalFMamba failed: {job.error}")
        else:
            with slicer.util.tryWithErrorDisplay("Could not show the result.", waitCursor=True):
                self._showTables(self.logic.publish(job))
                self.ui.statusLabel.text = job.status

    def _showTables(self, output) -> None:
        self.ui.probabilitiesView.setMRMLTableNode(output.GetNodeReference("Probabilities"))
        self.ui.sliceVerdictsView.setMRMLTableNode(output.GetNodeReference("SliceVerdicts"))
        self.ui.metricsView.setMRMLTableNode(output.GetNodeReference("Metrics"))


#
# Logic
#

@dataclass
class FusionJob:
    """Everything one fusion needs, taken from the nodes, and its results.

    ``run`` only touches numpy arrays and the library, so it may run in a worker thread;
    ``ClinicalFMambaLogic.publish`` turns the results into nodes on the main thread.
    """

    inputA: object
    inputB: object
    output: object
    a: np.ndarray
    b: np.ndarray
    worldIJKToRAS: np.ndarray
    options: dict
    fraction: float = 0.0
    status: str = ""
    cancelRequested: bool = False
    cancelled: bool = False
    error: BaseException | None = None
    fused: object = None
    classification: object = None
    metrics: dict | None = None
    warnings: list[str] = field(default_factory=list)

    def _report(self, fraction: float, status: str,
                progress: Callable[[float], None] | None) -> None:
        self.fraction, self.status = fraction, status
        if progress is not None:
            progress(fraction)

    def run(self, progress: Callable[[float], None] | None = None,
            cancel: Callable[[], bool] | None = None) -> None:
        """Fuse, classify, measure; raises the library's ``Cancelled`` when cancelled."""
        from ClinicalFMambaLib import classify, volume_fusion
        from ClinicalFMambaLib.fusion import resolve_device

        def stop() -> bool:
            return self.cancelRequested or (cancel is not None and cancel())

        opts = self.options
        share = FUSION_SHARE if opts["classify"] else 1.0
        # Both networks are loaded first, so a missing or corrupt file is reported at once.
        self._report(0.0, "Loading the networks", progress)
        model = volume_fusion.load_volume_model(opts["model"], opts["device"])
        classifier = None
        if opts["classify"]:
            classifier = classify.load_classifier(opts["classifier"],
                                                  device=str(resolve_device(opts["device"])))
        self.fused = volume_fusion.fuse_volumes(
            model, self.a, self.b, cancel=stop,
            progress=lambda f: self._report(share * f, "Fusing", progress))
        if classifier is not None:
            directions = volume_fusion.axes_of(self.worldIJKToRAS)[0]
            self.classification = classify.classify_volume(
                classifier, self.fused.luma, direction=directions, space="RAS", cancel=stop,
                progress=lambda done, total: self._report(
                    share + (1 - share) * done / total, "Classifying", progress))
        if opts["metrics"]:
            self.metrics = volume_fusion.volume_fusion_metrics(
                volume_fusion.volume_luma(self.a)[0], volume_fusion.volume_luma(self.b)[0],
                self.fused.luma)
        verdict = f": {self.classification.prediction}" if self.classification else ""
        self._report(1.0, "; ".join([f"Done{verdict}"] + self.warnings), progress)

    def runCatching(self) -> None:
        """``run`` for a worker thread: the outcome is kept in ``cancelled`` / ``error``."""
        from ClinicalFMambaLib.classify import Cancelled

        try:
            self.run()
        except Cancelled:
            self.cancelled = True
        except Exception as error:  # reported by the GUI on the main thread
            logging.exception("ClinicalFMamba failed")
            self.error = error


class ClinicalFMambaLogic(ScriptedLoadableModuleLogic):
    """Fusion on MRML nodes, usable from the GUI, the Python console and batch scripts::

        logic = ClinicalFMambaLogic()
        logic.ensureDependencies(askConfirmation=False)
        fused = logic.fuse(volumeA, volumeB)          # blocks; returns the new volume node
        table = fused.GetNodeReference("Probabilities")
    """

    def __init__(self) -> None:
        super().__init__()
        self._mambaOffered = False

    def getParameterNode(self):
        return ClinicalFMambaParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ dependencies

    def ensureDependencies(self, askConfirmation: bool = True) -> None:
        """Make torch and the library's packages importable, installing what is missing.

        torch comes from the PyTorch extension (PyTorchUtils), the rest from pip. With
        ``askConfirmation`` the user is asked first; a refusal or a failed installation
        raises ``DependencyError`` saying what is missing. On CUDA machines the optional
        mamba-ssm kernel is offered once (interactive use only).
        """
        if importlib.util.find_spec("torch") is None:
            self._installTorch(askConfirmation)
        missing = [requirement for name, requirement in REQUIREMENTS.items()
                   if importlib.util.find_spec(name) is None]
        if missing:
            self._confirm(f"ClinicalFMamba needs these Python packages: {', '.join(missing)}."
                          " Download and install them now?", askConfirmation,
                          f"ClinicalFMamba cannot run without {', '.join(missing)} (installation"
                          " was declined)")
            self._pipInstall(missing)
        if askConfirmation:
            self._offerMambaKernel()

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
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
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

    def _offerMambaKernel(self) -> None:
        """mamba-ssm (fused CUDA scan) is optional and only installable with CUDA."""
        import torch

        if (self._mambaOffered or not torch.cuda.is_available()
                or importlib.util.find_spec("mamba_ssm") is not None):
            return
        self._mambaOffered = True
        if slicer.util.confirmOkCancelDisplay(
                "A CUDA GPU is available. Install mamba-ssm for the faster fused selective-scan"
                " kernel (optional; needs a compiler and several minutes)?"):
            try:
                self._pipInstall([MAMBA_REQUIREMENT])
            except DependencyError as error:
                logging.warning(f"{error}; the pure-PyTorch scan is used instead")

    # ------------------------------------------------------------------ fusion

    def fuse(self, inputA, inputB, output=None, *, model: str = "auto", device: str = "auto",
             classify: bool = True, metrics: bool = False, heatmapOpacity: float = 0.4,
             classifier: str | None = None, progress: Callable[[float], None] | None = None,
             cancel: Callable[[], bool] | None = None):
        """Fuse two volume nodes and return the fused volume node (blocking).

        ``output``: a volume node to overwrite, or None for a new one beside A in the subject
        hierarchy. With ``classify`` the tumour classifier (``classifier``: weights path,
        default the bundled one) adds a heatmap volume and verdict tables, referenced from
        the output node (``GetNodeReference("Heatmap" | "Probabilities" | "SliceVerdicts"
        | "Metrics")``). Inputs are never modified; an error or ``cancel()`` returning True
        (the library's ``Cancelled``) leaves the scene as it was.
        """
        job = self.prepare(inputA, inputB, output, model=model, device=device, classify=classify,
                           metrics=metrics, heatmapOpacity=heatmapOpacity, classifier=classifier)
        job.run(progress, cancel)
        return self.publish(job)

    def prepare(self, inputA, inputB, output=None, *, model: str = "auto", device: str = "auto",
                classify: bool = True, metrics: bool = False, heatmapOpacity: float = 0.4,
                classifier: str | None = None) -> FusionJob:
        """Check the inputs and options and copy the voxels out of the nodes (B on A's grid)."""
        from ClinicalFMambaLib import volume_fusion

        _checkInputs(inputA, inputB, output)
        _checkOption("model", model, MODEL_CHOICES)
        _checkOption("device", device, DEVICE_CHOICES)
        if not 0.0 <= heatmapOpacity <= 1.0:
            raise ValueError(f"heatmapOpacity must lie in [0, 1], not {heatmapOpacity}")
        a = np.array(slicer.util.arrayFromVolume(inputA))
        b = np.array(slicer.util.arrayFromVolume(inputB))
        colour = volume_fusion.is_colour_volume(a) or volume_fusion.is_colour_volume(b)
        if output is not None and output.IsA("vtkMRMLVectorVolumeNode") != colour:
            kind = "a vector (colour)" if colour else "a scalar"
            raise ValueError(f"output {output.GetName()!r} must be {kind} volume for this pair;"
                             " leave it empty to create a new one")
        matrixA, matrixB = _worldIJKToRAS(inputA), _worldIJKToRAS(inputB)
        job = FusionJob(inputA, inputB, output, a, b, matrixA, dict(
            model=model, device=device, classify=classify, metrics=metrics,
            heatmapOpacity=heatmapOpacity, classifier=classifier))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            job.b = volume_fusion.on_grid_of(a, matrixA, b, matrixB)
        job.warnings = [str(w.message) for w in caught]  # logged with the result
        return job

    def publish(self, job: FusionJob):
        """Write a finished job's results into nodes and show them; returns the fused node.
        Nodes made here are removed again if anything fails."""
        created = []
        try:
            output = job.output
            if output is None:
                output = _newNode(created, _outputClass(job), _outputName(job))
            _placeLike(output, job.inputA, job.fused.fused)
            for role in REFERENCES:
                output.RemoveNodeReferenceIDs(role)
            heatmap = None
            if job.classification is not None:
                heatmap = self._publishClassification(job, output, created)
            if job.metrics is not None:
                table = _newNode(created, "vtkMRMLTableNode", f"{output.GetName()} metrics")
                _fillTable(table, {"metric": list(job.metrics),
                                   "value": list(job.metrics.values())})
                _reference(output, "Metrics", table)
            for node in [output] + [output.GetNodeReference(role) for role in REFERENCES]:
                if node is not None:
                    _placeBeside(node, job.inputA)
            _show(output, heatmap, job.options["heatmapOpacity"], _verdictText(job))
        except Exception:
            for node in created:
                slicer.mrmlScene.RemoveNode(node)
            raise
        for message in job.warnings:
            logging.warning(message)
        return output

    def _publishClassification(self, job: FusionJob, output, created: list):
        result = job.classification
        heatmap = _newNode(created, "vtkMRMLScalarVolumeNode",
                           f"{output.GetName()} heatmap ({result.heatmap_class})")
        _placeLike(heatmap, job.inputA, result.heatmap.astype(np.float32))
        _styleHeatmap(heatmap, created)
        _reference(output, "Heatmap", heatmap)
        probabilities = _newNode(created, "vtkMRMLTableNode", f"{output.GetName()} verdict")
        _fillTable(probabilities, {"class": result.classes,
                                   "probability": [float(p) for p in result.probabilities]})
        probabilities.SetAttribute("ClinicalFMamba.Verdict", result.prediction)
        _reference(output, "Probabilities", probabilities)
        slices = _newNode(created, "vtkMRMLTableNode", f"{output.GetName()} slice verdicts")
        columns = {"slice": list(range(len(result.slice_probabilities)))}
        columns.update({name: [float(p) for p in result.slice_probabilities[:, c]]
                        for c, name in enumerate(result.classes)})
        columns["verdict"] = [result.classes[i] for i in result.slice_probabilities.argmax(1)]
        columns["in volume verdict"] = ["yes" if e else "no" for e in result.eligible]
        _fillTable(slices, columns)
        _reference(output, "SliceVerdicts", slices)
        return heatmap

    # ------------------------------------------------------------------ files

    @staticmethod
    def loadVolume(path: str | Path, name: str | None = None):
        """Read a volume file into a new scalar (or colour vector) volume node."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"volume file not found: {path}")
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


# ---------------------------------------------------------------------- node helpers

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


def _outputClass(job: FusionJob) -> str:
    return "vtkMRMLVectorVolumeNode" if job.fused.fused.ndim == 4 else "vtkMRMLScalarVolumeNode"


def _outputName(job: FusionJob) -> str:
    return f"{job.inputA.GetName()} + {job.inputB.GetName()} fused"


def _newNode(created: list, className: str, name: str):
    node = slicer.mrmlScene.AddNewNodeByClass(className, slicer.mrmlScene.GenerateUniqueName(name))
    created.append(node)
    return node


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


def _reference(output, role: str, node) -> None:
    output.SetNodeReferenceID(role, node.GetID())


def _heatmapColors(created: list):
    """The heatmap colour table, made once per scene."""
    colors = slicer.mrmlScene.GetFirstNodeByName(HEATMAP_COLORS)
    if colors is None:
        colors = _newNode(created, "vtkMRMLColorTableNode", HEATMAP_COLORS)
        colors.SetTypeToIron()
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


def _verdictText(job: FusionJob) -> str:
    result = job.classification
    if result is None:
        return ""
    return f"ClinicalFMamba: {result.prediction} ({max(result.probabilities):.0%})"


def _show(output, heatmap, opacity: float, verdict: str) -> None:
    """Fused volume as background, heatmap as foreground, verdict in the view corners."""
    inApplication = qt is not None and slicer.app.layoutManager() is not None
    slicer.util.setSliceViewerLayers(background=output, foreground=heatmap,
                                      foregroundOpacity=opacity, fit=inApplication)
    if not inApplication:
        return
    layoutManager = slicer.app.layoutManager()
    for name in layoutManager.sliceViewNames():
        view = layoutManager.sliceWidget(name).sliceView()
        view.cornerAnnotation().SetText(vtk.vtkCornerAnnotation.UpperRight, verdict)
        view.forceRender()


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
        self.assertIsNotNone(fused.GetNodeReference("Heatmap"))
        probabilities = slicer.util.arrayFromTableColumn(
            fused.GetNodeReference("Probabilities"), "probability")
        self.assertAlmostEqual(float(probabilities.sum()), 1.0, places=4)
        self.delayDisplay("Fused and classified the sample")

    def test_cancel_leaves_no_node(self) -> None:
        logic = ClinicalFMambaLogic()
        volumeA, volumeB = logic.loadSample()
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(RuntimeError):
            logic.fuse(volumeA, volumeB, device="cpu", cancel=lambda: True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.delayDisplay("Cancelling left the scene unchanged")
