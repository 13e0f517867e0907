"""The Slicer module's logic on real MRML (pip's slicer-core), with the bundled sample volumes.

The scene, storage nodes, subject hierarchy, colour logic and slice logic are Slicer's own
classes; only the Qt application is absent. The red slice view's blend (fused background,
heatmap foreground) is rendered to a PNG by vtkMRMLSliceLogic; with
CLINICALFMAMBA_WRITE_SCREENSHOT=1 that render becomes Resources/Screenshots/ClinicalFMamba.png.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import subprocess
import sys
import time
import types
import unittest
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

# PyPI's unrelated "slicer" package has the same import name: look for slicer-core itself.
if importlib.util.find_spec("slicer_core") is None:
    pytest.skip("slicer-core is not installed (pip install slicer-core)", allow_module_level=True)

import slicer  # noqa: E402
import vtk  # noqa: E402
from PIL import Image  # noqa: E402
from vtk.util.numpy_support import vtk_to_numpy  # noqa: E402

from ClinicalFMambaLib.clinical.classifier import BUNDLED_NAME
from ClinicalFMambaLib.fusion.volumes import MODEL_KINDS
from ClinicalFMambaLib.io.weights import bundled, save_weights
from ClinicalFMambaLib.networks.classifier_net import DEFAULT_ARCH, build_model
from ClinicalFMambaLib.networks.fusion_net import DEFAULT_EMPHASIS
from ClinicalFMambaLib.training.classifier_training import model_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ClinicalFMamba"))
import ClinicalFMamba as module  # noqa: E402
import ClinicalFMambaModuleLib  # noqa: E402
from ClinicalFMambaModuleLib.dependencies import REQUIREMENTS  # noqa: E402
from ClinicalFMambaModuleLib.heatmap import HEATMAP_COLORS, HEATMAP_THRESHOLD  # noqa: E402
from ClinicalFMambaModuleLib.nodes import EMPHASIS, REFERENCES, ROLE, VERDICT  # noqa: E402
from ClinicalFMambaModuleLib.sample_data import sampleDataSource  # noqa: E402
from ClinicalFMambaModuleLib.verdict import verdictText  # noqa: E402

torch.set_num_threads(1)  # other jobs share the CPU
SCREENSHOT = ROOT / "Resources" / "Screenshots" / "ClinicalFMamba.png"
VIEW_SIZE = 400


def matrix_of(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def fingerprint(node) -> tuple[str, bytes]:
    voxels = slicer.util.arrayFromVolume(node)
    return hashlib.sha256(voxels.tobytes()).hexdigest(), matrix_of(node).tobytes()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> str | None:
    """The bundled classifier, or (before it is trained) an untrained network of the same
    kind written to a temporary file: the code path is the same."""
    if bundled(BUNDLED_NAME).exists():
        return None
    config = model_config(["glioma", "meningioma", "notumor", "pituitary"], 64, 0.3, 0.3,
                          DEFAULT_ARCH)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("classifier") / "classifier.safetensors"
    save_weights(build_model(config).state_dict(), path, config)
    return str(path)


@pytest.fixture(scope="module")
def scene():
    """A real MRML scene with the default colour tables and a red slice view, as Slicer
    sets them up at start-up (the logics are kept alive with the scene)."""
    mrml = slicer.vtkMRMLScene()
    slicer.mrmlScene = mrml
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(mrml)
    red = slicer.vtkMRMLSliceLogic()
    red.SetMRMLScene(mrml)
    red.AddSliceNode("Red")
    yield mrml, red
    slicer.mrmlScene = None
    red.SetMRMLScene(None)
    colors.SetMRMLScene(None)


@pytest.fixture(scope="module")
def logic():
    return module.ClinicalFMambaLogic()


@pytest.fixture(scope="module")
def sample(scene, logic):
    """The bundled pair loaded through storage nodes, A inside a study folder."""
    volume_a, volume_b = logic.loadSample()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    study = sh.CreateFolderItem(sh.GetSceneItemID(), "Study")
    sh.CreateItem(study, volume_a)
    return volume_a, volume_b


@pytest.fixture(scope="module")
def run(sample, logic, classifier):
    """One full fusion + classification + metrics of the sample; its inputs' fingerprints
    before and after, and the progress reports."""
    volume_a, volume_b = sample
    before = [fingerprint(volume_a), fingerprint(volume_b)]
    reports: list[float] = []
    fused = logic.fuse(volume_a, volume_b, device="cpu", metrics=True, heatmapOpacity=0.5,
                       classifier=classifier, progress=reports.append)
    after = [fingerprint(volume_a), fingerprint(volume_b)]
    return fused, before, after, reports


def test_sample_is_loaded_through_storage_nodes(sample):
    volume_a, volume_b = sample
    for node in sample:
        assert node.GetStorageNode().GetFileName().endswith(".nii.gz")
        assert slicer.util.arrayFromVolume(node).shape == (40, 96, 96)
    assert np.allclose(matrix_of(volume_a), matrix_of(volume_b))


def test_output_has_geometry_of_a(run, sample):
    fused = run[0]
    volume_a = sample[0]
    voxels = slicer.util.arrayFromVolume(fused)
    assert fused.IsA("vtkMRMLScalarVolumeNode") and fused not in sample
    assert voxels.shape == slicer.util.arrayFromVolume(volume_a).shape
    assert voxels.dtype == np.float32 and 0.0 <= voxels.min() and voxels.max() <= 1.0
    assert np.array_equal(matrix_of(fused), matrix_of(volume_a))


def test_inputs_unchanged(run):
    _, before, after, _ = run
    assert before == after


def test_output_sits_beside_a_in_subject_hierarchy(run, sample):
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    folder = sh.GetItemParent(sh.GetItemByDataNode(sample[0]))
    assert sh.GetItemName(folder) == "Study"
    for node in [run[0]] + [run[0].GetNodeReference(role) for role in REFERENCES]:
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == folder


def test_heatmap_node_and_colour_table(run, sample):
    fused = run[0]
    heatmap = fused.GetNodeReference("Heatmap")
    heat = slicer.util.arrayFromVolume(heatmap)
    assert heat.shape == slicer.util.arrayFromVolume(fused).shape
    assert np.array_equal(matrix_of(heatmap), matrix_of(sample[0]))
    assert 0.0 <= heat.min() and 0.0 < heat.max() <= 1.0
    display = heatmap.GetDisplayNode()
    assert display.GetColorNode().GetName() == HEATMAP_COLORS
    assert display.GetColorNode().GetNumberOfColors() > 1
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == HEATMAP_THRESHOLD


def test_slice_view_shows_fused_under_heatmap(run):
    fused = run[0]
    composite = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetBackgroundVolumeID() == fused.GetID()
    assert composite.GetForegroundVolumeID() == fused.GetNodeReference("Heatmap").GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.5)


def test_probabilities_sum_to_one_with_verdict(run):
    fused = run[0]
    table = fused.GetNodeReference("Probabilities")
    probabilities = slicer.util.arrayFromTableColumn(table, "probability")
    classes = [table.GetCellText(row, 0) for row in range(table.GetNumberOfRows())]
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert table.GetAttribute("ClinicalFMamba.Verdict") == classes[int(probabilities.argmax())]
    slices = fused.GetNodeReference("SliceVerdicts")
    assert slices.GetNumberOfRows() == 40
    per_slice = np.stack([slicer.util.arrayFromTableColumn(slices, name) for name in classes], 1)
    assert np.allclose(per_slice.sum(1), 1.0, atol=1e-5)


def test_metrics_table(run):
    table = run[0].GetNodeReference("Metrics")
    names = [table.GetCellText(row, 0) for row in range(table.GetNumberOfRows())]
    assert {"EN", "MI", "SSIM", "Qabf"} <= set(names)
    assert np.isfinite(slicer.util.arrayFromTableColumn(table, "value")).all()


def test_progress_reaches_one(run):
    reports = run[3]
    assert reports == sorted(reports) and reports[-1] == 1.0


def test_missing_classifier_is_refused_before_the_worker_starts(scene, sample, logic, tmp_path):
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(FileNotFoundError, match="classifier weights not found"):
        logic.fuse(*sample, device="cpu", classifier=str(tmp_path / "missing.safetensors"))
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes


def test_bad_inputs_are_named(scene, sample, logic):
    volume_a, volume_b = sample
    with pytest.raises(ValueError, match="volume B is not set"):
        logic.prepare(volume_a, None)
    with pytest.raises(ValueError, match="same volume"):
        logic.prepare(volume_a, volume_a)
    with pytest.raises(ValueError, match="must not be an input"):
        logic.prepare(volume_a, volume_b, volume_b)
    with pytest.raises(ValueError, match="model must be one of"):
        logic.prepare(volume_a, volume_b, model="4d")
    for emphasis in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"emphasis must lie in \[0, 1\]"):
            logic.prepare(volume_a, volume_b, model="2d", emphasis=emphasis)
    label = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(label, np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="label"):
        logic.prepare(label, volume_b)
    slicer.mrmlScene.RemoveNode(label)


def test_b_on_another_grid_is_resampled_onto_a(scene, sample, logic):
    volume_a, volume_b = sample
    # B at half resolution along k, shifted by one slab: another grid, same anatomy.
    coarse = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "coarse B")
    source = slicer.util.arrayFromVolume(volume_b)
    slicer.util.updateVolumeFromArray(coarse, source[::2].copy())
    matrix = matrix_of(volume_b)
    matrix[:3, 2] *= 2
    coarse.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
    job = logic.prepare(volume_a, coarse, classify=False)
    slicer.mrmlScene.RemoveNode(coarse)
    assert job.b.shape == job.a.shape and job.b.dtype == np.float32
    assert any("resampled" in message for message in job.warnings)
    assert np.allclose(job.b[::2], source[::2], atol=1e-3)  # shared slices keep their values
    between = (source[0:-2:2].astype(np.float32) + source[2::2]) / 2  # linear in between
    assert np.allclose(job.b[1:-1:2], between, atol=1e-2)


def test_parent_transform_of_b_is_applied(scene, sample, logic):
    """B under a linear transform that shifts it by two slices lands on A's grid shifted."""
    volume_a, volume_b = sample
    shift = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = np.eye(4)
    matrix[:3, 3] = 2 * matrix_of(volume_b)[:3, 2]  # two slices along k, in RAS
    shift.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    volume_b.SetAndObserveTransformNodeID(shift.GetID())
    try:
        job = logic.prepare(volume_a, volume_b, classify=False)
    finally:
        volume_b.SetAndObserveTransformNodeID(None)
        slicer.mrmlScene.RemoveNode(shift)
    source = slicer.util.arrayFromVolume(volume_b)
    assert np.allclose(job.b[2:], source[:-2], atol=1e-3) and not job.b[:2].any()


