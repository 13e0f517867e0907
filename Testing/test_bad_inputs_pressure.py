"""Inputs and outputs under pressure: a MetaImage whose data file an output would replace, a
full disk and a file-size limit, a DICOM series with a missing slice, a run killed while it
writes, and inputs that used to give an unclear answer (a pipe, a device, a 1x1x1 volume, a
label map, A fused with itself, a noise volume, CUDA asked for where there is none). Each
ends as a user needs: the exit code, one line naming the problem, inputs byte-identical,
nothing partial left."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from bad_inputs import (SAMPLE, assert_refused, cli, cli_process, crops, needs_data,  # noqa: F401
                        pair, signalled_during_write, snapshot, write_dicom_series,
                        write_volume)

from ClinicalFMambaLib.io.files import PARTIAL_PREFIX, files_read, remove_stale_partials

pytestmark = needs_data
SERIES = "1.2.826.0.1.3680043.8.498.7"
SIZE_LIMIT = ("bash", "-c", 'ulimit -f 16 && exec "$0" "$@"')  # 16 KiB per file written


def partials(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".partial"))


# ------------------------------------------------------------------ MetaImage data files

def test_mhd_output_over_the_data_file_of_an_mhd_input_is_refused(pair, tmp_path):
    """T1.mhd keeps its voxels in A.raw: writing A.mhd would replace A.raw, the input."""
    t2, flair = pair
    sitk.WriteImage(sitk.GetImageFromArray(sitk.GetArrayFromImage(sitk.ReadImage(str(t2)))),
                    str(tmp_path / "A.mhd"))
    (tmp_path / "A.mhd").rename(tmp_path / "T1.mhd")
    assert files_read(tmp_path / "T1.mhd") == [tmp_path / "T1.mhd", tmp_path / "A.raw"]
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", tmp_path / "T1.mhd", flair, "-o", tmp_path / "A.mhd"), 3,
                   "would overwrite the input", "T1.mhd", "its data file A.raw")
    assert snapshot(tmp_path) == before


def test_nhdr_data_file_is_read_as_part_of_the_input(tmp_path):
    header = tmp_path / "scan.nhdr"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32)), str(header))
    assert files_read(header) == [header, tmp_path / "scan.raw"]


# ------------------------------------------------------------------ full disk, size limit

@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_volume_output_over_a_file_size_limit_exits_3_and_leaves_nothing(pair, tmp_path,
                                                                          suffix):
    """NIfTI writers report neither a full disk nor a size limit (the file was cut short,
    exit 0); NRRD and MetaImage writers raised their raw text (exit 1)."""
    t2, flair = pair
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(tmp_path)
    run = cli_process("fuse", t2, flair, "-o", out / f"fused{suffix}", runner=SIZE_LIMIT)
    assert_refused(run, 3, f"cannot write {out / f'fused{suffix}'}", "file-size limit",
                   "Nothing was written")
    assert snapshot(tmp_path) == before and list(out.iterdir()) == []


def test_picture_output_over_a_file_size_limit_exits_3_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    run = cli_process("fuse", SAMPLE / "mri_ct_MRI.png", SAMPLE / "mri_ct_CT.png", "-o",
                      out / "fused.png", runner=("bash", "-c", 'ulimit -f 4 && exec "$0" "$@"'))
    assert_refused(run, 3, "cannot write", "fused.png", "Nothing was written")
    assert list(out.iterdir()) == []


@pytest.fixture
def full_disk():
    """A 256 KiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    folder = tempfile.mkdtemp(prefix="clinicalfmamba-full-disk-")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", folder],
                             capture_output=True).returncode == 0
    if not mounted:
        os.rmdir(folder)
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield Path(folder)
    finally:
        subprocess.run(["umount", folder], check=False)
        os.rmdir(folder)


def test_volume_output_on_a_full_disk_exits_3_and_leaves_nothing(pair, full_disk):
    t2, flair = pair
    run = cli("fuse", t2, flair, "-o", full_disk / "fused.nii")  # 1.4 MB into 256 KiB
    assert_refused(run, 3, "cannot write", "is the disk full")
    assert list(full_disk.iterdir()) == []


# ------------------------------------------------------------------ DICOM series with a gap

def test_dicom_series_with_a_missing_slice_is_refused_naming_the_gap(pair, tmp_path):
    t2, flair = pair
    series = write_dicom_series(sitk.ReadImage(str(t2)), tmp_path / "dicom", SERIES, skip=10)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", series, flair, "-o", tmp_path / "fused.nii.gz"), 2,
                   "irregular slice positions", "2.00 mm between slices 10 and 11 of 23",
                   "1.00 mm elsewhere", "missing slice")
    assert snapshot(tmp_path) == before


def test_complete_dicom_series_still_fuses(pair, tmp_path):
    t2, flair = pair
    series = write_dicom_series(sitk.ReadImage(str(t2)), tmp_path / "dicom", SERIES)
    assert cli("fuse", series, flair, "-o", tmp_path / "fused.nii.gz").code == 0


# ------------------------------------------------------------------ killed while writing

