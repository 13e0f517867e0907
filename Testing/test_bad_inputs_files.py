"""Bad input files: cut short, corrupt, of the wrong kind, volumes that do not overlap or hold
nothing, DICOM folders with several series. Each is refused with one line naming the
problem (exit 2) and leaves every file as it was, or fuses with a clear warning where the
result is still right."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk
from bad_inputs import (  # noqa: F401 (crops: the fixture that pair uses)
    CT_PAIR, SAMPLE, SPECT_PAIR, assert_refused, cli, cli_process, copy, crops, needs_data, pair,
    snapshot, write_dicom_series, write_volume)
from PIL import Image

from ClinicalFMambaLib.core.errors import InputError
from ClinicalFMambaLib.io.files import check_complete_file
from ClinicalFMambaLib.io.volumes import check_readable_volume, dicom_series, read_volume

pytestmark = needs_data


def cut(path, keep: float):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def cut_copy(source, target, keep: float):
    """``source`` written in ``target``'s format, then cut to ``keep`` of its bytes."""
    sitk.WriteImage(sitk.ReadImage(str(source)), str(target))
    return cut(target, keep)


# ------------------------------------------------------------------ item 2: truncated, corrupt

def test_truncated_nii_gz_volume_is_refused(pair, tmp_path):
    """Half the gzip stream: SimpleITK alone reads it, with the missing voxels as zeros."""
    t2, flair = pair
    cut(flair, 0.5)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, flair, "-o", tmp_path / "fused.nii.gz"), 2,
                   str(flair), "is truncated", "gzip stream ends early")
    assert snapshot(tmp_path) == before


def test_truncated_uncompressed_nii_volume_is_refused(pair, tmp_path):
    t2, _ = pair
    flat = cut_copy(t2, tmp_path / "t2.nii", 0.9)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", flat, t2, "-o", tmp_path / "fused.nii.gz"), 2,
                   "is truncated", "NIfTI header describes")
    assert snapshot(tmp_path) == before


def test_nii_gz_with_flipped_bytes_is_refused(pair, tmp_path):
    t2, flair = pair
    data = bytearray(flair.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 64):
        data[offset] ^= 0xFF
    flair.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, flair, "-o", tmp_path / "fused.nii.gz"), 2,
                   str(flair), "corrupt")
    assert snapshot(tmp_path) == before


def test_truncated_single_slice_nifti_is_refused_in_2d(tmp_path):
    with Image.open(CT_PAIR[0]) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.int16)
    a = write_volume(tmp_path / "mri.nii.gz", pixels[None])
    b = copy(CT_PAIR[1], tmp_path / "ct.png")
    cut(a, 0.6)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", a, b, "-o", tmp_path / "fused.png"), 2, str(a), "truncated")
    assert snapshot(tmp_path) == before


def test_truncated_png_is_refused(tmp_path):
    a, b = copy(CT_PAIR[0], tmp_path / "mri.png"), copy(CT_PAIR[1], tmp_path / "ct.png")
    cut(b, 0.5)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", a, b, "-o", tmp_path / "fused.png"), 2, str(b),
                   "not a readable image")
    assert snapshot(tmp_path) == before


def test_truncated_nrrd_volume_is_refused_in_one_line(pair, tmp_path):
    t2, flair = pair
    nrrd = cut_copy(flair, tmp_path / "flair.nrrd", 0.7)
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, nrrd, "-o", tmp_path / "fused.nii.gz"), 2, str(nrrd),
                   "not a readable volume")
    assert snapshot(tmp_path) == before


def test_empty_file_is_refused(tmp_path):
    a = copy(CT_PAIR[0], tmp_path / "mri.png")
    (tmp_path / "ct.png").write_bytes(b"")
    assert_refused(cli("fuse", a, tmp_path / "ct.png", "-o", tmp_path / "f.png"), 2,
                   "ct.png", "not a readable image")


def test_a_png_named_nii_gz_is_read_by_its_content(tmp_path):
    """SimpleITK recognises the PNG inside: the same result as with the right name."""
    a = copy(CT_PAIR[0], tmp_path / "mri.png")
    fake = copy(CT_PAIR[1], tmp_path / "ct.nii.gz")
    assert cli("fuse", a, fake, "-o", tmp_path / "f1.png", "--device", "cpu").code == 0
    assert cli("fuse", a, CT_PAIR[1], "-o", tmp_path / "f2.png", "--device", "cpu").code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "f1.png")),
                                  np.asarray(Image.open(tmp_path / "f2.png")))


def test_text_file_named_nii_gz_is_refused(tmp_path):
    a = copy(CT_PAIR[0], tmp_path / "mri.png")
    (tmp_path / "ct.nii.gz").write_text("not an image\n")
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", a, tmp_path / "ct.nii.gz", "-o", tmp_path / "f.png"), 2,
                   "ct.nii.gz", "not a readable")
    assert snapshot(tmp_path) == before