def test_choices_match_the_library():
    assert module.MODEL_CHOICES == MODEL_KINDS
    assert module.DEFAULT_EMPHASIS == DEFAULT_EMPHASIS


def test_emphasis_goes_to_the_worker_and_weights_without_it_fuse_with_a_warning(
        scene, sample, logic, caplog):
    """The emphasis travels in job.json to the bundled 2D network, which fuses with it and
    records it on the fused node; the 3D network has no emphasis control, so a run asking it
    for one fuses without it, warns, and records no emphasis."""
    assert logic.prepare(*sample, model="2d", emphasis=0.75).options["emphasis"] == 0.75
    composite = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    shown = composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()
    try:
        node = logic.fuse(*sample, model="2d", device="cpu", classify=False, emphasis=0.75)
        assert node.GetAttribute(EMPHASIS) == "0.75"
        assert not any("no emphasis control" in r.getMessage() for r in caplog.records)
        slicer.mrmlScene.RemoveNode(node)
        node = logic.fuse(*sample, model="3d", device="cpu", classify=False, emphasis=0.75)
        assert node.GetAttribute(EMPHASIS) is None
        assert any("3D fusion weights have no emphasis control" in r.getMessage()
                   for r in caplog.records)
        slicer.mrmlScene.RemoveNode(node)
    finally:  # the views show what they showed before (the red view test renders them)
        composite.SetBackgroundVolumeID(shown[0])
        composite.SetForegroundVolumeID(shown[1])


