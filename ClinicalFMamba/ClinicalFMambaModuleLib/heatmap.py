"""How the heatmap looks: the iron colour table (one per scene) and a threshold under which
the heat is transparent, so the fused image shows through."""

from __future__ import annotations

import slicer

from .nodes import ROLE

HEATMAP_THRESHOLD = 0.3  # heat below this is transparent
HEATMAP_COLORS = "ClinicalFMamba heatmap"


def styleHeatmap(heatmap, created: list) -> None:
    """Colours, fixed 0-1 window and threshold of a heatmap volume's display node; a new
    colour table goes into ``created``."""
    display = heatmap.GetDisplayNode()
    display.SetAndObserveColorNodeID(_heatmapColors(created).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetAutoThreshold(False)
    display.SetLowerThreshold(HEATMAP_THRESHOLD)
    display.SetUpperThreshold(1.0)
    display.SetApplyThreshold(True)


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
