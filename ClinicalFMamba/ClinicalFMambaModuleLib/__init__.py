"""The ClinicalFMamba Slicer module's own code, beside ClinicalFMamba.py (which holds the
module, parameter node, widget, logic and self-test). Named apart from ClinicalFMambaLib, the
plain-Python library installed in the same folder.

* ``errors``: the exceptions the logic raises;
* ``dependencies``: PyTorch and the other packages, checked and installed;
* ``inputs``: checks of the input and output volumes and the options;
* ``grids``: volumes' world geometry, and B brought onto A's grid;
* ``volume_files``: volumes to and from the worker's files;
* ``verdict``: the classifier's verdict in words;
* ``fusion_job``: one run of the worker process;
* ``nodes``, ``heatmap``, ``publishing``: a finished run's results as nodes in the scene;
* ``sample_data``: the bundled sample pair in Slicer's Sample Data module.

Nothing here imports torch or ``ClinicalFMambaLib.cli``; the library is imported only inside
functions, once the module has made it importable.
"""

# Each module after the modules it imports: the order in which Reload re-executes them.
MODULES = ("errors", "dependencies", "inputs", "grids", "volume_files", "verdict", "fusion_job",
           "nodes", "heatmap", "publishing", "sample_data")