def test_requirements_match_pyproject():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(REQUIREMENTS.values()) == sorted(d for d in declared
                                                   if not d.startswith("torch"))


def render_red_view(red, fused) -> np.ndarray:
    """RGB of the red slice view's blended layers at the slice where the heatmap peaks."""
    red.ResizeSliceNode(VIEW_SIZE, VIEW_SIZE)  # the red view is axial
    red.FitSliceToAll()
    heat = slicer.util.arrayFromVolume(fused.GetNodeReference("Heatmap"))
    k = int(np.argmax(heat.sum(axis=(1, 2))))
    red.SetSliceOffset((matrix_of(fused) @ (0, 0, k, 1))[2])
    connection = red.GetImageDataConnection()
    connection.GetProducer().Update()
    image = connection.GetProducer().GetOutputDataObject(connection.GetIndex())
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
    return np.ascontiguousarray(pixels[::-1, :, :3])  # VTK rows run bottom-up


def test_red_view_render_shows_fused_and_heatmap(scene, run, tmp_path):
    rgb = render_red_view(scene[1], run[0])
    assert rgb.shape == (VIEW_SIZE, VIEW_SIZE, 3)
    red, green, blue = (rgb[..., c].astype(int) for c in range(3))
    grey = (np.abs(red - green) < 4) & (np.abs(green - blue) < 4) & (red > 40)
    warm = red - blue > 40
    assert grey.mean() > 0.02, "the fused image shows through"
    assert warm.mean() > 0.01, "the heatmap is blended on top"
    Image.fromarray(rgb).save(tmp_path / "red.png")
    if os.environ.get("CLINICALFMAMBA_WRITE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(SCREENSHOT)


def test_module_imports_without_torch():
    """Slicer lists the module before PyTorch is installed: importing it must not need torch."""
    code = ("import sys\n"
            "sys.modules['torch'] = None  # any `import torch` now fails\n"
            f"sys.path.insert(0, {str(ROOT / 'ClinicalFMamba')!r})\n"
            "import ClinicalFMamba\n"
            "assert not [m for m in sys.modules if m.startswith('ClinicalFMambaLib.')]\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8",
                            timeout=300)
    assert result.returncode == 0, result.stderr



def test_reload_reexecutes_each_part_of_the_package_after_what_it_imports():
    """The widget's Reload follows ClinicalFMambaModuleLib.MODULES: every module of the
    package, each after the package modules it imports (else it would keep their old code)."""
    folder = Path(ClinicalFMambaModuleLib.__file__).parent
    order = ClinicalFMambaModuleLib.MODULES
    assert sorted(order) == sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    for position, name in enumerate(order):
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert imported <= set(order[:position]), f"{name} imports {imported}"


def test_sample_data_source_is_the_bundled_pair(sample):
    """What the module registers with Sample Data: file URIs of the bundled files whose
    content (read through urllib, as SampleData's downloadFile reads a URI) has the given
    SHA-256, cache names of this extension, the node names loadSample gives, and a thumbnail
    of about the size Slicer's template asks for (260x280)."""
    files = [module.SAMPLE_DIR / name for name in module.SAMPLE_FILES]
    source = sampleDataSource(files, module.SAMPLE_THUMBNAIL)
    assert source["uris"] == [file.resolve().as_uri() for file in files]
    for uri, checksum in zip(source["uris"], source["checksums"], strict=True):
        with urllib.request.urlopen(uri) as response:
            assert checksum == f"SHA256:{hashlib.sha256(response.read()).hexdigest()}"
    assert [name.removeprefix("ClinicalFMamba-") for name in source["fileNames"]] == list(
        module.SAMPLE_FILES)
    assert source["nodeNames"] == [node.GetName() for node in sample]
    with Image.open(source["thumbnailFileName"]) as thumbnail:
        assert all(240 <= side <= 300 for side in thumbnail.size)


def test_registration_hands_the_source_to_sample_data(monkeypatch):
    """registerSampleData (connected to startupCompleted in the application) passes the
    source to a SampleData module whose registerCustomSampleDataSource takes only the
    arguments every supported release takes (SampleData.py, v5.6.2 lines 433-436, v5.8.1
    lines 457-462, v5.10.0 lines 510-515; loadFileType(s) differ between them)."""
    registered = []

    def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None,
                                       fileNames=None, nodeNames=None, customDownloader=None,
                                       thumbnailFileName=None, loadFiles=None,
                                       loadFileProperties={}, checksums=None):
        registered.append(dict(category=category, sampleName=sampleName, uris=uris,
                               fileNames=fileNames, nodeNames=nodeNames, checksums=checksums,
                               thumbnailFileName=thumbnailFileName))

    sampleData = types.ModuleType("SampleData")
    sampleData.SampleDataLogic = types.SimpleNamespace(
        registerCustomSampleDataSource=registerCustomSampleDataSource)
    monkeypatch.setitem(sys.modules, "SampleData", sampleData)
    module.registerSampleData()
    assert registered == [sampleDataSource([module.SAMPLE_DIR / name for name in
                                            module.SAMPLE_FILES], module.SAMPLE_THUMBNAIL)]

