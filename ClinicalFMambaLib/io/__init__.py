"""Files in and out: 2D images and medical volumes (SimpleITK, Pillow), DICOM series,
completeness checks of a file before its voxels are read, safe output locations and atomic
writes, and model weights (safetensors checked against a SHA-256 manifest).

May import: ``core``.
"""
