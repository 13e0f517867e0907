"""The worker's side: a Dask worker plugin that loads the networks once per worker process
(pinned to one GPU where there are several), and the task that fuses and classifies one
subject-session from its file paths and writes its outputs."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from distributed import WorkerPlugin, get_worker

from .. import __version__
from ..core.errors import OutputError
from ..io.files import write_atomically
from ..io.volumes import read_volume
from .derivatives import (LOG_FOLDER, Outputs, is_done, outputs_of, record_failure,
                          write_json, write_log)
from .locks import remove_partials, subject_lock
from .provenance import run_key
from .subjects import SubjectSession

PLUGIN_NAME = "clinicalfmamba-networks"
WORKERS_LOG = "workers.log"  # one line per network load: which process, where, how long


@dataclass(frozen=True)
class Settings:
    """Everything a task needs besides its subject-session (sent with every task: small)."""

    out_dir: Path
    a_name: str
    b_name: str
    model: str
    device: str
    fusion_weights: Path
    classifier: Path | None
    options: dict
    models: dict
    overwrite: bool = False

    @property
    def classify(self) -> bool:
        return bool(self.options["classify"])


@dataclass
class Outcome:
    """What became of one subject-session: ``status`` fused, up to date or failed."""

    item: SubjectSession
    status: str
    seconds: float = 0.0
    worker: str = ""
    verdict: dict | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def one_line(error: BaseException) -> str:
    """The error as one line: an OSError's reason and file, else its message."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return " ".join(str(error).split()) or type(error).__name__


def is_input_error(error: BaseException) -> bool:
    """A problem of the input files (exit code 2 for a single pair): a rerun on the same
    files would meet it again."""
    return isinstance(error, (ValueError, FileNotFoundError)) and not isinstance(error,
                                                                             OutputError)


# Warnings of the task running in this thread (several tasks may run in one worker at once;
# warnings.catch_warnings is not thread-safe).
_caught = threading.local()
_show_warning = warnings.showwarning


def _collect_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning in a worker: into the running task's list, else as before."""
    collected = getattr(_caught, "messages", None)
    if collected is None:
        _show_warning(message, category, filename, lineno, file, line)
    else:
        collected.append(" ".join(str(message).split()))


def gpu_index(worker_name: object, gpus: int) -> int:
    """The GPU of a worker: its name's last number (LocalCluster: 0, 1, ...; dask-jobqueue:
    JOB-0, JOB-1, ... within a job) modulo the GPUs it sees."""
    numbers = re.findall(r"\d+", str(worker_name))
    return int(numbers[-1]) % gpus if numbers else 0


