"""The cohort on a real single-node SLURM through dask-jobqueue: two subjects, the Dask workers
started as a batch job. SLURM is the one that SLURM_CONF names, else the one that
tools/slurm/start_single_node.sh starts here (as root, with Debian's slurm-wlm and munge
installed); without either the test is skipped, saying so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bad_inputs import REPO, cli, cli_process
from cohort_trees import fused_files, make_pairs, partials

START = REPO / "tools" / "slurm" / "start_single_node.sh"


def slurm_is_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return result.returncode == 0 and "idle" in result.stdout.split()


@pytest.fixture(scope="module")
def slurm():
    """A running SLURM for this module (started here, and stopped after, if need be)."""
    started = False
    if not os.environ.get("SLURM_CONF") or not slurm_is_up():
        if os.geteuid() != 0 or not shutil.which("slurmctld"):
            pytest.skip(f"no SLURM here: install slurm-wlm and munge, then run {START}")
        result = subprocess.run(["bash", str(START)], capture_output=True, text=True,
                                timeout=180)
        assert result.returncode == 0, result.stderr
        os.environ["SLURM_CONF"] = result.stdout.strip().split("=", 1)[1]
        started = True
    yield
    if started:
        subprocess.run(["bash", str(START), "--stop"], timeout=60)
        del os.environ["SLURM_CONF"]


def test_two_subjects_on_a_slurm_job(slurm, tmp_path):
    bids, out = make_pairs(tmp_path / "bids", 2), tmp_path / "out"
    run = cli_process("cohort", bids, out, "participant", "--cluster", "slurm", "--queue",
                      "debug", "--walltime", "00:30:00", "--job-cores", "1", "--job-memory",
                      "6GB", "--jobs", "1", "--device", "cpu", "--no-classify", timeout=300)
    assert run.code == 0, run.err
    assert "processing on up to 1 SLURM job of 1 worker process" in run.out
    assert "2 fused, 0 up to date, 0 failed" in run.out
    assert len(fused_files(out)) == 2 and partials(out) == []
    assert list((out / "logs" / "jobs").glob("clinicalfmamba-*.err")), "SLURM's job logs"
    queue = subprocess.run(["squeue", "-h", "-n", "clinicalfmamba"], capture_output=True,
                           text=True)
    assert queue.stdout.strip() == "", "the job ends with the run"


def test_a_job_array_without_a_scheduler_does_one_share_per_task(slurm, tmp_path):
    """docs/cohort_slurm_array.sh as sbatch --array=1-2: each task its --part, together the
    cohort; the group level then sums it up."""
    bids, out = make_pairs(tmp_path / "bids", 2), tmp_path / "out"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run(["sbatch", "--wait", "--array=1-2", "--cpus-per-task=1", "--mem=4G",
                          "--chdir", str(tmp_path), str(REPO / "docs" / "cohort_slurm_array.sh"),
                          str(bids), str(out), "--workers", "1", "--device", "cpu",
                          "--no-classify"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    logs = sorted(tmp_path.glob("clinicalfmamba-cohort-*.out"))
    assert len(logs) == 2
    shares = [log.read_text(encoding="utf-8", errors="replace") for log in logs]
    assert all("1 subject-session: 0 up to date, 0 failed before start, 1 to process" in text
               for text in shares), shares
    assert len(fused_files(out)) == 2 and partials(out) == []
    group = cli("cohort", bids, out, "group", "--no-classify")  # the options of the run
    assert "2 subject-sessions: 2 done" in group.out, group.out + group.err