def test_batch_script_arguments():
    spec = importlib.util.spec_from_file_location("slicer_batch_fuse",
                                                  ROOT / "scripts" / "slicer_batch_fuse.py")
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    args = batch.parse(["a.nii.gz", "b.nii.gz", "-o", "out", "--device", "cpu", "--metrics"])
    assert args.classify and args.metrics and len(args.volumes) == 2
    with pytest.raises(SystemExit):
        batch.parse(["a.nii.gz", "-o", "out"])
    assert batch.stem(Path("x/case_t2.nii.gz")) == "case_t2"


@pytest.mark.skipif(not bundled(BUNDLED_NAME).exists(), reason="bundled classifier not written yet")
def test_module_self_test_runs_on_real_mrml(scene):
    """The in-Slicer self-test (ClinicalFMambaTest) on a fresh real scene; only delayDisplay,
    a message box of the application, is replaced by a print."""

    class SelfTest(module.ClinicalFMambaTest, unittest.TestCase):
        def delayDisplay(self, message: str) -> None:
            print(message)

    shared = slicer.mrmlScene
    slicer.mrmlScene = slicer.vtkMRMLScene()
    try:
        SelfTest("runTest").runTest()
    finally:
        slicer.mrmlScene = shared


# --------------------------------------------------------------------------- publishing

