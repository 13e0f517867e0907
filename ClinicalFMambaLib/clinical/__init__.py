"""The clinical verdict: the tumour classifier on images and volumes (``classifier``,
``volume_verdict``), its scope guard (is this brain MRI?), the tumour-evidence heatmap and
the classical asymmetry anchors, heatmap files, the JSON record and its wording, shared by the
command line, the worker and the Slicer module.

May import: ``core``, ``io``, ``networks``.
"""
