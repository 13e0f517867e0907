"""The cohort command's options without a cluster: job-array shares, sizing, the SLURM and PBS
job scripts that dask-jobqueue writes, manifests, and bad input refused in one line."""

from __future__ import annotations

import pytest

from bad_inputs import assert_refused, cli
from ClinicalFMambaLib.cohort.engine import (EngineOptions, jobqueue_cluster, local_size,
                                             worker_lifetime)
from ClinicalFMambaLib.cohort.inputs import Selection, find_subject_sessions
from ClinicalFMambaLib.cohort.subjects import SubjectSession, parse_part, share
from ClinicalFMambaLib.cohort.task import gpu_index
from cohort_trees import anat, description, make_cohort

GiB = 2 ** 30


def test_the_shares_of_a_job_array_hold_every_subject_session_once():
    items = [SubjectSession(f"{n:02d}", s, None, None) for n in range(7) for s in ("1", "2")]
    shares = [share(items, (k, 3)) for k in (1, 2, 3)]
    assert sorted(i.prefix for part in shares for i in part) == sorted(i.prefix for i in items)
    assert {len(part) for part in shares} == {4, 5}
    assert parse_part(" 2/3 ") == (2, 3)
    for bad in ("0/3", "4/3", "3", "a/b"):
        with pytest.raises(ValueError, match="K/N"):
            parse_part(bad)


def test_local_workers_are_sized_by_memory_cores_and_gpus():
    assert local_size(8, 16 * GiB, 0, None, None) == (4, 1, 2)  # 4 GiB a worker
    assert local_size(2, 64 * GiB, 0, None, None) == (2, 1, 1)  # at most one per core
    assert local_size(16, 64 * GiB, 2, None, None) == (2, 1, 8)  # one per GPU
    assert local_size(2, 4 * GiB, 0, 1, 2) == (1, 2, 1)
    assert [gpu_index(name, 2) for name in (0, 1, 2, "SLURMCluster-3-1", "x")] == [0, 1, 0, 1, 0]


def test_the_slurm_job_script_reserves_the_job_and_retires_workers_before_the_walltime():
    options = EngineOptions(cluster="slurm", queue="short", account="lab", walltime="02:00:00",
                            job_memory="32GB", job_cores=8, gpus_per_job=2)
    with jobqueue_cluster(options) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p short", "#SBATCH -A lab", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=30G", "#SBATCH -t 02:00:00", "#SBATCH --gres=gpu:2"):
        assert line in script.splitlines(), script
    lifetime, stagger = worker_lifetime("02:00:00")
    assert lifetime + stagger < 2 * 3600
    for words in ("--nworkers 2", "--nthreads 1", f"--lifetime {lifetime}s",
                  f"--lifetime-stagger {stagger}s", "--resources GPU=1"):
        assert words in script, script


def test_the_pbs_job_script_asks_for_cores_memory_and_gpus():
    options = EngineOptions(cluster="pbs", queue="gpu", walltime="1-00:00:00",
                            job_memory="16GB", job_cores=4, gpus_per_job=1)
    with jobqueue_cluster(options) as cluster:
        script = cluster.job_script()
    assert "#PBS -l select=1:ncpus=4:mem=15GB:ngpus=1" in script, script
    assert "#PBS -l walltime=1-00:00:00" in script and "--resources GPU=1" in script


def test_bids_entities_pick_one_of_several_runs(tmp_path):
    description(tmp_path)
    folder, prefix = anat(tmp_path, "01")
    folder.mkdir(parents=True)
    for name in ("run-1_T2w", "run-2_T2w", "FLAIR"):
        (folder / f"{prefix}_{name}.nii.gz").write_bytes(b"")
    [item] = find_subject_sessions(tmp_path, Selection())
    assert "2 T2w images match" in item.problem and "--a-entity" in item.problem
    [item] = find_subject_sessions(tmp_path, Selection(a_entities=(("run", "2"),)))
    assert item.problem is None and item.a.name == "sub-01_run-2_T2w.nii.gz"


def test_a_manifest_names_pairs_that_are_not_bids(tmp_path):
    (tmp_path / "x.nii.gz").write_bytes(b"")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("participant_id,session_id,a,b\nsub-p1,,x.nii.gz,x.nii.gz\n"
                        "p2,ses-b,x.nii.gz,missing.nii.gz\n")
    first, second = find_subject_sessions(tmp_path, Selection(), manifest)
    assert (first.prefix, first.problem) == ("sub-p1", None)
    assert second.prefix == "sub-p2_ses-b" and second.problem == "B not found: missing.nii.gz"


@pytest.mark.parametrize("extra, code, words", [
    (("--participant-label", "09"), 2, ("no sub-09",)),
    (("--part", "3/2"), 2, ("K/N",)),
    (("--a-entity", "acq"), 2, ("KEY=VALUE",)),
    (("--a-entity", "colour=red"), 2, ("unknown BIDS entity colour",)),
    (("--scheduler", "tcp://127.0.0.1:1", "--cluster", "slurm"), 2, ("give one of them",)),
    (("--walltime", "00:05:00", "--cluster", "slurm"), 2, ("too short",)),
    (("--memory-limit", "lots"), 2, ("--memory-limit", "8GB")),
    (("--weights", "missing.safetensors"), 2, ("missing.safetensors",)),
])
def test_bad_options_are_refused_in_one_line(tmp_path, extra, code, words):
    bids = make_cohort(tmp_path / "bids")
    run = cli("cohort", bids, tmp_path / "out", "participant", *extra)
    assert_refused(run, code, *words)
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


def test_an_output_folder_inside_the_dataset_is_refused(tmp_path):
    bids = make_cohort(tmp_path / "bids")
    assert_refused(cli("cohort", bids, bids / "out", "participant"), 3, "overlap")
    assert_refused(cli("cohort", bids, bids, "participant"), 3, "overlap")
    assert_refused(cli("cohort", tmp_path / "nothing", tmp_path / "out", "participant"), 2,
                   "not found")
    assert_refused(cli("cohort", bids, tmp_path / "none", "group"), 3, "participant level")