def finish(job) -> None:
    while not job.poll():
        time.sleep(0.05)
    assert job.state == "done", job.error


def scene_counts() -> tuple[int, int, int]:
    """(nodes, display nodes, subject-hierarchy items) of the scene."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    items = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), items, True)
    displays = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLDisplayNode")
    return slicer.mrmlScene.GetNumberOfNodes(), displays, items.GetNumberOfIds()


def heatmap_tables() -> list:
    return [node for node in slicer.util.getNodesByClass("vtkMRMLColorTableNode")
            if node.GetAttribute(ROLE) == "heatmap colours"]


@pytest.fixture(scope="module")
def finished(scene, sample, logic, classifier):
    """One finished worker run (fuse + classify) whose files several publishes read."""
    job = logic.start(*sample, device="cpu", classifier=classifier)
    try:
        finish(job)
        yield job
    finally:
        job.close()
    assert not job.folder.exists()


def test_fusing_again_into_a_result_replaces_its_companions(scene, logic, finished):
    first = logic.publish(finished)
    old = [first.GetNodeReference(role) for role in ("Heatmap", "Probabilities", "SliceVerdicts")]
    counts = scene_counts()
    for table in heatmap_tables():  # the user deletes the colour table once
        slicer.mrmlScene.RemoveNode(table)
    finished.output = first
    again = logic.publish(finished)
    assert again is first
    new = [first.GetNodeReference(role) for role in ("Heatmap", "Probabilities", "SliceVerdicts")]
    assert all(n is not None for n in new) and not set(old) & set(new)
    assert not any(slicer.mrmlScene.IsNodePresent(node) for node in old)
    assert len(heatmap_tables()) == 1 and heatmap_tables()[0].GetName() == HEATMAP_COLORS
    logic.publish(finished)  # a third time: the colour table is reused, nothing piles up
    assert scene_counts() == counts and len(heatmap_tables()) == 1
    finished.output = None


def test_failed_publish_leaves_scene_and_existing_output_as_they_were(scene, logic, finished):
    """The fused file is read after the heatmap and tables are made: corrupting it makes
    the publish fail after nodes, display nodes and subject-hierarchy items were created."""
    from ClinicalFMambaLib.worker.protocol import FUSED

    output = logic.publish(finished)
    before = fingerprint(output), [output.GetNodeReferenceID(role) for role in REFERENCES]
    counts = scene_counts()
    fused_file = finished.file(FUSED)
    intact = fused_file.read_bytes()
    fused_file.write_bytes(intact[: len(intact) // 3])
    try:
        for target in (None, output):
            finished.output = target
            with pytest.raises(module.WorkerFailed, match="could not be read"):
                logic.publish(finished)
            assert scene_counts() == counts
        assert (fingerprint(output),
                [output.GetNodeReferenceID(role) for role in REFERENCES]) == before
    finally:
        fused_file.write_bytes(intact)
        finished.output = None


def test_out_of_scope_result_shows_no_class_and_no_heatmap(scene, logic, finished):
    """A classification with the scope guard's fields (in_scope false, prediction null,
    reason) is shown as such: no tumour class, no heatmap layer."""
    saved = finished.result["classification"]
    finished.result["classification"] = dict(saved, in_scope=False, prediction=None,
                                             reason="looks like a photograph")
    try:
        output = logic.publish(finished)
    finally:
        finished.result["classification"] = saved
    verdict = output.GetAttribute(VERDICT)
    assert verdict == ("ClinicalFMamba: not brain MRI, no tumour verdict"
                       " (looks like a photograph)")
    assert output.GetNodeReference("Heatmap") is None
    assert output.GetNodeReference("SliceVerdicts") is None
    table = output.GetNodeReference("Probabilities")
    assert table.GetCellText(0, 0) == "not brain MRI"
    composite = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() is None


@pytest.mark.parametrize("fields,expected", [
    ({"prediction": "glioma", "probabilities": [0.8, 0.1, 0.05, 0.05]},
     "ClinicalFMamba: glioma (80%)"),
    ({"prediction": "uncertain", "probabilities": [0.3, 0.3, 0.2, 0.2], "reason": "weak"},
     "ClinicalFMamba: uncertain, no tumour verdict (weak)"),
    ({"prediction": "uncertain", "tumour_probability": 0.45, "probabilities": [0.2, 0.1, 0.55,
                                                                               0.15]},
     "ClinicalFMamba: uncertain, no tumour verdict (tumour probability 45%)"),
    ({"prediction": "tumour", "tumour_probability": 0.91, "tumour_type": None,
      "probabilities": [0.09, 0.91]},
     "ClinicalFMamba: tumour (91%), type undetermined (no tumour-type model is validated on "
     "volumes)"),
    ({"prediction": "notumor", "tumour_probability": 0.12, "probabilities": [0.88, 0.12]},
     "ClinicalFMamba: notumor (88%)"),
    ({"in_scope": False, "prediction": None, "probabilities": [0.9, 0.1, 0, 0]},
     "ClinicalFMamba: not brain MRI, no tumour verdict"),
    (None, ""),
])
def test_verdict_text(fields, expected):
    assert verdictText(fields) == expected


def test_torch_version_is_checked_without_importing_it():
    code = ("import sys\nsys.modules['torch'] = None\n"
            f"sys.path.insert(0, {str(ROOT / 'ClinicalFMamba')!r})\n"
            "import ClinicalFMamba\n"
            "from ClinicalFMambaModuleLib.dependencies import checkTorchVersion\n"
            "checkTorchVersion()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8",
                            timeout=300)
    assert result.returncode == 0, result.stderr


def test_truncated_volume_file_is_refused_without_a_node(scene, tmp_path):
    source = module.SAMPLE_DIR / module.SAMPLE_FILES[0]
    truncated = tmp_path / "half.nii.gz"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="half.nii.gz") as raised:
        module.ClinicalFMambaLogic.loadVolume(truncated)
    assert "\n" not in str(raised.value)
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes


def test_4d_file_is_refused_as_4d_without_a_node(scene, tmp_path):
    """Two time points in one file: named as 4D, not "not a readable volume"."""
    import SimpleITK as sitk

    source = sitk.ReadImage(str(module.SAMPLE_DIR / module.SAMPLE_FILES[0]))
    path = tmp_path / "two_times.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([source, source]), str(path))
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="is a 4D image"):
        module.ClinicalFMambaLogic.loadVolume(path)
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes


def volume_beside(reference, name: str, voxels: np.ndarray, shift_mm: float = 0.0):
    """A new volume node with ``voxels`` on ``reference``'s grid, moved by ``shift_mm`` in R."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, voxels)
    matrix = matrix_of(reference)
    matrix[0, 3] += shift_mm
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
    return node


