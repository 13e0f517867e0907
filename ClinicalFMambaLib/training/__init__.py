"""Everything that trains a model: the fusion training loop and its targets and losses, the
classifier's and the tumour-evidence network's training, augmentation, and the data sets
(Harvard pairs, brain3d volumes, the 4-class JPEGs, labelled slices and pseudo labels).

May import: any package but ``cli`` and ``worker``. Nothing a user runs to fuse or classify
imports this package (Testing/test_import_rules.py).
"""
