"""The two BIDS App levels. ``participant``: find the subject-sessions, skip those whose
outputs are current, send the others to the Dask workers and report each as it ends.
``group``: one row per subject-session with its status and verdict, in
``OUT_DIR/group_summary.tsv``."""

from __future__ import annotations

import csv
import io
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.errors import OutputError
from ..io.files import check_output_location
from .derivatives import (DESCRIPTION, dataset_description, is_done, key_of,
                          known_input_failure, outputs_of, read_json, record_failure,
                          remove_unfinished, write_json, write_log, write_text)
from .engine import EngineOptions, check_options
from .inputs import Selection, find_subject_sessions
from .locks import subject_lock
from .provenance import fusion_weights_file, model_files, model_hashes, run_key
from .subjects import SubjectSession, count, share
from .task import Outcome, Settings, one_line

SUMMARY = "group_summary.tsv"
SUMMARY_COLUMNS = ("participant_id", "session_id", "status", "verdict", "tumour_probability",
                   "seconds", "worker", "error")


@dataclass(frozen=True)
class Request:
    """A cohort run as the command line gives it."""

    data_dir: Path
    out_dir: Path
    selection: Selection
    manifest: Path | None = None
    part: tuple[int, int] | None = None
    model: str = "auto"
    weights: Path | None = None
    classify: bool = True
    classifier: Path | None = None
    overwrite: bool = False
    engine: EngineOptions = EngineOptions()


def _check_folders(data_dir: Path, out_dir: Path) -> None:
    """Refuse an OUT_DIR that is the input dataset, holds it, or lies inside it anywhere but
    under its derivatives/ folder (which BIDS tools leave out of the raw data)."""
    check_output_location(out_dir, folder=True)
    data, out = data_dir.resolve(), out_dir.resolve()
    inside = out.is_relative_to(data) and not out.is_relative_to(data / "derivatives")
    if inside or data.is_relative_to(out):
        raise OutputError(f"OUT_DIR {out_dir} and the input dataset {data_dir} overlap: give "
                          "an output folder outside it (or under its derivatives/)")


def _settings(request: Request, load: bool) -> Settings:
    """The task settings; with ``load``, the networks are loaded here once first, so that
    unusable weights stop the run before any cluster starts."""
    from ..clinical.classifier import load_classifier
    from ..fusion.volumes import load_volume_model

    fusion = fusion_weights_file(request.model, request.weights)
    files = model_files(fusion, request.classifier, request.classify)
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"weights not found: {path}")
    if load:
        load_volume_model(request.model, "cpu", fusion)
        if request.classify:
            load_classifier(request.classifier)
    selection = request.selection
    return Settings(request.out_dir, selection.a, selection.b, request.model,
                    request.engine.device, fusion, request.classifier,
                    {"classify": request.classify}, model_hashes(files), request.overwrite)


def participant(request: Request, report: Callable[[Outcome], None],
                say: Callable[[str], None]) -> list[Outcome]:
    """Process every selected subject-session not yet done; returns each one's outcome
    (failures included: the run goes on). ``report`` is called as each one ends."""
    _check_folders(request.data_dir, request.out_dir)
    check_options(request.engine)
    items = find_subject_sessions(request.data_dir, request.selection, request.manifest)
    items = share(items, request.part) if request.part else items
    settings = _settings(request, load=True)
    write_json(request.out_dir / DESCRIPTION,
               dataset_description(request.data_dir, settings.models))
    outcomes, todo = [], []
    for item in items:
        outcome = _before_start(item, settings)
        if outcome is None:
            todo.append(item)
        else:
            outcomes.append(outcome)
            report(outcome)
    skipped = len(items) - len(todo) - _failed(outcomes)
    say(f"{count(len(items), 'subject-session')}: {skipped} up to date, {_failed(outcomes)} "
        f"failed before start, {len(todo)} to process")
    if todo:
        outcomes += _dispatch(todo, settings, request.engine, report, say)
    return outcomes


def _failed(outcomes: list[Outcome]) -> int:
    return sum(o.status == "failed" for o in outcomes)


def _before_start(item: SubjectSession, settings: Settings) -> Outcome | None:
    """Its outcome when it needs no worker: a missing input, current outputs, or the same
    failure of the same inputs as last time; None when it is to be processed."""
    outputs = outputs_of(settings.out_dir, item, settings.a_name, settings.b_name)
    if item.problem:
        record_failure(outputs, item, item.problem, None, True, {})
        write_log(outputs, item, [f"failed: {item.problem}"])
        return Outcome(item, "failed", error=item.problem)
    try:
        key = run_key(item, settings.options, settings.models)
    except OSError as error:
        return Outcome(item, "failed", error=one_line(error))
    if settings.overwrite:
        return None
    if is_done(outputs, key):
        return Outcome(item, "up to date")
    known = known_input_failure(outputs, key)
    return None if known is None else Outcome(
        item, "failed", error=f"{known} (as in the last run, whose files were the same)")