def test_volume_b_outside_a_is_refused_as_the_command_line_refuses_it(scene, sample, logic):
    volume_a, volume_b = sample
    far = volume_beside(volume_b, "far B", slicer.util.arrayFromVolume(volume_b).copy(), 1e4)
    try:
        with pytest.raises(ValueError, match="does not overlap volume A"):
            logic.prepare(volume_a, far, classify=False)
    finally:
        slicer.mrmlScene.RemoveNode(far)


def test_volume_b_covering_a_in_part_and_empty_volume_b_are_said(scene, sample, logic):
    volume_a, volume_b = sample
    voxels = slicer.util.arrayFromVolume(volume_b)
    half = volume_beside(volume_b, "half B", voxels.copy(), 96.0)  # 48 of 96 columns of 2 mm
    empty = volume_beside(volume_b, "empty B", np.zeros_like(voxels))
    try:
        assert any("covers 50% of volume A" in message
                   for message in logic.prepare(volume_a, half, classify=False).warnings)
        assert ("volume B ('empty B') is empty (every voxel is 0): it adds nothing to the fused "
                "result") in logic.prepare(volume_a, empty, classify=False).warnings
    finally:
        slicer.mrmlScene.RemoveNode(half)
        slicer.mrmlScene.RemoveNode(empty)


def test_failed_write_into_an_existing_output_puts_it_back(scene, logic, finished, monkeypatch):
    """The last write of a publish (the fused voxels into the chosen output) fails after the
    output took A's grid: the output keeps its own 4x4x4 voxels and grid, nothing is added."""
    output = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "old result")
    slicer.util.updateVolumeFromArray(output, np.arange(64, dtype=np.float32).reshape(4, 4, 4))
    output.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.diag([3.0, 3.0, 3.0, 1.0])))
    before, counts = fingerprint(output), scene_counts()

    update = slicer.util.updateVolumeFromArray

    def out_of_memory_for_the_output(node, voxels):
        if node is output:
            raise MemoryError("no memory for the fused voxels")
        update(node, voxels)

    monkeypatch.setattr(slicer.util, "updateVolumeFromArray", out_of_memory_for_the_output)
    finished.output = output
    try:
        with pytest.raises(MemoryError):
            logic.publish(finished)
    finally:
        finished.output = None
        monkeypatch.undo()
    assert fingerprint(output) == before
    assert scene_counts() == counts
    slicer.mrmlScene.RemoveNode(output)
