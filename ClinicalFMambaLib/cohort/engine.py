"""Where the tasks run: Dask distributed, on a LocalCluster of worker processes sized to the
machine (default), on an existing cluster (a scheduler address), or on SLURM or PBS jobs
started with dask-jobqueue.

Sizing: a worker fuses one subject at a time per thread, and a whole 240x240x155 brain takes
about 2.5 GB in one pass (docs/design.md), so a worker gets at least ``WORKER_MEMORY``; the
machine's cores are shared among the workers' torch threads. Where GPUs are used, there is one
worker per GPU and every task asks for the Dask resource ``GPU=1``, so a GPU runs one subject
at a time.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..core.errors import InputError
from .subjects import count

WORKER_MEMORY = 4 * 2 ** 30
GPU_RESOURCE = {"GPU": 1}
CLUSTER_KINDS = ("slurm", "pbs")
SHORTEST_WALLTIME = 600  # seconds; shorter jobs would retire their workers at once


@dataclass(frozen=True)
class EngineOptions:
    """The command's engine options (``None``: sized to the machine or the job)."""

    device: str = "auto"
    workers: int | None = None            # local workers, or worker processes per job
    threads_per_worker: int | None = None
    memory_limit: str | None = None       # per local worker, e.g. "6GB"
    scheduler: str | None = None          # tcp://HOST:PORT of an existing cluster
    cluster: str | None = None            # slurm or pbs
    queue: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    job_memory: str = "16GB"
    job_cores: int = 4
    gpus_per_job: int = 0
    jobs: int = 4
    log_directory: Path | None = None     # the batch system's job output files


@dataclass
class Engine:
    """A connected client, the resources each task asks for, the torch threads each task
    uses (None: the worker's own setting), and a one-line description."""

    client: object
    task_resources: dict | None
    torch_threads: int | None
    description: str


