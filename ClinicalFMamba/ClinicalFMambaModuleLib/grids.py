"""Where a volume's voxels lie in the world, and volume B's voxels brought onto volume A's
grid."""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from .inputs import isColour


def worldIJKToRAS(node) -> np.ndarray:
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


def onGridOf(inputA, matrixA: np.ndarray, inputB, matrixB: np.ndarray
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
    if not isColour(inputB):
        reslice.SetOutputScalarType(vtk.VTK_FLOAT)
    reslice.Update()
    scalars = vtk_to_numpy(reslice.GetOutput().GetPointData().GetScalars())
    components = scalars.shape[1:] if scalars.ndim == 2 else ()
    b = scalars.reshape(tuple(reversed(dimsA)) + components).copy()
    return b, (f"volume B resampled from its grid ({_describeGrid(inputB, matrixB)}) onto"
               f" volume A's ({_describeGrid(inputA, matrixA)})")


def _describeGrid(node, matrix: np.ndarray) -> str:
    size = "x".join(str(n) for n in node.GetImageData().GetDimensions())
    spacing = "x".join(f"{s:g}" for s in np.linalg.norm(matrix[:3, :3], axis=0))
    return f"{size} voxels of {spacing} mm"
