"""The cohort command as a process, interrupted: Ctrl-C, a worker killed mid-run, and two runs
into one OUT_DIR at once. Each leaves no partial file and a rerun completes the cohort."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

from bad_inputs import REPO, TEXT, Run, cli, cli_process
from cohort_trees import FAST, fused_files, make_pairs, network_loads, partials


def start(*args) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ClinicalFMambaLib.cli", "cohort",
                             *map(str, args)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **TEXT)


def finish(process: subprocess.Popen, timeout: float = 240) -> Run:
    out, err = process.communicate(timeout=timeout)
    return Run(process.returncode, out, err)


def wait_for(condition, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def complete(out, count: int) -> bool:
    """Every subject fused, each with its sidecar, and no staging folder left."""
    sidecars = sorted(out.rglob("*_desc-fused_*.json"))
    return len(fused_files(out)) == count and len(sidecars) == count and partials(out) == []


def test_ctrl_c_then_a_killed_worker_then_a_rerun_complete_the_cohort(tmp_path):
    bids, out = make_pairs(tmp_path / "bids", 3), tmp_path / "out"
    args = (bids, out, "participant", *FAST, "--no-classify")  # verdicts: test_cohort_run

    first = start(*args)
    wait_for(lambda: network_loads(out))  # the workers are at work
    first.send_signal(signal.SIGINT)
    run = finish(first)
    assert run.code == 130, run.err
    assert "interrupted; no partial output was left" in run.err and "Traceback" not in run.err
    assert partials(out) == []
    for fused in fused_files(out):  # whatever was finished is whole: its sidecar is there
        assert fused.with_name(fused.name.replace(".nii.gz", ".json")).exists()

    loads = len(network_loads(out))
    second = start(*args)
    # a worker loads the networks inside its first task, which goes on to fuse: killed now,
    # it dies in the middle of that task
    wait_for(lambda: len(network_loads(out)) > loads)
    victim = int(network_loads(out)[loads].rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)  # Dask's nanny restarts it; its task goes elsewhere
    run = finish(second)
    assert run.code in (0, 5), run.err
    assert partials(out) == []

    run = cli_process("cohort", *args, timeout=240)
    assert run.code == 0, run.err
    assert complete(out, 3)
    loads = network_loads(out)
    assert len(set(loads)) == len(loads), loads  # once per worker process, restarts included


def test_two_runs_into_one_folder_fuse_each_subject_once(tmp_path):
    bids, out = make_pairs(tmp_path / "bids", 3), tmp_path / "out"
    # one worker process each, running two subjects at once (one torch thread each)
    each = ("--workers", "1", "--threads-per-worker", "2", "--device", "cpu", "--no-classify")
    runs = [start(bids, out, "participant", *each) for _ in range(2)]
    results = [finish(process) for process in runs]
    assert [r.code for r in results] == [0, 0], [r.err for r in results]
    fused = sum(int(re.search(r"(\d+) fused", r.out)[1]) for r in results)
    assert fused == 3, [r.out for r in results]  # the other run found each one done
    assert complete(out, 3)
    for sidecar in out.rglob("*_desc-fused_*.json"):
        assert json.loads(sidecar.read_text())["options"] == {"classify": False}


def test_an_existing_dask_cluster_runs_the_cohort_and_stays_up(tmp_path):
    import logging

    from distributed import Client, LocalCluster

    bids, out = make_pairs(tmp_path / "bids", 2), tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        run = cli("cohort", bids, out, "participant", "--scheduler",
                  cluster.scheduler_address, "--no-classify")
        assert run.code == 0, run.err
        assert f"the Dask cluster at {cluster.scheduler_address} (1 worker)" in run.out
        with Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 1
    assert complete(out, 2)
