"""The worker's side: read the job, fuse (and classify, measure), write the results and
report progress as JSON lines on standard output."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

from .protocol import FUSED, HEATMAP, INPUT_A, INPUT_B, JOB_FILE, RESULT

FUSION_SHARE = 0.7  # part of the progress for fusion when the result is classified
# Fields of a volume classification copied into result.json when the classifier gives them
# (the scope guard's verdict: in scope or not, and why; the calibrated tumour probability).
OPTIONAL_FIELDS = ("in_scope", "reason", "tumour_probability", "tumour_type")
CALLER_CHECK_SECONDS = 0.5


# --------------------------------------------------------------------------- worker side

def emit(**message) -> None:
    """One JSON line on standard output, flushed so the caller sees it at once."""
    print(json.dumps(message), flush=True)


def _write_json(path: Path, content: dict) -> None:
    staged = path.with_name(f".{path.name}.partial")
    staged.write_text(json.dumps(content))
    os.replace(staged, path)


def _write_volume(array, reference, path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    image.CopyInformation(reference)
    staged = path.with_name(f".partial-{path.name}")
    sitk.WriteImage(image, str(staged))
    os.replace(staged, path)


def _plain(value):
    """numpy scalars as the JSON types they stand for."""
    return value.item() if hasattr(value, "item") else value


def _classification_record(result) -> dict:
    """The volume classification as JSON; the scope guard's fields when it gives them."""
    record = {"classes": list(result.classes),
              "prediction": result.prediction,
              "probabilities": [float(p) for p in result.probabilities],
              "heatmap_class": result.heatmap_class,
              "slice_probabilities": [[float(p) for p in row]
                                      for row in result.slice_probabilities],
              "eligible": [bool(e) for e in result.eligible]}
    record.update({name: _plain(getattr(result, name)) for name in OPTIONAL_FIELDS
                   if hasattr(result, name)})
    return record


def run(folder: Path, report: Callable[[float, str], None]) -> dict:
    """Fuse (and classify, measure) the job in ``folder``; returns what result.json holds."""
    import numpy as np
    import SimpleITK as sitk

    from ..clinical.classifier import load_classifier
    from ..clinical.volume_verdict import classify_volume
    from ..evaluation.volume_metrics import volume_fusion_metrics
    from ..fusion.inference import emphasis_of, resolve_device, set_emphasis
    from ..fusion.volumes import fuse_volumes, load_volume_model, volume_luma

    options = json.loads((folder / JOB_FILE).read_text())
    image_a = sitk.ReadImage(str(folder / INPUT_A))
    a = sitk.GetArrayFromImage(image_a)
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / INPUT_B)))
    share = FUSION_SHARE if options["classify"] else 1.0
    # Both networks are loaded first, so a missing or corrupt file is reported at once.
    report(0.0, "Loading the networks")
    model = load_volume_model(options["model"], options["device"])
    if options.get("emphasis") is not None and emphasis_of(model) is None:
        # The module's slider always sends a value; weights without the control still fuse.
        warnings.warn(f"the {model.cfg.spatial_dims}D fusion weights have no emphasis control "
                      "(not trained with one); fused without it")
    else:
        set_emphasis(model, options.get("emphasis"))
    classifier = None
    if options["classify"]:
        classifier = load_classifier(options.get("classifier"),
                                     device=str(resolve_device(options["device"])))
    fused = fuse_volumes(model, a, b,
                                       progress=lambda f: report(share * f, "Fusing"))
    _write_volume(fused.fused, image_a, folder / FUSED)
    result: dict = {"classification": None, "metrics": None, "emphasis": emphasis_of(model)}
    if classifier is not None:
        direction = np.array(image_a.GetDirection()).reshape(3, 3)
        classification = classify_volume(
            classifier, fused.luma, direction=direction, space="LPS",
            spacing=image_a.GetSpacing(),
            progress=lambda done, total: report(share + (1 - share) * done / total,
                                                "Classifying"))
        result["classification"] = _classification_record(classification)
        if classification.heatmap is not None:  # none for an input out of scope
            _write_volume(classification.heatmap.astype(np.float32), image_a, folder / HEATMAP)
        result["classification"]["heatmap"] = classification.heatmap is not None
    if options["metrics"]:
        report(1.0, "Measuring")
        result["metrics"] = volume_fusion_metrics(
            volume_luma(a)[0], volume_luma(b)[0], fused.luma)
    return result


def _watch_caller(pid: int | None, folder: Path) -> None:
    """End this process (and remove its folder, which nobody else will) once the process
    that started it is gone, e.g. when Slicer crashed: a worker in its own session is not
    killed with its caller. POSIX only (on Windows, os.kill would terminate the caller)."""
    if pid is None or os.name == "nt":
        return

    def watch() -> None:
        while True:
            time.sleep(CALLER_CHECK_SECONDS)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(folder, ignore_errors=True)
                os._exit(3)  # no cleanup handlers: torch may be mid-computation
            except PermissionError:  # alive, owned by someone else
                pass

    threading.Thread(target=watch, daemon=True, name="watch-caller").start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not (Path(argv[0]) / JOB_FILE).is_file():
        emit(error=f"usage: python -m ClinicalFMambaLib.worker FOLDER (FOLDER holding {JOB_FILE})")
        return 2
    folder = Path(argv[0])
    _watch_caller(json.loads((folder / JOB_FILE).read_text()).get("caller"), folder)
    last = [-1.0, ""]

    def report(fraction: float, status: str) -> None:
        if fraction - last[0] >= 0.005 or status != last[1]:  # no flood of tiny steps
            last[:] = [fraction, status]
            emit(progress=round(fraction, 4), status=status)

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run(folder, report)
        result["warnings"] = list(dict.fromkeys(str(w.message) for w in caught))
        for message in result["warnings"]:
            emit(warning=message)
        _write_json(folder / RESULT, result)
    except Exception as error:  # one line for the caller; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        text = " ".join(str(error).split()) or type(error).__name__
        emit(error=text)
        return 1
    emit(progress=1.0, status="Done")
    return 0