def _dispatch(todo: list[SubjectSession], settings: Settings, options: EngineOptions,
              report: Callable[[Outcome], None], say: Callable[[str], None]) -> list[Outcome]:
    """Send the tasks (file paths, not arrays) and collect them as they end, with a progress
    bar; afterwards remove what interrupted writers left, where no other run is at work."""
    from distributed import as_completed
    from tqdm import tqdm

    from .engine import start_engine
    from .task import NetworkPlugin, process

    outcomes, run = [], uuid.uuid4().hex[:8]  # task keys unique on a shared scheduler
    try:
        with start_engine(options) as engine:
            say(f"processing on {engine.description}")
            engine.client.register_plugin(NetworkPlugin(settings, engine.torch_threads))
            futures = {engine.client.submit(process, item, settings, pure=False,
                                            key=f"cohort-{item.prefix}-{run}",
                                            resources=engine.task_resources): item
                       for item in todo}
            with tqdm(total=len(todo), desc="cohort", unit="subject", file=sys.stderr) as bar:
                for future in as_completed(futures):
                    outcome = _outcome(future, futures[future], settings)
                    outcomes.append(outcome)
                    bar.update()
                    report(outcome)
    finally:
        for item in todo:
            with subject_lock(settings.out_dir, item.prefix, wait=False) as free:
                if free:
                    remove_unfinished(outputs_of(settings.out_dir, item, settings.a_name,
                                                 settings.b_name))
    return outcomes


def _outcome(future, item: SubjectSession, settings: Settings) -> Outcome:
    """The task's outcome; a task whose workers died (killed, out of memory, node lost) is
    recorded as failed here, to be retried by the next run."""
    if future.status != "error":
        return future.result()
    message = f"its worker died ({one_line(future.exception())})"
    outputs = outputs_of(settings.out_dir, item, settings.a_name, settings.b_name)
    record_failure(outputs, item, message, None, False, {})
    write_log(outputs, item, [f"failed: {message}"])
    return Outcome(item, "failed", error=message)


def group(request: Request) -> tuple[Path, list[dict]]:
    """Write OUT_DIR/group_summary.tsv: every selected subject-session with its status (done,
    outdated, failed, not-run), verdict, tumour probability, seconds, worker and error."""
    if not request.out_dir.is_dir():
        raise OutputError(f"OUT_DIR {request.out_dir} does not exist: run the participant "
                          "level first")
    items = find_subject_sessions(request.data_dir, request.selection, request.manifest)
    settings = _settings(request, load=False)
    rows = [_summary_row(item, settings) for item in items]
    text = io.StringIO()
    writer = csv.DictWriter(text, SUMMARY_COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "n/a" if v is None else v for k, v in row.items()} for row in rows)
    path = request.out_dir / SUMMARY
    write_text(path, text.getvalue())
    return path, rows


def _summary_row(item: SubjectSession, settings: Settings) -> dict:
    from ..clinical.wording import volume_verdict

    outputs = outputs_of(settings.out_dir, item, settings.a_name, settings.b_name)
    row = dict.fromkeys(SUMMARY_COLUMNS)
    row.update(participant_id=item.participant, session_id=item.session, status="not-run")
    sidecar, failure = read_json(outputs.sidecar), read_json(outputs.failure)
    if item.problem:
        row.update(status="failed", error=item.problem)
    elif sidecar and key_of(sidecar):
        current = is_done(outputs, run_key(item, settings.options, settings.models))
        verdict = sidecar.get("verdict")
        row.update(status="done" if current else "outdated",
                   seconds=sidecar["timing"]["seconds"], worker=sidecar["worker"]["process"])
        if verdict:
            row.update(verdict=volume_verdict(verdict) if verdict["in_scope"]
                       else f"not classified: {verdict['reason']}",
                       tumour_probability=verdict.get("tumour_probability"))
    elif failure:
        row.update(status="failed", error=failure.get("error"), seconds=failure.get("seconds"),
                   worker=failure.get("worker"))
    return row


def status_counts(rows: list[dict]) -> str:
    """'2 done, 1 failed' in a fixed order."""
    counts = Counter(row["status"] for row in rows)
    return ", ".join(f"{counts[s]} {s}" for s in ("done", "outdated", "failed", "not-run")
                     if counts[s])