def test_library_check_names_truncation_and_passes_complete_files(pair, tmp_path):
    """``check_readable_volume`` is what other front ends (the Slicer module) call."""
    t2, flair = pair
    check_readable_volume(t2)
    check_complete_file(SAMPLE / "volume" / "TCGA-DU-7294_t2.nii.gz")
    with gzip.open(t2, "rb") as stream:
        raw = stream.read()
    (tmp_path / "short.nii").write_bytes(raw[:-1000])
    with pytest.raises(InputError, match="is truncated"):
        check_readable_volume(tmp_path / "short.nii")
    with pytest.raises(InputError, match="is truncated"):
        read_volume(cut(flair, 0.8))


# ------------------------------------------------------------------ item 11: misleading messages

def test_png_against_a_volume_says_which_is_which(pair, tmp_path):
    t2, _ = pair
    png = copy(CT_PAIR[1], tmp_path / "ct.png")
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, png, "-o", tmp_path / "f.nii.gz"), 2,
                   f"{t2} is a volume but {png} is a 2D image")
    assert snapshot(tmp_path) == before


def test_two_4d_inputs_are_named_4d(pair, tmp_path):
    t2, flair = pair
    image = sitk.ReadImage(str(t2))
    four = [tmp_path / "a4d.nii.gz", tmp_path / "b4d.nii.gz"]
    for path in four:
        sitk.WriteImage(sitk.JoinSeries([image, image]), str(path))
    before = snapshot(tmp_path)
    line = assert_refused(cli("fuse", *four, "-o", tmp_path / "f.nii.gz"), 2, "is a 4D image",
                          "64x64x24x2")
    assert str(four[0]) in line
    assert snapshot(tmp_path) == before
    with pytest.raises(InputError, match="4D"):
        check_readable_volume(four[1])


def test_grey_images_saved_as_rgb_fuse_as_grey(tmp_path):
    paths = []
    for source, name in zip(CT_PAIR, ("mri.png", "ct.png")):
        with Image.open(source) as image:
            image.convert("L").resize((96, 96)).convert("RGB").save(tmp_path / name)
        paths.append(tmp_path / name)
    run = cli("fuse", *paths, "-o", tmp_path / "f.png", "--device", "cpu")
    assert run.code == 0 and run.messages == [], run.err
    with Image.open(tmp_path / "f.png") as fused:
        assert fused.mode == "L" and np.asarray(fused).std() > 5


# ------------------------------------------------------------------ item 6: overlap, empty inputs

def test_volume_b_without_physical_overlap_is_refused(pair, tmp_path):
    t2, flair = pair
    image = sitk.ReadImage(str(flair))
    far = write_volume(tmp_path / "far.nii.gz", sitk.GetArrayFromImage(image), image,
                       origin=tuple(o + 500.0 for o in image.GetOrigin()))
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", t2, far, "-o", tmp_path / "f.nii.gz"), 2,
                   "does not overlap", "co-registered")
    assert snapshot(tmp_path) == before


def test_volume_b_covering_half_of_a_fuses_and_says_how_much(pair, tmp_path):
    t2, flair = pair
    image = sitk.ReadImage(str(flair))
    origin = list(image.GetOrigin())
    origin[0] += 32 * image.GetSpacing()[0] * image.GetDirection()[0]  # half of 64 columns
    shifted = write_volume(tmp_path / "shifted.nii.gz", sitk.GetArrayFromImage(image), image,
                           origin=tuple(origin))
    run = cli_process("fuse", t2, shifted, "-o", tmp_path / "f.nii.gz", "--device", "cpu")
    assert run.code == 0, run.err
    assert run.messages == [] and "Traceback" not in run.err
    (line,) = [line for line in run.err.splitlines() if "covers" in line]
    assert line == (f"clinicalfmamba: warning: {shifted} covers 50% of {t2}; the rest is "
                    "fused with B = 0")
    assert "1/1 [" in run.err and "patch/s]" in run.err  # progress counts the 3D patches
    assert sitk.ReadImage(str(tmp_path / "f.nii.gz")).GetSize() == (64, 64, 24)


@pytest.mark.parametrize("value, word", [(0, "is empty"), (300, "is constant")])
def test_flat_volume_b_fuses_with_a_clear_warning(pair, tmp_path, value, word):
    t2, _ = pair
    image = sitk.ReadImage(str(t2))
    flat = write_volume(tmp_path / "flat.nii.gz",
                        np.full(sitk.GetArrayFromImage(image).shape, value, np.int16), image)
    run = cli("fuse", t2, flat, "-o", tmp_path / "f.nii.gz", "--device", "cpu")
    assert run.code == 0 and run.messages == [], run.err
    assert len(run.warnings) == 1 and word in run.warnings[0] and str(flat) in run.warnings[0]
    fused = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "f.nii.gz")))
    assert np.isfinite(fused).all() and fused.std() > 0.01


# ------------------------------------------------------------------ item 7 and 12: DICOM folders

