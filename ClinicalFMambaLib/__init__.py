"""ClinicalFMamba: CNN-Mamba fusion of co-registered neuroimaging pairs.

Plain Python (PyTorch, SimpleITK); usable without 3D Slicer.
"""

__version__ = "0.1.0"
