"""Fusing with the trained networks: model loading, device and emphasis (``inference``), 2D
image files and folders, volumes and volume files, patch-wise inference with Gaussian
blending (``sliding_window``), GPU memory and precision (``gpu``), and the quality mode
(``refine``: each 2D fused image optimised on the metric objective at run time).

May import: ``core``, ``io``, ``networks``, ``objective``.
"""
