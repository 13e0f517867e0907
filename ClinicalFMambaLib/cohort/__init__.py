"""Cohort processing: the fusion and the verdict over many subjects and sessions, as a BIDS
App (``clinicalfmamba cohort BIDS_DIR OUT_DIR participant|group``) on Dask distributed.

Inputs come from a BIDS tree (pybids) or a manifest (``inputs``); each subject-session is one
task that carries file paths (``subjects``), run on a Dask worker that loads the networks once
(``task``); the cluster is a local one, an existing scheduler or SLURM/PBS jobs
(``engine``). Outputs are BIDS derivatives with a JSON sidecar that makes a rerun skip what
is done (``derivatives``, ``provenance``); a lock per subject-session keeps two runs into one
folder apart (``locks``); ``levels`` runs the participant and group levels (docs/cohort.md).

May import: ``core``, ``io``, ``fusion``, ``clinical``.
"""
