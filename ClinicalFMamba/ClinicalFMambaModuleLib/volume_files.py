"""Volumes to and from the worker's files, through storage nodes and volume nodes that never
enter the scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer

from .errors import WorkerFailed


def writeVolume(array: np.ndarray, ijkToRAS: np.ndarray, path: Path) -> None:
    """Voxels with a geometry into an uncompressed NRRD file."""
    node = slicer.vtkMRMLVectorVolumeNode() if array.ndim == 4 else slicer.vtkMRMLScalarVolumeNode()
    slicer.util.updateVolumeFromArray(node, array)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToRAS))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.UseCompressionOff()
    if not storage.WriteData(node):
        raise OSError(f"could not write the worker's input {path}")


def readVolumeArray(path: Path, what: str, colour: bool = False) -> np.ndarray:
    """Voxels of a volume file the worker wrote; ``what`` names it in the error."""
    node = slicer.vtkMRMLVectorVolumeNode() if colour else slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not path.is_file() or not storage.ReadData(node):
        raise WorkerFailed(f"the worker's {what} ({path.name}) could not be read")
    return np.array(slicer.util.arrayFromVolume(node))


def volumeName(path: Path) -> str:
    """The node name of a volume file: its name without extensions (".nii.gz" included)."""
    return path.name.split(".")[0]
