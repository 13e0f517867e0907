"""The nodes a run makes: the attributes and references that mark them, and how they are
made, placed (grid, transform, subject-hierarchy folder), filled and removed."""

from __future__ import annotations

import numpy as np
import slicer
import vtk

ROLE = "ClinicalFMamba.Role"  # attribute marking the nodes this module made
VERDICT = "ClinicalFMamba.Verdict"  # the verdict, on the fused node and its verdict table
EMPHASIS = "ClinicalFMamba.Emphasis"  # attribute of the fused node: the emphasis fused with
# Node references from the fused volume to its companions.
REFERENCES = ("Heatmap", "Probabilities", "SliceVerdicts", "Metrics")


def newNode(created: list, className: str, name: str):
    """A node of this module's results in the scene, recorded in ``created`` (what a
    failed publish removes again)."""
    node = slicer.mrmlScene.AddNewNodeByClass(className, name)
    node.SetAttribute(ROLE, "result")
    created.append(node)
    return node


def removeNode(node) -> None:
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


def placeLike(node, reference, array: np.ndarray) -> None:
    """Voxels of ``array`` on ``reference``'s grid and under its parent transform."""
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    slicer.util.updateVolumeFromArray(node, array)
    node.CreateDefaultDisplayNodes()


def volumeState(node) -> tuple:
    """What ``placeLike`` changes in a volume node (grid, transform, voxels), copied so that
    an existing output can be put back when writing into it fails midway."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    image = None
    if node.GetImageData() is not None:
        image = vtk.vtkImageData()
        image.DeepCopy(node.GetImageData())
    return matrix, node.GetTransformNodeID(), image


def restoreVolume(node, state: tuple) -> None:
    """Put back what ``volumeState`` copied."""
    matrix, transformID, image = state
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveTransformNodeID(transformID)
    node.SetAndObserveImageData(image)


def placeBeside(node, reference) -> None:
    """Put ``node`` in the same subject-hierarchy folder (patient, study) as ``reference``."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    sh.SetItemParent(_shItem(sh, node), sh.GetItemParent(_shItem(sh, reference)))


def fillTable(table, columns: dict[str, list]) -> None:
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


def _shItem(sh, node) -> int:
    return sh.GetItemByDataNode(node) or sh.CreateItem(sh.GetSceneItemID(), node)
