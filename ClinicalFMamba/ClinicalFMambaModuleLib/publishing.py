"""A finished job's results into the scene, all or nothing: the fused volume, the heatmap and
the tables, referenced from the fused volume and shown in the slice views."""

from __future__ import annotations

import logging

import numpy as np
import slicer

from .errors import Cancelled, WorkerFailed
from .fusion_job import FusionJob
from .heatmap import styleHeatmap
from .nodes import (EMPHASIS, REFERENCES, VERDICT, fillTable, newNode, placeBeside, placeLike,
                    removeNode, restoreVolume, volumeState)
from .verdict import verdictText, verdictWord
from .volume_files import readVolumeArray


def publish(job: FusionJob):
    """Write a finished job's results into nodes and show them; returns the fused node.

    New nodes come first and an existing output node is written last, so a failure leaves it
    as it was; every node made here is removed again (with its display and storage nodes and
    subject-hierarchy item) if anything fails. Fusing again into a previous result replaces
    that result's heatmap and tables.
    """
    _checkPublishable(job)
    from ClinicalFMambaLib.worker import protocol

    created, state = [], None
    try:
        name = (job.output.GetName() if job.output is not None
                else slicer.mrmlScene.GenerateUniqueName(_outputName(job)))
        companions = {}
        classification = job.result["classification"]
        if classification is not None:
            companions.update(_publishClassification(job, classification, name, created))
        if job.result["metrics"] is not None:
            table = newNode(created, "vtkMRMLTableNode", f"{name} metrics")
            fillTable(table, {"metric": list(job.result["metrics"]),
                              "value": list(job.result["metrics"].values())})
            companions["Metrics"] = table
        for node in companions.values():
            placeBeside(node, job.inputA)
        fused = readVolumeArray(job.file(protocol.FUSED), "fused volume",
                                colour=job.options["colour"])
        if fused.shape[:3] != tuple(reversed(job.inputA.GetImageData().GetDimensions())):
            raise ValueError("volume A changed its grid during the run; fuse again")
        output = job.output
        if output is None:
            output = newNode(created, "vtkMRMLVectorVolumeNode" if fused.ndim == 4
                             else "vtkMRMLScalarVolumeNode", name)
            placeBeside(output, job.inputA)
        previous = [output.GetNodeReference(role) for role in REFERENCES]
        if job.output is not None:
            state = volumeState(output)
        placeLike(output, job.inputA, fused)  # an existing output: the one write, last
    except Exception:
        if state is not None:  # a write into the existing output failed midway
            restoreVolume(job.output, state)
        for node in reversed(created):
            removeNode(node)
        raise
    for role in REFERENCES:
        output.SetNodeReferenceID(role, companions[role].GetID() if role in companions
                                  else None)
    output.SetAttribute(VERDICT, verdictText(classification))
    used = job.result.get("emphasis")
    output.SetAttribute(EMPHASIS, None if used is None else str(used))
    for node in previous:
        if node is not None and node not in (job.inputA, job.inputB):
            removeNode(node)
    _show(output, companions.get("Heatmap"), job.options["heatmapOpacity"])
    for message in job.warnings:
        logging.warning(message)
    return output


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


def _outputName(job: FusionJob) -> str:
    return f"{job.inputA.GetName()} + {job.inputB.GetName()} fused"


def _publishClassification(job: FusionJob, result: dict, name: str, created: list) -> dict:
    """Heatmap and tables of a classification (the heatmap only for a verdict in scope)."""
    from ClinicalFMambaLib.worker import protocol

    nodes = {}
    probabilities = newNode(created, "vtkMRMLTableNode", f"{name} verdict")
    probabilities.SetAttribute(VERDICT, verdictWord(result))
    if result.get("in_scope") is False:
        fillTable(probabilities, {"verdict": ["not brain MRI"],
                                  "reason": [str(result.get("reason") or "")]})
        return {"Probabilities": probabilities}
    fillTable(probabilities, {"class": result["classes"],
                              "probability": result["probabilities"]})
    nodes["Probabilities"] = probabilities
    slices = newNode(created, "vtkMRMLTableNode", f"{name} slice verdicts")
    perSlice = np.asarray(result["slice_probabilities"], dtype=float)
    columns = {"slice": list(range(len(perSlice)))}
    columns.update({cls: list(perSlice[:, c]) for c, cls in enumerate(result["classes"])})
    columns["verdict"] = [result["classes"][i] for i in perSlice.argmax(1)]
    columns["in volume verdict"] = ["yes" if e else "no" for e in result["eligible"]]
    fillTable(slices, columns)
    nodes["SliceVerdicts"] = slices
    if not result.get("heatmap", True):
        return nodes
    heatmap = newNode(created, "vtkMRMLScalarVolumeNode",
                      f"{name} heatmap ({result['heatmap_class']})")
    placeLike(heatmap, job.inputA, readVolumeArray(job.file(protocol.HEATMAP), "heatmap"))
    styleHeatmap(heatmap, created)
    nodes["Heatmap"] = heatmap
    return nodes


def _show(output, heatmap, opacity: float) -> None:
    """Fused volume as background, heatmap as foreground (display only: never fails the
    publish, whose nodes are already in place). Views are fitted only in the application
    (pip's slicer-core has no ``slicer.app``)."""
    inApplication = hasattr(slicer, "app") and slicer.app.layoutManager() is not None
    try:
        slicer.util.setSliceViewerLayers(background=output, foreground=heatmap,
                                          foregroundOpacity=opacity, fit=inApplication)
    except Exception as error:
        logging.warning(f"ClinicalFMamba could not show the result in the views: {error}")
