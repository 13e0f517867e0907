"""The ``cohort`` command: a BIDS App (``BIDS_DIR OUT_DIR participant|group``) that fuses and
classifies every subject-session on Dask workers (docs/cohort.md)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

NEEDED = {"distributed": "dask[distributed]", "bids": "pybids"}


def _at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""
    def whole(text: str) -> int:
        if not text.strip().isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"a whole number of at least {minimum}, not "
                                             f"{text!r}")
        return int(text)

    return whole


def _check_installed(args: argparse.Namespace) -> None:
    from ..core.errors import InputError

    needed = {**NEEDED, **({"dask_jobqueue": "dask-jobqueue"} if args.cluster else {})}
    missing = [name for module, name in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise InputError(f"the cohort command needs {', '.join(missing)}: pip install "
                         "'clinicalfmamba[cohort]'")


def _request(args: argparse.Namespace):
    from ..cohort.engine import EngineOptions
    from ..cohort.inputs import Selection, parse_entity
    from ..cohort.levels import Request
    from ..cohort.subjects import label, parse_part

    if args.scheduler and args.cluster:
        raise ValueError("--scheduler uses a running cluster and --cluster starts one: "
                         "give one of them")
    selection = Selection(args.a, args.b, tuple(map(parse_entity, args.a_entity)),
                          tuple(map(parse_entity, args.b_entity)),
                          tuple(label(x, "sub") for x in args.participant_label),
                          tuple(label(x, "ses") for x in args.session_label))
    engine = EngineOptions(args.device, args.workers, args.threads_per_worker,
                           args.memory_limit, args.scheduler, args.cluster, args.queue,
                           args.account, args.walltime, args.job_memory, args.job_cores,
                           args.gpus_per_job, args.jobs, args.output_dir / "logs" / "jobs")
    return Request(args.bids_dir, args.output_dir, selection, args.manifest,
                   parse_part(args.part) if args.part else None, args.model, args.weights,
                   args.classify, args.classifier, args.overwrite, engine)


def _report(outcome) -> None:
    from tqdm import tqdm

    from ..clinical.wording import verdict_line

    name = outcome.item.name
    for warning in outcome.warnings:
        tqdm.write(f"clinicalfmamba: warning: {name}: {warning}", file=sys.stderr)
    if outcome.status == "failed":
        tqdm.write(f"failed {name}: {outcome.error}", file=sys.stderr)
    elif outcome.status == "fused":
        done = verdict_line({"input": name, **outcome.verdict}) if outcome.verdict \
            else f"{name}: fused"
        tqdm.write(f"{done}  [{outcome.seconds:.1f} s on {outcome.worker}]", file=sys.stdout)


def run_cohort(args: argparse.Namespace) -> int:
    from collections import Counter

    from ..core.errors import PartialRunError

    _check_installed(args)
    request = _request(args)
    if args.level == "group":
        return _group(request)
    from ..cohort.levels import participant

    outcomes = participant(request, _report, print)
    counts = Counter(outcome.status for outcome in outcomes)
    print(f"{counts['fused']} fused, {counts['up to date']} up to date, {counts['failed']} "
          f"failed; outputs in {args.output_dir}")
    if counts["failed"]:
        raise PartialRunError(f"{counts['failed']} of {len(outcomes)} subject-sessions failed "
                              f"(listed above; logs in {args.output_dir / 'logs'})")
    return 0


def _group(request) -> int:
    from collections import Counter

    from ..cohort.levels import group, status_counts
    from ..cohort.subjects import count

    path, rows = group(request)
    verdicts = Counter(row["verdict"] for row in rows if row["verdict"])
    print(f"{count(len(rows), 'subject-session')}: {status_counts(rows)}")
    if verdicts:
        print("verdicts: " + ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items())))
    print(f"wrote {path}")
    return 0


def register(commands) -> None:
    """Add the cohort sub-command."""
    cohort = commands.add_parser(
        "cohort", help="fuse and classify a whole cohort (BIDS App, on Dask workers)",
        description="BIDS App: at the participant level, fuse each subject-session's two "
                    "contrasts (A's grid kept) and give the tumour verdict, as BIDS "
                    "derivatives in OUT_DIR; outputs that are current are skipped, failures "
                    "are named and logged in OUT_DIR/logs and the others go on (exit 5). At "
                    "the group level, write OUT_DIR/group_summary.tsv. docs/cohort.md")
    cohort.add_argument("bids_dir", metavar="BIDS_DIR", type=Path,
                        help="the BIDS dataset (with --manifest: the folder its relative "
                             "paths start from)")
    cohort.add_argument("output_dir", metavar="OUT_DIR", type=Path,
                        help="the derivatives folder (outside BIDS_DIR or under its "
                             "derivatives/)")
    cohort.add_argument("level", choices=("participant", "group"), help="the analysis level")
    inputs = cohort.add_argument_group("inputs")
    inputs.add_argument("--participant-label", nargs="+", action="extend", default=[],
                        metavar="L", help="only these subjects (with or without 'sub-')")
    inputs.add_argument("--session-label", nargs="+", action="extend", default=[],
                        metavar="S", help="only these sessions (with or without 'ses-')")
    inputs.add_argument("--a", default="T2w", metavar="SUFFIX",
                        help="BIDS suffix of A, whose grid is kept (default: %(default)s)")
    inputs.add_argument("--b", default="FLAIR", metavar="SUFFIX",
                        help="BIDS suffix of B (default: %(default)s)")
    for side in ("a", "b"):
        inputs.add_argument(f"--{side}-entity", action="append", default=[], metavar="KEY=VALUE",
                            help=f"select {side.upper()} by a BIDS entity too, e.g. acq=axial "
                                 "or ce=gadolinium (repeatable)")
    inputs.add_argument("--manifest", type=Path, default=None, metavar="CSV",
                        help="data that is not BIDS: a CSV with participant_id, session_id "
                             "(may be empty), a, b (paths relative to BIDS_DIR or absolute)")
    inputs.add_argument("--part", metavar="K/N", default=None,
                        help="process only the K-th of N shares (a job array without a "
                             "scheduler: sbatch --array=1-N)")
    work = cohort.add_argument_group("what is done")
    work.add_argument("--weights", type=Path, default=None, metavar="PATH",
                      help="fusion weights (default: the bundled fusion3d.safetensors)")
    work.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                      help="where the networks run (auto: a GPU where the workers have one)")
    work.add_argument("--model", choices=("auto", "2d", "3d"), default="auto",
                      help="fusion network for volumes (as fuse --model)")
    work.add_argument("--classify", action=argparse.BooleanOptionalAction, default=True,
                      help="give the tumour verdict and its heatmap (default: on)")
    work.add_argument("--classifier", type=Path, default=None, metavar="PATH",
                      help="classifier weights (default: the bundled one)")
    work.add_argument("--overwrite", action="store_true",
                      help="redo subject-sessions whose outputs are current")
    engine = cohort.add_argument_group("engine (Dask; default: a local cluster)")
    engine.add_argument("--workers", type=_at_least(1), default=None, metavar="N",
                        help="worker processes (per job with --cluster; default: one per GPU, "
                             "else one per 4 GiB of memory, at most one per core)")
    engine.add_argument("--threads-per-worker", type=_at_least(1), default=None,
                        metavar="T",
                        help="subject-sessions a worker runs at once (default: 1)")
    engine.add_argument("--memory-limit", default=None, metavar="SIZE",
                        help="memory per local worker, e.g. 6GB (default: the machine's, "
                             "shared)")
    engine.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                        help="use this running Dask cluster")
    engine.add_argument("--cluster", choices=("slurm", "pbs"), default=None,
                        help="start Dask workers as batch jobs (dask-jobqueue)")
    engine.add_argument("--queue", default=None, help="batch queue or partition")
    engine.add_argument("--account", default=None, help="batch account or project")
    engine.add_argument("--walltime", default="01:00:00", metavar="[D-]HH:MM:SS",
                        help="per job; workers retire before it (default: %(default)s)")
    engine.add_argument("--job-memory", default="16GB", metavar="SIZE",
                        help="per job (default: %(default)s)")
    engine.add_argument("--job-cores", type=_at_least(1), default=4, metavar="N",
                        help="per job (default: %(default)s)")
    engine.add_argument("--gpus-per-job", type=_at_least(0), default=0, metavar="N",
                        help="GPUs per job, one worker each (default: %(default)s)")
    engine.add_argument("--jobs", type=_at_least(1), default=4, metavar="N",
                        help="at most this many jobs at once (default: %(default)s)")
    cohort.set_defaults(func=run_cohort)
