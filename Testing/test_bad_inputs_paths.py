"""Bad output paths: an output that is an input (also through links), an output that cannot
be written, folder outputs. Each is refused before any work, with one line, exit 3, and
leaves every file as it was."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import (  # noqa: F401 (crops: the fixture that pair uses)
    CT_PAIR, SAMPLE, assert_refused, cli, cli_process, copy, crops, needs_data, pair, snapshot)
from PIL import Image

pytestmark = needs_data


# ------------------------------------------------------------------ item 1: the output is an input

def test_volume_output_that_is_input_a_is_refused_and_a_is_kept(pair, tmp_path):
    """The data-loss case, as a real process: `fuse A B -o A` used to replace A."""
    t2, flair = pair
    before = snapshot(tmp_path)
    run = cli_process("fuse", t2, flair, "-o", t2)
    assert_refused(run, 3, "would overwrite the input", str(t2))
    assert snapshot(tmp_path) == before


def test_volume_output_that_is_input_b_is_refused(pair, tmp_path):
    t2, flair = pair
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, flair, "-o", flair), 3, "would overwrite the input",
                   str(flair))
    assert snapshot(tmp_path) == before


def test_volume_output_through_another_spelling_of_the_path_is_refused(pair, tmp_path):
    t2, flair = pair
    (tmp_path / "sub").mkdir()
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, flair, "-o", tmp_path / "sub" / ".." / t2.name), 3,
                   "would overwrite the input")
    assert snapshot(tmp_path) == before


def test_volume_output_that_is_a_symlink_to_an_input_is_refused(pair, tmp_path):
    t2, flair = pair
    link = tmp_path / "link.nii.gz"
    link.symlink_to(t2)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, flair, "-o", link), 3, "would overwrite the input", str(t2))
    assert snapshot(tmp_path) == before and link.is_symlink()


def test_volume_output_that_is_a_hard_link_of_an_input_is_refused(pair, tmp_path):
    t2, flair = pair
    hard = tmp_path / "other_name.nii.gz"
    os.link(flair, hard)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, flair, "-o", hard), 3, "would overwrite the input",
                   str(flair))
    assert snapshot(tmp_path) == before


def test_2d_output_that_is_a_symlink_to_an_input_is_refused(tmp_path):
    a, b = (copy(p, tmp_path / p.name) for p in
            (SAMPLE / "mri_ct_MRI.png", SAMPLE / "mri_ct_CT.png"))
    (tmp_path / "fused.png").symlink_to(b)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", a, b, "-o", tmp_path / "fused.png"), 3,
                   "would overwrite the input")
    assert snapshot(tmp_path) == before


def test_folder_output_that_is_input_folder_a_is_refused(tmp_path):
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    for name in ("x.png", "y.png"):
        copy(SAMPLE / "mri_ct_MRI.png", folder_a / name)
        copy(SAMPLE / "mri_ct_CT.png", folder_b / name)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", folder_a, folder_b, "-o", folder_a), 3,
                   "would overwrite the input", "x.png")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ item 5: unwritable outputs

def test_output_under_a_file_is_refused_before_the_work(pair, tmp_path):
    t2, flair = pair
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    before = snapshot(tmp_path)
    run = cli("fuse", t2, flair, "-o", tmp_path / "notes.txt" / "fused.nii.gz")
    assert_refused(run, 3, "notes.txt is a file, not a folder")
    assert "%|" not in run.err  # refused before the fusion started: no progress bar
    assert snapshot(tmp_path) == before


def test_output_in_a_read_only_folder_is_refused_before_the_work():
    """A real read-only folder: as root, the command runs as user nobody (root may write
    anywhere)."""
    root = Path(tempfile.mkdtemp(prefix="clinicalfmamba-ro-"))
    try:
        os.chmod(root, 0o755)
        a, b = (copy(p, root / p.name) for p in (SAMPLE / "mri_ct_MRI.png",
                                                   SAMPLE / "mri_ct_CT.png"))
        (root / "ro").mkdir()
        os.chmod(root / "ro", 0o555)
        runner = ()
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: no read-only folder possible")
            runner = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        before = snapshot(root)
        run = cli_process("fuse", a, b, "-o", root / "ro" / "fused.png", runner=runner)
        assert_refused(run, 3, "is not writable", str(root / "ro"))
        assert snapshot(root) == before
    finally:
        os.chmod(root / "ro", 0o755)
        shutil.rmtree(root)


def test_an_existing_folder_as_output_of_two_files_receives_a_named_file(tmp_path):
    """Documented: OUT may be a folder; the result takes A's name inside it."""
    a, b = SAMPLE / "mri_ct_MRI.png", SAMPLE / "mri_ct_CT.png"
    (tmp_path / "results").mkdir()
    run = cli("fuse", a, b, "-o", tmp_path / "results", "--device", "cpu")
    assert run.code == 0 and run.messages == []
    assert [p.name for p in (tmp_path / "results").iterdir()] == [a.name]


