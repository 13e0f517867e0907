"""Fusing with the trained networks: model loading, device and emphasis (``inference``), 2D
image files and folders, volumes and volume files, patch-wise inference with Gaussian
blending (``sliding_window``), GPU memory and precision (``gpu``), and the classical
baselines (mean, max, Laplacian pyramid).

May import: ``core``, ``io``, ``networks``.
"""
