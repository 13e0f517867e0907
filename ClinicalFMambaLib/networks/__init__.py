"""The networks: the CNN-Mamba fusion network (2D and 3D), its Mamba blocks and the three
selective-scan paths (``scan``), the tumour classifier and the tumour-evidence U-Net.

May import: ``core``, ``io`` (weights).
"""