@pytest.fixture
def two_series(pair, tmp_path):
    """A DICOM folder holding two series (T2 and FLAIR slices of the real crop)."""
    folder = tmp_path / "dicom"
    for number, path in enumerate(pair, start=1):
        write_dicom_series(sitk.ReadImage(str(path)), folder,
                           f"1.2.826.0.1.3680043.8.498.{number}",
                           path.name.split(".")[0].upper(), f"s{number}")
    return folder


def test_dicom_folder_with_two_series_is_refused_listing_them(pair, two_series, tmp_path):
    before = snapshot(tmp_path)
    line = assert_refused(cli("fuse", two_series, pair[1], "-o", tmp_path / "f.nii.gz"), 2,
                          "holds 2 DICOM series", "#UID")
    for number, name in ((1, "T2"), (2, "FLAIR")):
        assert f"1.2.826.0.1.3680043.8.498.{number} ({name}, 24 slices)" in line
    assert snapshot(tmp_path) == before


def test_dicom_series_picked_by_uid_fuses(pair, two_series, tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.1"
    assert [s.uid for s in dicom_series(two_series)] == [uid, "1.2.826.0.1.3680043.8.498.2"]
    picked = read_volume(f"{two_series}#{uid}")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(picked),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(pair[0]))))
    run = cli("fuse", f"{two_series}#{uid}", pair[1], "-o", tmp_path / "f.nii.gz",
              "--device", "cpu")
    assert run.code == 0 and run.messages == [], run.err
    assert sitk.ReadImage(str(tmp_path / "f.nii.gz")).GetSize() == (64, 64, 24)


def test_unknown_dicom_series_uid_is_refused(pair, two_series, tmp_path):
    assert_refused(cli("fuse", f"{two_series}#9.9.9", pair[1], "-o", tmp_path / "f.nii.gz"), 2,
                   "has no DICOM series 9.9.9", "(T2, 24 slices)")
    assert not (tmp_path / "f.nii.gz").exists()


def test_folder_without_dicom_next_to_a_volume_is_named(pair, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_refused(cli("fuse", pair[0], tmp_path / "empty", "-o", tmp_path / "f.nii.gz"), 2,
                   "is a volume but", "empty")


def test_folder_run_prints_no_gdcm_warning(tmp_path):
    """Two folders of pictures, as a real process: GDCM's "No Series can be found" warnings
    (printed by ITK's C++ code) must not appear."""
    for folder, source in (("a", CT_PAIR[0]), ("b", CT_PAIR[1])):
        with Image.open(source) as image:
            (tmp_path / folder).mkdir()
            image.resize((64, 64)).save(tmp_path / folder / "x.png")
    run = cli_process("fuse", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out",
                      "--device", "cpu")
    assert run.code == 0, run.err
    assert "GDCM" not in run.err and "No Series" not in run.err and run.messages == []
    assert (tmp_path / "out" / "x.png").is_file()


# ------------------------------------------------------------------ 2D files and folders

def test_missing_input_is_named(tmp_path):
    assert_refused(cli("fuse", CT_PAIR[0], tmp_path / "absent.png", "-o", tmp_path / "f.png"),
                   2, "input not found", "absent.png")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_input_format_is_named(tmp_path):
    notes = tmp_path / "ct.txt"
    notes.write_text("not an image")
    assert_refused(cli("fuse", CT_PAIR[0], notes, "-o", tmp_path / "f.png"), 2, str(notes),
                   "unsupported format .txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.txt"]


def test_two_colour_images_are_refused(tmp_path):
    spect = SPECT_PAIR[1]
    other = copy(spect, tmp_path / "inputs" / "spect.png")  # A = B is refused before this
    assert_refused(cli("fuse", spect, other, "-o", tmp_path / "f.png", "--device", "cpu"), 2,
                   "both inputs are colour", "grey anatomical")
    assert list(tmp_path.iterdir()) == [tmp_path / "inputs"]


def test_a_file_and_a_folder_are_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    copy(CT_PAIR[1], tmp_path / "folder" / "x.png")
    assert_refused(cli("fuse", CT_PAIR[0], tmp_path / "folder", "-o", tmp_path / "out"), 2,
                   "give two files or two folders")
    assert not (tmp_path / "out").exists()


def test_2d_medical_images_without_physical_overlap_are_refused(tmp_path):
    """One slice each, written as NIfTI with their real pixels; B placed 300 mm away."""
    paths = []
    for source, name, shift in ((CT_PAIR[0], "mri.nii.gz", 0.0), (CT_PAIR[1], "ct.nii.gz", 300.0)):
        with Image.open(source) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.int16)
        paths.append(write_volume(tmp_path / name, pixels[None], origin=(shift, 0.0, 0.0)))
    before = snapshot(tmp_path)
    assert_refused(cli("fuse", *paths, "-o", tmp_path / "f.nii.gz"), 2,
                   "does not overlap the first in physical space", "(300.0, 0.0, 0.0)")
    assert snapshot(tmp_path) == before