def test_partial_folder_of_a_killed_run_is_removed_by_the_next_run(pair, tmp_path):
    """SIGKILL (a cluster's wall time) leaves the staging folder; the next run into that
    folder recognises it as ours and its process as gone, and removes it."""
    t2, flair = pair
    out = tmp_path / "out"
    killed = signalled_during_write(["fuse", t2, flair, "-o", out / "fused.nii.gz"],
                                    signal.SIGKILL)
    assert killed.code == -signal.SIGKILL
    left = partials(out)
    assert len(left) == 1 and left[0].startswith(PARTIAL_PREFIX)
    assert cli("fuse", t2, flair, "-o", out / "other.nii.gz").code == 0
    assert partials(out) == [] and sorted(p.name for p in out.iterdir()) == ["other.nii.gz"]


def test_partial_folders_of_live_runs_and_of_others_are_kept(tmp_path):
    live = tmp_path / f"{PARTIAL_PREFIX}{os.getpid()}-{os.uname().nodename}.abc"
    foreign = tmp_path / f"{PARTIAL_PREFIX}1-another-host.abc"
    not_ours = tmp_path / ".partial-abc"
    for folder in (live, foreign, not_ours):
        folder.mkdir()
    assert remove_stale_partials(tmp_path) == []
    assert partials(tmp_path) == sorted(p.name for p in (live, foreign, not_ours))


# ------------------------------------------------------------------ unclear answers made clear

@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_device_cuda_without_cuda_is_a_clear_exit_2(pair, tmp_path):
    t2, flair = pair
    assert_refused(cli_process("fuse", t2, flair, "-o", tmp_path / "f.nii.gz", "--device",
                               "cuda"), 2, "no CUDA GPU is available here")
    assert not (tmp_path / "f.nii.gz").exists()


def test_fifo_input_is_named_as_not_a_regular_file(pair, tmp_path):
    t2, _ = pair
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    assert_refused(cli("fuse", t2, fifo, "-o", tmp_path / "f.nii.gz"), 2,
                   str(fifo), "is not a regular file")


def test_device_file_input_is_named_as_not_a_regular_file(pair, tmp_path):
    t2, _ = pair
    assert_refused(cli("fuse", t2, "/dev/zero", "-o", tmp_path / "f.nii.gz"), 2,
                   "/dev/zero is not a regular file")


def test_one_voxel_volume_is_refused_as_too_small(tmp_path):
    one = write_volume(tmp_path / "one.nii.gz", np.ones((1, 1, 1), np.float32))
    other = write_volume(tmp_path / "other.nii.gz", np.ones((1, 1, 1), np.float32))
    assert_refused(cli("fuse", one, other, "-o", tmp_path / "f.nii.gz"), 2,
                   "is 1x1 pixels: too small to fuse")


def test_label_map_as_b_fuses_with_a_warning_naming_it(pair, tmp_path):
    t2, flair = pair
    image = sitk.ReadImage(str(flair))
    labels = (sitk.GetArrayFromImage(image) > np.percentile(sitk.GetArrayFromImage(image), 90))
    seg = write_volume(tmp_path / "seg.nii.gz", labels.astype(np.uint8) * 2, like=image)
    run = cli("fuse", t2, seg, "-o", tmp_path / "f.nii.gz")
    assert run.code == 0
    assert any(f"{seg} looks like a label map" in w for w in run.warnings), run.warnings


def test_image_fused_with_itself_is_refused(pair, tmp_path):
    t2, _ = pair
    link = tmp_path / "link.nii.gz"
    link.symlink_to(t2)
    for b in (t2, link):
        assert_refused(cli("fuse", t2, b, "-o", tmp_path / "f.nii.gz"), 2,
                       "A and B are the same file")
    assert not (tmp_path / "f.nii.gz").exists()


def test_noise_volume_is_out_of_scope_not_uncertain(pair, tmp_path):
    t2, _ = pair
    like = sitk.ReadImage(str(t2))
    noise = np.random.default_rng(0).random(sitk.GetArrayFromImage(like).shape)
    path = write_volume(tmp_path / "noise.nii.gz", noise.astype(np.float32), like=like)
    run = cli("classify", path)
    assert run.code == 0
    assert "not classified, it looks like noise" in run.out, run.out


def test_real_volumes_are_far_from_noise():
    """The noise rule's margin on real data: every brain3d and healthy volume at its own
    resolution (docs/classifier.md)."""
    from bad_inputs import DATA

    from ClinicalFMambaLib.clinical.volumes import MIN_NEIGHBOUR_CORRELATION, neighbour_correlation

    paths = sorted((DATA / "brain3d").glob("*/[ft]*[12ecr].nii.gz"))
    paths += [p for p in sorted((DATA / "healthy").glob("*.nii.gz")) if "mask" not in p.name]
    assert len(paths) >= 12
    lowest = min(neighbour_correlation(sitk.GetArrayFromImage(sitk.ReadImage(str(p))))
                 for p in paths)
    assert lowest > 2 * MIN_NEIGHBOUR_CORRELATION
