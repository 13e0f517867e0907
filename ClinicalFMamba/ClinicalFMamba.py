"""ClinicalFMamba 3D Slicer module: fuse two co-registered volumes and classify the result.

The networks run in a separate process, ClinicalFMambaLib's worker (``PythonSlicer -m
ClinicalFMambaLib.worker``), never in Slicer's own process: the logic checks the inputs,
brings B onto A's grid, writes both to a private temporary folder, starts the worker, follows
its progress lines, and publishes what it wrote as MRML nodes on the main thread. Cancel kills
the worker's whole process tree. Torch is never imported here, so Slicer lists the module
before PyTorch is installed. Without the Slicer application (pip's ``slicer-core``: real MRML,
no Qt) the logic works the same and the GUI classes stay inert.

This file holds the module, its parameter node, widget, logic and self-test; the work behind
them (the worker job, input checks, publishing, dependencies, sample data) is in the
module's own package beside it, ``ClinicalFMambaModuleLib``.

Supported Slicer versions: 5.6, 5.8 and 5.10 (docs/slicer.md).
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.util import VTKObservationMixin

# The module's own package: importable because Slicer puts a scripted module's folder on
# sys.path before loading it (Base/QTGUI/qSlicerScriptedLoadableModuleFactory.cxx line 59 in
# v5.6.2, v5.8.1 and v5.10.0).
import ClinicalFMambaModuleLib
from ClinicalFMambaModuleLib import dependencies, inputs, publishing
# The logic's errors, raised to callers as ClinicalFMamba.Cancelled and so on (docs/slicer.md).
from ClinicalFMambaModuleLib.errors import Cancelled, DependencyError, WorkerFailed  # noqa: F401
from ClinicalFMambaModuleLib.fusion_job import FusionJob
from ClinicalFMambaModuleLib.grids import onGridOf, worldIJKToRAS
from ClinicalFMambaModuleLib.inputs import DEVICE_CHOICES, MODEL_CHOICES
from ClinicalFMambaModuleLib.nodes import VERDICT
from ClinicalFMambaModuleLib.sample_data import sampleDataSource
from ClinicalFMambaModuleLib.volume_files import volumeName

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
SAMPLE_THUMBNAIL = Path(__file__).resolve().parent / "Resources/Icons/ClinicalFMambaSample.png"
DEFAULT_EMPHASIS = 0.25  # ClinicalFMambaLib.networks.fusion_net.DEFAULT_EMPHASIS (imports torch)
POLL_SECONDS = 0.05  # how often the blocking ``fuse`` looks at the worker


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
        # Slicer emits startupCompleted once, after every module is loaded (SampleData
        # included): when the main window is first shown, or at the first event-loop turn
        # without one (Base/QTApp/qSlicerApplicationHelper.txx lines 233-237 in v5.6.2, 314-318
        # in v5.8.1; qSlicerApplicationHelper.hxx lines 310-314 in v5.10.0). Only the
        # application makes this object (pip's slicer-core has no module factory), so the
        # connection is made only where slicer.app exists.
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Add the bundled T2/FLAIR pair to the Sample Data module, as Slicer's scripted-module
    template does (Utilities/Templates/Modules/Scripted/TemplateKey.py, lines 50-100 in
    v5.6.2, v5.8.1 and v5.10.0)."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(**sampleDataSource(
        [SAMPLE_DIR / name for name in SAMPLE_FILES], SAMPLE_THUMBNAIL))


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
    # A timer, not a thread, follows the worker: its timeout runs _poll on the main thread
    # between Qt events, where MRML may be changed (as Slicer's Endoscopy widget drives its
    # fly-through, Modules/Scripted/Endoscopy/Endoscopy.py lines 76-78 in v5.6.2-v5.10.0).
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

    def onReload(self) -> None:
        """Reload re-executes this file only (slicer.util.reloadScriptedModule: util.py lines
        1359-1390 in v5.6.2, 1399-1430 in v5.8.1, 1398-1431 in v5.10.0), so the module's own
        package is re-executed first, each part after those it imports."""
        for name in importlib.reload(ClinicalFMambaModuleLib).MODULES:
            importlib.reload(importlib.import_module(f"ClinicalFMambaModuleLib.{name}"))
        super().onReload()

    def cleanup(self) -> None:
        """Called when the module is reloaded or Slicer quits (slicer.util.reloadScriptedModule,
        util.py line 1405 in v5.6.2, 1445 in v5.8.1, 1446 in v5.10.0; moduleAboutToBeUnloaded,
        ScriptedLoadableModule.py lines 124-129 in v5.6.2, 126-131 in v5.8.1 and v5.10.0): the
        timer stops and the worker is killed, so nothing polls deleted widgets or runs on
        unseen."""
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

    @staticmethod
    def ensureDependencies(askConfirmation: bool = True) -> None:
        """Make torch and the library's packages installed, asking first with
        ``askConfirmation``; raises ``DependencyError`` naming what is missing
        (``ClinicalFMambaModuleLib.dependencies.ensureDependencies``)."""
        dependencies.ensureDependencies(askConfirmation)

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
                # Inside Slicer the views keep painting, as slicer.util.logProcessOutput keeps
                # them while it follows a process (util.py line 3804 in v5.6.2, 3852 in v5.8.1,
                # 3944 in v5.10.0).
                if hasattr(slicer, "app"):
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
        inputs.checkInputs(inputA, inputB, output)
        inputs.checkOptions(model=model, device=device, heatmapOpacity=heatmapOpacity,
                            emphasis=emphasis, classifier=classifier)
        colour = inputs.checkColours(inputA, inputB, output)
        matrixA, matrixB = worldIJKToRAS(inputA), worldIJKToRAS(inputB)
        a = np.array(slicer.util.arrayFromVolume(inputA))
        b, warnings = onGridOf(inputA, matrixA, inputB, matrixB)
        warnings += inputs.emptyWarnings(inputA, a, inputB, b)
        options = dict(model=model, device=device, classify=classify, metrics=metrics,
                       emphasis=None if emphasis is None else float(emphasis),
                       heatmapOpacity=heatmapOpacity, colour=colour,
                       classifier=str(Path(classifier).resolve()) if classifier else None)
        return FusionJob(inputA, inputB, output, a, b, matrixA, options, warnings, LIBRARY_ROOT)

    @staticmethod
    def publish(job: FusionJob):
        """Write a finished job's results into nodes and show them; returns the fused node.
        All or nothing: a failure removes every node made and leaves an existing output as it
        was; fusing again into a result replaces its heatmap and tables
        (``ClinicalFMambaModuleLib.publishing.publish``)."""
        return publishing.publish(job)

    @staticmethod
    def loadVolume(path: str | Path, name: str | None = None):
        """Read a volume file into a new scalar (or colour vector) volume node; a truncated
        or corrupt file, a 4D file or a single slice is refused by name (the library's check:
        the reader would fill missing voxels with zeros, or read one volume of several)."""
        from ClinicalFMambaLib.io.volumes import check_readable_volume

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"volume file not found: {path}")
        check_readable_volume(path)
        storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                                  name or volumeName(path))
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
