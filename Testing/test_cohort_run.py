"""``clinicalfmamba cohort`` on a real LocalCluster with 2 worker processes, on a small BIDS tree
of real volume crops: sub-01 with two sessions, sub-02 whose FLAIR is cut short, sub-03
without FLAIR. One participant run serves the tests of this module."""

from __future__ import annotations

import csv
import json

import pytest
import SimpleITK as sitk

from bad_inputs import cli, snapshot
from cohort_trees import FAST, anat, fused_files, make_cohort, network_loads, partials

GEOMETRY = ("GetSize", "GetOrigin", "GetSpacing", "GetDirection")
GOOD = ("01", "1"), ("01", "2")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """(BIDS tree, OUT_DIR, the run, the tree's bytes before it)."""
    root = tmp_path_factory.mktemp("cohort")
    bids = make_cohort(root / "bids")
    before = snapshot(bids)
    run = cli("cohort", bids, root / "out", "participant", *FAST)
    return bids, root / "out", run, before


def test_good_subject_sessions_are_fused_on_the_grid_of_a(cohort):
    bids, out, run, _ = cohort
    assert run.code == 5, run.err
    assert [p.name for p in fused_files(out)] == [
        "sub-01_ses-1_desc-fused_T2wFLAIR.nii.gz", "sub-01_ses-2_desc-fused_T2wFLAIR.nii.gz"]
    for subject, session in GOOD:
        folder, prefix = anat(bids, subject, session)
        a = sitk.ReadImage(str(folder / f"{prefix}_T2w.nii.gz"))
        fused = sitk.ReadImage(str(out / f"sub-{subject}" / f"ses-{session}" / "anat"
                                   / f"{prefix}_desc-fused_T2wFLAIR.nii.gz"))
        assert all(getattr(a, g)() == getattr(fused, g)() for g in GEOMETRY)
    # ses-2's FLAIR is on a wider grid: resampled onto the T2w's, with a warning in its log
    assert "resampled" in (out / "logs" / "sub-01_ses-2.log").read_text(encoding="utf-8")


def test_failures_are_named_logged_and_the_others_go_on(cohort):
    _, out, run, _ = cohort
    failed = [line for line in run.err.splitlines() if line.startswith("failed ")]
    assert len(failed) == 2, run.err
    assert any("sub-02" in line and "truncated" in line for line in failed)
    assert any("sub-03" in line and "no FLAIR image" in line for line in failed)
    assert "Traceback" not in run.err
    assert run.err.strip().splitlines()[-1].startswith(
        "clinicalfmamba cohort: error: 2 of 4 subject-sessions failed")
    for prefix, reason in (("sub-02", "truncated"), ("sub-03", "no FLAIR")):
        assert reason in json.loads((out / "logs" / f"{prefix}_failure.json").read_text())["error"]
        assert reason in (out / "logs" / f"{prefix}.log").read_text(encoding="utf-8")
    assert not list(out.glob("sub-02/**/*.nii.gz")) and not (out / "sub-03").exists()
    assert partials(out) == []


def test_each_worker_process_loads_the_networks_once(cohort):
    _, out, _, _ = cohort
    loads = network_loads(out)
    assert 1 <= len(loads) <= 2 and len(set(loads)) == len(loads), loads
    processes = {json.loads(p.read_text())["worker"]["process"]
                 for p in out.rglob("*_desc-fused_*.json")}
    assert processes <= set(loads)


def test_outputs_are_bids_derivatives_with_their_provenance(cohort):
    bids, out, _, _ = cohort
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    models = description["GeneratedBy"][0]["Models"]
    assert set(models) == {"fusion", "classifier", "scope_guard", "tumour_evidence"}
    assert all(len(m["sha256"]) == 64 for m in models.values())
    assert description["SourceDatasets"] == [{"URL": bids.resolve().as_uri()}]
    sidecar = json.loads(next(out.rglob("sub-01_ses-1_desc-fused_*.json")).read_text())
    assert set(sidecar["inputs"]) == {"a", "b"} and sidecar["inputs"]["a"]["path"].endswith(
        "sub-01_ses-1_T2w.nii.gz")
    assert sidecar["models"] == models and sidecar["options"] == {"classify": True}
    assert sidecar["verdict"]["prediction"] is not None and sidecar["timing"]["seconds"] > 0
    if sidecar["outputs"]["heatmap"]:
        assert (out / "sub-01" / "ses-1" / "anat" / sidecar["outputs"]["heatmap"]).exists()


def test_inputs_are_never_modified(cohort):
    bids, _, _, before = cohort
    assert snapshot(bids) == before


def test_a_rerun_writes_nothing(cohort):
    bids, out, _, _ = cohort
    before = snapshot(out)
    run = cli("cohort", bids, out, "participant", *FAST)
    assert run.code == 5, run.err
    assert "2 up to date, 2 failed before start, 0 to process" in run.out, run.out + run.err
    assert snapshot(out) == before


def test_group_summary_names_every_subject_session(cohort):
    bids, out, _, _ = cohort
    run = cli("cohort", bids, out, "group")
    assert run.code == 0, run.err
    assert "4 subject-sessions: 2 done, 2 failed" in run.out, run.out + run.err
    with open(out / "group_summary.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [(r["participant_id"], r["session_id"], r["status"]) for r in rows] == [
        ("01", "1", "done"), ("01", "2", "done"), ("02", "n/a", "failed"),
        ("03", "n/a", "failed")]
    assert all(r["verdict"] != "n/a" and r["worker"] != "n/a" for r in rows[:2])
    assert "truncated" in rows[2]["error"] and "no FLAIR" in rows[3]["error"]


def test_changed_inputs_make_the_group_level_call_it_outdated(cohort, tmp_path):
    """The sidecar's key is the inputs' content: a copy of the outputs against a tree whose
    T2w changed reads as outdated (the tree and outputs of the module stay as they are)."""
    import shutil

    bids, out, _, _ = cohort
    shutil.copytree(bids, tmp_path / "bids")
    shutil.copytree(out, tmp_path / "out")
    folder, prefix = anat(tmp_path / "bids", "01", "1")
    flair = (folder / f"{prefix}_FLAIR.nii.gz").read_bytes()
    (folder / f"{prefix}_T2w.nii.gz").write_bytes(flair)
    run = cli("cohort", tmp_path / "bids", tmp_path / "out", "group")
    assert "1 done, 1 outdated, 2 failed" in run.out, run.out + run.err
