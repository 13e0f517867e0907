"""The files of a job folder, shared by the worker and its caller (standard library only)."""

from __future__ import annotations

JOB_FILE, INPUT_A, INPUT_B = "job.json", "a.nrrd", "b.nrrd"
FUSED, HEATMAP, RESULT = "fused.nrrd", "heatmap.nrrd", "result.json"
STDOUT, STDERR = "stdout.jsonl", "stderr.txt"


# --------------------------------------------------------------------------- caller side

FOLDER_PREFIX = "ClinicalFMamba-"