def test_unwritable_classify_report_is_refused_before_the_work(tmp_path):
    (tmp_path / "notes.txt").write_text("a file")
    before = snapshot(tmp_path)
    run = cli("fuse", *CT_PAIR, "-o", tmp_path / "f.png", "--classify", "--report",
              tmp_path / "notes.txt" / "report.json")
    assert_refused(run, 3, "notes.txt is a file, not a folder")
    assert snapshot(tmp_path) == before


def test_demo_into_a_file_is_refused_before_the_work(tmp_path):
    (tmp_path / "demo").write_text("a file where the output folder should be")
    before = snapshot(tmp_path)
    run = cli("demo", "-o", tmp_path / "demo", "--device", "cpu")
    assert_refused(run, 3, "is a file; give a folder")
    assert snapshot(tmp_path) == before


def test_volume_to_a_picture_format_names_the_format(pair, tmp_path):
    t2, flair = pair
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, flair, "-o", tmp_path / "fused.png"), 3,
                   "a fused volume cannot be written as .png", ".nii.gz")
    assert snapshot(tmp_path) == before


def test_unknown_output_format_is_refused(tmp_path):
    a, b = SAMPLE / "mri_ct_MRI.png", SAMPLE / "mri_ct_CT.png"
    assert_refused(cli("fuse", a, b, "-o", tmp_path / "fused.xyz"), 3, "cannot write",
                   ".png")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ item 8: folder outputs

def test_folder_inputs_with_a_file_like_output_name_are_refused(tmp_path):
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    copy(SAMPLE / "mri_ct_MRI.png", folder_a / "x.png")
    copy(SAMPLE / "mri_ct_CT.png", folder_b / "x.png")
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", folder_a, folder_b, "-o", tmp_path / "out.png"), 3,
                   "out.png is a file name; give a folder")
    assert snapshot(tmp_path) == before and not (tmp_path / "out.png").exists()


def test_folder_inputs_with_an_existing_file_as_output_are_refused(tmp_path):
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    copy(SAMPLE / "mri_ct_MRI.png", folder_a / "x.png")
    copy(SAMPLE / "mri_ct_CT.png", folder_b / "x.png")
    (tmp_path / "results").write_text("a file")
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", folder_a, folder_b, "-o", tmp_path / "results"), 3,
                   "is a file; give a folder")
    assert snapshot(tmp_path) == before


def test_folder_with_a_corrupt_file_fuses_the_others_and_reports_each(tmp_path):
    """Skip and report: the good pairs are written, the bad one is named with its reason,
    the summary counts written / skipped / failed, and the exit code (5) says not all went."""
    folder_a, folder_b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for folder, source in ((folder_a, CT_PAIR[0]), (folder_b, CT_PAIR[1])):
        folder.mkdir()
        with Image.open(source) as image:
            small = image.resize((96, 96))
        for name in ("1.png", "2.png", "3.png"):
            small.save(folder / name)
    (folder_a / "only_a.png").write_bytes((folder_a / "1.png").read_bytes())
    good = (folder_b / "2.png").read_bytes()
    (folder_b / "2.png").write_bytes(good[:len(good) // 3])  # a truncated download
    before = snapshot(tmp_path)
    run = cli("fuse", folder_a, folder_b, "-o", out, "--device", "cpu")
    assert run.code == 5 and "Traceback" not in run.err
    assert sorted(p.name for p in out.iterdir()) == ["1.png", "3.png"]
    assert "wrote 2 fused images" in run.out and "skipped 1 unmatched; failed 1" in run.out
    assert any(line.startswith("failed 2.png:") and str(folder_b / "2.png") in line
               for line in run.messages)
    assert "1 of 3 pairs failed" in run.messages[-1]
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("out")} == before
    assert np.asarray(Image.open(out / "1.png")).std() > 5
