"""Checks of the input volumes, the output volume and the options, made before any voxel
is copied or the worker started."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL_CHOICES = ("auto", "2d", "3d")  # ClinicalFMambaLib.fusion.volumes.MODEL_KINDS
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def checkInputs(inputA, inputB, output) -> None:
    """Two different image volumes with voxels, and an output that is neither of them."""
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


def checkOptions(*, model: str, device: str, heatmapOpacity: float, emphasis: float | None,
                 classifier: str | None) -> None:
    """The options of a run, each named when refused."""
    _checkChoice("model", model, MODEL_CHOICES)
    _checkChoice("device", device, DEVICE_CHOICES)
    if not 0.0 <= heatmapOpacity <= 1.0:
        raise ValueError(f"heatmapOpacity must lie in [0, 1], not {heatmapOpacity}")
    if emphasis is not None and not 0.0 <= emphasis <= 1.0:  # also refuses NaN
        raise ValueError(f"emphasis must lie in [0, 1], not {emphasis}")
    if classifier is not None and not Path(classifier).is_file():
        raise FileNotFoundError(f"classifier weights not found: {classifier}")


def checkColours(inputA, inputB, output) -> bool:
    """Whether the pair is fused in colour (a colour volume with a grey one; two colour
    volumes are refused), checking that an existing output is of the matching kind."""
    colour = isColour(inputA) or isColour(inputB)
    if isColour(inputA) and isColour(inputB):
        raise ValueError("both volumes are colour; one must be the grey anatomical volume")
    if output is not None and output.IsA("vtkMRMLVectorVolumeNode") != colour:
        kind = "a vector (colour)" if colour else "a scalar"
        raise ValueError(f"output {output.GetName()!r} must be {kind} volume for this pair;"
                         " leave it empty to create a new one")
    return colour


def emptyWarnings(inputA, a: np.ndarray, inputB, b: np.ndarray) -> list[str]:
    """A volume whose voxels are all 0 adds nothing to the fusion: said, as the command line
    says it (B once it is on A's grid)."""
    return [f"volume {label} ({node.GetName()!r}) is empty (every voxel is 0): it adds "
            "nothing to the fused result"
            for label, node, array in (("A", inputA, a), ("B", inputB, b)) if not array.any()]


def isColour(node) -> bool:
    """An RGB or RGBA volume."""
    return node.GetImageData().GetNumberOfScalarComponents() in (3, 4)


def _checkChoice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
