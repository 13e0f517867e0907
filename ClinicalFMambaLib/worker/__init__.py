"""The fusion worker: a separate process that runs the networks for the Slicer module.

Slicer's main thread holds Python's GIL while Qt's event loop runs, so networks run in a
thread of Slicer's process only advance while Python code runs on the main thread. The module
therefore runs this package as its own process (``PythonSlicer -m ClinicalFMambaLib.worker
FOLDER`` inside Slicer, the current interpreter elsewhere), as SlicerMONAIAuto3DSeg and
SlicerTotalSegmentator run their inference; Cancel kills that process tree.

Files in FOLDER (a private temporary folder made by the caller):

* in: ``job.json`` (options: model, device, classify, metrics, classifier, emphasis (None:
  the 2D network's default); ``caller``, the process id the worker ends with), ``a.nrrd``
  and ``b.nrrd`` (B already on A's voxel grid);
* out: ``fused.nrrd``, ``heatmap.nrrd`` (when classified) and ``result.json`` (verdict,
  tables, metrics, the emphasis fused with (None: a network without one), warnings).
  ``result.json`` is renamed into place last, so its presence means every output is
  complete.

Standard output carries one JSON object per line: ``{"progress": f, "status": s}``,
``{"warning": s}``, and on failure ``{"error": s}`` (one line naming the problem) before exit
status 1. Everything that imports torch happens in ``job.run``; ``process.WorkerProcess`` (the
caller's side: start, read, kill) and ``protocol`` need only the standard library.

May import: ``core``, ``io``, ``networks``, ``fusion``, ``evaluation``, ``clinical``.
"""
