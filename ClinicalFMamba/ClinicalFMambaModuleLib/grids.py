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
             ) -> tuple[np.ndarray, list[str]]:
    """B's voxels on A's grid, in world space (linear interpolation, 0 outside B), and
    warnings: B resampled, B covering A only in part. B outside A is refused, as the command
    line refuses it. MRML image data have origin 0 and spacing 1, so the reslice axes are A's
    voxel-to-B's voxel matrix."""
    dimsA = inputA.GetImageData().GetDimensions()
    if dimsA == inputB.GetImageData().GetDimensions() and np.allclose(matrixA, matrixB,
                                                                      atol=1e-4):
        return np.array(slicer.util.arrayFromVolume(inputB)), []
    axes = np.linalg.inv(matrixB) @ matrixA
    covered = float(_resliced(_ones(inputB.GetImageData()), axes, dimsA, vtk.VTK_FLOAT).mean())
    if covered == 0:
        raise ValueError(f"volume B ({inputB.GetName()!r}) does not overlap volume A "
                         f"({inputA.GetName()!r}) in world space: are they registered?")
    b = _resliced(inputB.GetImageData(), axes, dimsA,
                  None if isColour(inputB) else vtk.VTK_FLOAT)
    warnings = [f"volume B resampled from its grid ({_describeGrid(inputB, matrixB)}) onto"
                f" volume A's ({_describeGrid(inputA, matrixA)})"]
    if covered < 0.999:
        warnings.append(f"volume B covers {covered:.0%} of volume A; the rest is fused with "
                        "B = 0")
    return b, warnings


def _ones(image):
    """An image of ones on ``image``'s voxel grid (to measure what a reslice covers)."""
    ones = vtk.vtkImageData()
    ones.SetDimensions(image.GetDimensions())
    ones.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    vtk_to_numpy(ones.GetPointData().GetScalars())[:] = 1
    return ones


def _resliced(image, axes: np.ndarray, dims: tuple[int, int, int],
              scalarType: int | None) -> np.ndarray:
    """``image`` resliced onto a grid of ``dims`` voxels through ``axes`` (linear, 0 outside)."""
    reslice = vtk.vtkImageReslice()
    reslice.SetInputData(image)
    reslice.SetResliceAxes(slicer.util.vtkMatrixFromArray(axes))
    reslice.SetInterpolationModeToLinear()
    reslice.SetBackgroundLevel(0.0)
    reslice.SetOutputOrigin(0.0, 0.0, 0.0)
    reslice.SetOutputSpacing(1.0, 1.0, 1.0)
    reslice.SetOutputExtent(0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
    if scalarType is not None:
        reslice.SetOutputScalarType(scalarType)
    reslice.Update()
    scalars = vtk_to_numpy(reslice.GetOutput().GetPointData().GetScalars())
    components = scalars.shape[1:] if scalars.ndim == 2 else ()
    return scalars.reshape(tuple(reversed(dims)) + components).copy()


def _describeGrid(node, matrix: np.ndarray) -> str:
    size = "x".join(str(n) for n in node.GetImageData().GetDimensions())
    spacing = "x".join(f"{s:g}" for s in np.linalg.norm(matrix[:3, :3], axis=0))
    return f"{size} voxels of {spacing} mm"