class NetworkPlugin(WorkerPlugin):
    """Loads the fusion network (and the classifier) once per worker process, at its first
    task, so that a worker that never gets one never loads them."""

    name = PLUGIN_NAME

    def __init__(self, settings: Settings, torch_threads: int | None) -> None:
        self.settings = settings
        self.torch_threads = torch_threads

    def setup(self, worker) -> None:
        self._lock = threading.Lock()
        self._networks: tuple | None = None
        self.worker_name = worker.name
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        warnings.simplefilter("always")  # every subject's warnings, not the first one's
        warnings.showwarning = _collect_warning

    def enter(self) -> None:
        """Set this task thread's torch threads and GPU (both are per thread)."""
        import torch

        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        if self._networks is not None and self._networks[2].type == "cuda":
            torch.cuda.set_device(self._networks[2])

    def networks(self) -> tuple:
        """(fusion network, classifier or None, device), loaded at the first call."""
        with self._lock:
            if self._networks is None:
                self._networks = self._load()
            return self._networks

    def _load(self) -> tuple:
        import torch

        from ..clinical.classifier import load_classifier
        from ..fusion.inference import resolve_device
        from ..fusion.volumes import load_volume_model

        start = time.perf_counter()
        device = resolve_device(self.settings.device)
        if device.type == "cuda":
            device = torch.device("cuda", gpu_index(self.worker_name, torch.cuda.device_count()))
            torch.cuda.set_device(device)
        fusion = load_volume_model(self.settings.model, str(device.type),
                                   self.settings.fusion_weights)
        classifier = load_classifier(self.settings.classifier, device=str(device)) \
            if self.settings.classify else None
        line = (f"{_now()} {self.where} worker {self.worker_name}: networks loaded in "
                f"{time.perf_counter() - start:.1f} s on {device}, "
                f"torch threads {self.torch_threads or torch.get_num_threads()}\n")
        log = self.settings.out_dir / LOG_FOLDER / WORKERS_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(line)
        return fusion, classifier, device


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def process(item: SubjectSession, settings: Settings) -> Outcome:
    """Fuse (and classify) one subject-session into OUT_DIR, holding its lock; skipped when
    another run has meanwhile made its current outputs. Never raises: a failure is recorded
    in ``logs/`` and returned."""
    plugin = get_worker().plugins[PLUGIN_NAME]
    outputs = outputs_of(settings.out_dir, item, settings.a_name, settings.b_name)
    start, started, key = time.perf_counter(), _now(), None
    with subject_lock(settings.out_dir, item.prefix):
        try:
            key = run_key(item, settings.options, settings.models)
            if not settings.overwrite and is_done(outputs, key):
                return Outcome(item, "up to date", worker=plugin.where)
            remove_partials(outputs.folder)
            outputs.sidecar.unlink(missing_ok=True)  # until the new outputs are complete
            fusion, classifier, device = plugin.networks()
            plugin.enter()
            _caught.messages = seen = []
            verdict = fuse_and_classify(item, outputs, fusion, classifier)
            seconds = time.perf_counter() - start
            write_json(outputs.sidecar, _sidecar(item, settings, key, verdict, outputs, seen,
                                                 started, seconds, plugin, device))
            outputs.failure.unlink(missing_ok=True)
            write_log(outputs, item, [f"started: {started} on {plugin.where}",
                                      *(f"warning: {w}" for w in seen),
                                      f"fused in {seconds:.1f} s: {outputs.fused.name}"])
            return Outcome(item, "fused", seconds, plugin.where, verdict, warnings=seen)
        except Exception as error:
            seconds, input_error = time.perf_counter() - start, is_input_error(error)
            message = one_line(error) if input_error or isinstance(error, OSError) else \
                f"internal error ({type(error).__name__}: {one_line(error)})"
            record_failure(outputs, item, message, key, input_error,
                           {"seconds": round(seconds, 2), "worker": plugin.where,
                            "started": started})
            write_log(outputs, item, [f"started: {started} on {plugin.where}",
                                      f"failed: {message}"]
                      + ([] if input_error else [traceback.format_exc()]))
            return Outcome(item, "failed", seconds, plugin.where, error=message)
        finally:
            _caught.messages = None


def fuse_and_classify(item: SubjectSession, outputs: Outputs, fusion,
                      classifier) -> dict | None:
    """Fuse on A's grid and write it; with a classifier, the verdict and its heatmap."""
    from ..clinical.heatmaps import save_heatmap_volume
    from ..clinical.records import result_record
    from ..clinical.volume_verdict import classify_volume
    from ..fusion.volume_files import on_grid_of_a, check_volume_output, write_on_grid
    from ..fusion.volumes import fuse_volumes

    check_volume_output(outputs.fused, [item.a, item.b])
    image_a = read_volume(item.a)
    image_b = on_grid_of_a(image_a, read_volume(item.b), item.a, item.b)
    fused = fuse_volumes(fusion, sitk.GetArrayFromImage(image_a),
                         sitk.GetArrayFromImage(image_b))
    write_on_grid(fused.fused, image_a, outputs.fused)
    result = None if classifier is None else classify_volume(
        classifier, fused.luma, direction=np.array(image_a.GetDirection()).reshape(3, 3),
        spacing=image_a.GetSpacing())
    if result is not None and result.heatmap is not None:
        write_atomically(outputs.heatmap, lambda target: save_heatmap_volume(
            result.heatmap, outputs.fused, target))
    else:  # none for this run (no verdict, or out of scope): no stale one either
        outputs.heatmap.unlink(missing_ok=True)
    return None if result is None else result_record(result)


def _sidecar(item: SubjectSession, settings: Settings, key: dict, verdict: dict | None,
             outputs: Outputs, seen: list[str], started: str, seconds: float,
             plugin: NetworkPlugin, device) -> dict:
    return {"participant_id": item.participant, "session_id": item.session,
            "inputs": {role: {"path": str(path), "sha256": key["inputs"][role]}
                       for role, path in (("a", item.a), ("b", item.b))},
            "options": settings.options, "models": settings.models, "verdict": verdict,
            "outputs": {"fused": outputs.fused.name,
                        "heatmap": outputs.heatmap.name if outputs.heatmap.exists() else None},
            "warnings": seen,
            "timing": {"started": started, "seconds": round(seconds, 2)},
            "worker": {"name": str(plugin.worker_name), "process": plugin.where,
                       "device": str(device)},
            "version": __version__}