def local_size(cpus: int, memory: int, gpus: int, workers: int | None,
               threads: int | None) -> tuple[int, int, int]:
    """(workers, Dask threads per worker, torch threads per task) for one machine."""
    workers = workers or gpus or max(1, min(cpus, memory // WORKER_MEMORY))
    threads = threads or 1
    return workers, threads, max(1, cpus // (workers * threads))


def walltime_seconds(walltime: str) -> int:
    """Seconds of a ``[D-]HH:MM:SS`` walltime; InputError for another form or under 10 min."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2}):(\d{2})", walltime.strip())
    if not match:
        raise InputError(f"--walltime takes [D-]HH:MM:SS (e.g. 02:00:00), not {walltime!r}")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total < SHORTEST_WALLTIME:
        raise InputError(f"--walltime {walltime} is too short: jobs need at least 00:10:00 "
                         "(their workers retire before the walltime ends)")
    return total


def worker_lifetime(walltime: str) -> tuple[int, int]:
    """(lifetime, stagger) in seconds: a worker retires between lifetime - stagger and
    lifetime + stagger, always before the batch system kills its job at the walltime, so its
    task goes to another worker instead of dying with the job."""
    total = walltime_seconds(walltime)
    margin = max(300, total // 10)
    return total - margin, margin // 4


def check_options(options: EngineOptions) -> None:
    """Refuse, before any work, a walltime or memory size that cannot be used."""
    from dask.utils import parse_bytes

    if options.cluster:
        worker_lifetime(options.walltime)
    for flag, size in (("--memory-limit", options.memory_limit),
                       ("--job-memory", options.job_memory if options.cluster else None)):
        try:
            if size is not None and parse_bytes(size) <= 0:
                raise ValueError
        except ValueError:
            raise InputError(f"{flag} takes a size such as 8GB, not {size!r}") from None


def _local_gpus(device: str) -> int:
    if device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _warn_small_memory(memory_limit: str | None, workers: int, total: int) -> None:
    from dask.utils import parse_bytes

    each = parse_bytes(memory_limit) if memory_limit else total // workers
    if each < WORKER_MEMORY:
        warnings.warn(f"each worker may use {each / 2 ** 30:.1f} GiB; a whole brain volume "
                      f"needs about {WORKER_MEMORY / 2 ** 30:.0f} GiB, and Dask restarts a "
                      "worker that goes over its limit: use fewer --workers")


def job_workers(options: EngineOptions) -> int:
    """Worker processes per batch job: one per GPU, else as many as its memory holds."""
    from dask.utils import parse_bytes

    return options.workers or options.gpus_per_job or max(1, min(
        options.job_cores, parse_bytes(options.job_memory) // WORKER_MEMORY))


def jobqueue_cluster(options: EngineOptions):
    """A dask-jobqueue SLURMCluster or PBSCluster (no job submitted yet): each job runs
    ``workers`` worker processes (one per GPU where there are GPUs) that share its cores,
    with a lifetime shorter than the walltime."""
    from dask.utils import parse_bytes
    from dask_jobqueue import PBSCluster, SLURMCluster
    from dask_jobqueue.pbs import pbs_format_bytes_ceil

    lifetime, stagger = worker_lifetime(options.walltime)
    gpus = options.gpus_per_job
    processes = job_workers(options)
    worker_args = ["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"]
    worker_args += ["--resources", "GPU=1"] if gpus else []
    common = dict(cores=processes, processes=processes, memory=options.job_memory,
                  queue=options.queue, account=options.account, walltime=options.walltime,
                  job_name="clinicalfmamba", worker_extra_args=worker_args,
                  python=sys.executable, scheduler_options={"dashboard_address": None},
                  log_directory=str(options.log_directory) if options.log_directory else None)
    if options.cluster == "slurm":  # job_cpu: the job reserves all its cores
        return SLURMCluster(job_cpu=options.job_cores, **common,
                            job_extra_directives=[f"--gres=gpu:{gpus}"] if gpus else [])
    spec = f"select=1:ncpus={options.job_cores}:mem=" \
           f"{pbs_format_bytes_ceil(parse_bytes(options.job_memory))}"
    return PBSCluster(resource_spec=spec + (f":ngpus={gpus}" if gpus else ""), **common)


@contextmanager
def start_engine(options: EngineOptions) -> Iterator[Engine]:
    """Connect to (or start) the cluster; on the way out, close what was started."""
    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster
    from distributed.system import MEMORY_LIMIT

    with ExitStack() as stack:
        if options.scheduler:
            try:
                client = stack.enter_context(Client(options.scheduler, timeout="30s"))
            except (OSError, TimeoutError) as error:
                raise InputError(f"cannot reach the Dask scheduler at {options.scheduler} "
                                 f"({' '.join(str(error).split())})") from None
            workers = client.scheduler_info()["workers"].values()
            gpu = any("GPU" in w.get("resources", {}) for w in workers)
            yield Engine(client, GPU_RESOURCE if gpu else None, None, f"the Dask cluster at "
                         f"{options.scheduler} ({count(len(workers), 'worker')})")
            return
        if options.cluster:
            cluster = stack.enter_context(jobqueue_cluster(options))
            cluster.adapt(minimum_jobs=0, maximum_jobs=options.jobs)
            client = stack.enter_context(Client(cluster))
            processes = job_workers(options)
            yield Engine(client, GPU_RESOURCE if options.gpus_per_job else None,
                         max(1, options.job_cores // processes),
                         f"up to {count(options.jobs, options.cluster.upper() + ' job')} of "
                         f"{count(processes, 'worker process')}")
            return
        gpus = _local_gpus(options.device)
        workers, threads, torch_threads = local_size(CPU_COUNT, MEMORY_LIMIT, gpus,
                                                     options.workers,
                                                     options.threads_per_worker)
        _warn_small_memory(options.memory_limit, workers, MEMORY_LIMIT)
        cluster = stack.enter_context(LocalCluster(
            n_workers=workers, threads_per_worker=threads, processes=True,
            memory_limit=options.memory_limit or "auto", dashboard_address=None,
            silence_logs=logging.ERROR, resources=GPU_RESOURCE if gpus else None))
        client = stack.enter_context(Client(cluster))
        yield Engine(client, GPU_RESOURCE if gpus else None, torch_threads,
                     f"a local cluster of {count(workers, 'worker process')}, "
                     f"{count(threads, 'subject')} at a time each, "
                     + (f"on {count(gpus, 'GPU')}" if gpus else
                        f"{count(torch_threads, 'torch thread')} per subject"))

