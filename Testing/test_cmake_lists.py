"""Packaging of the Slicer extension: Slicer installs only the files the CMake lists name, so
every file the module needs at run time must be listed, and every listed file must exist."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "ClinicalFMamba"
MODULE_CMAKE = MODULE / "CMakeLists.txt"


def cmake_lists(path: Path) -> dict[str, list[str]]:
    """Variables set by ``set(NAME item ...)`` in a CMake file, ``${MODULE_NAME}`` expanded."""
    text = re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))
    variables = {name: body.split() for name, body in re.findall(r"\bset\((\w+)\s+([^)]*)\)", text)}
    module_name = variables.get("MODULE_NAME", [""])[0]
    return {name: [item.replace("${MODULE_NAME}", module_name) for item in items]
            for name, items in variables.items()}


def tracked_files() -> set[str] | None:
    """Files under version control (what a build of the repository sees), or None outside
    a git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(filter(None, listed.decode().split("\0")))


TRACKED = tracked_files()


def files_under(folder: Path, pattern: str = "*") -> set[str]:
    """Paths relative to the repository root, caches and untracked files left out."""
    found = {p.relative_to(ROOT).as_posix() for p in folder.rglob(pattern)
             if p.is_file() and "__pycache__" not in p.parts}
    return found if TRACKED is None else found & TRACKED


@pytest.fixture(scope="module")
def lists() -> dict[str, list[str]]:
    return cmake_lists(MODULE_CMAKE)


def test_module_scripts_and_resources_are_listed(lists):
    listed = {f"ClinicalFMamba/{item}" for item in
              lists["MODULE_PYTHON_SCRIPTS"] + lists["MODULE_PYTHON_RESOURCES"]}
    on_disk = files_under(MODULE) - {"ClinicalFMamba/CMakeLists.txt"}
    assert sorted(on_disk - listed) == [], "files of the module folder missing from its CMake lists"
    assert sorted(listed - on_disk) == [], "CMake lists name files that do not exist"


def test_every_library_file_is_listed(lists):
    listed = set(lists["LIBRARY_PYTHON_SCRIPTS"])
    on_disk = files_under(ROOT / "ClinicalFMambaLib", "*.py")
    assert sorted(on_disk - listed) == [], \
        "library files missing from LIBRARY_PYTHON_SCRIPTS in ClinicalFMamba/CMakeLists.txt"
    assert sorted(listed - on_disk) == [], "LIBRARY_PYTHON_SCRIPTS names files that do not exist"


def test_bundled_weights_and_sample_are_listed(lists):
    listed = set(lists["LIBRARY_RESOURCES"])
    needed = (files_under(ROOT / "Resources" / "weights", "*.safetensors")
              | {"Resources/weights/MANIFEST.json"}
              | files_under(ROOT / "Resources" / "sample" / "volume", "*.nii.gz"))
    assert sorted(needed - listed) == [], \
        "run-time files missing from LIBRARY_RESOURCES in ClinicalFMamba/CMakeLists.txt"
    assert all((ROOT / item).is_file() for item in listed), "LIBRARY_RESOURCES names missing files"


def test_files_the_module_loads_are_listed(lists):
    source = (MODULE / "ClinicalFMamba.py").read_text(encoding="utf-8")
    resources = set(lists["LIBRARY_RESOURCES"])
    for name in re.search(r"SAMPLE_FILES = \(([^)]*)\)", source).group(1).split(","):
        assert f"Resources/sample/volume/{name.strip().strip(chr(34))}" in resources
    for loaded in re.findall(r'resourcePath\("([^"]+)"\)', source):
        assert f"Resources/{loaded}" in lists["MODULE_PYTHON_RESOURCES"]


def index_value(name: str) -> str | None:
    """The quoted value of ``set(NAME "...")`` in the top-level CMakeLists.txt, read as the
    ExtensionsIndex's checker reads it (scripts/check_description_files.py,
    check_cmakelists_content): the first match of a regular expression, CMake variables left
    as written."""
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    found = re.search(rf'set\s*\({name}\s*"([^"]+)"\s*\)', text, re.IGNORECASE)
    return found.group(1).strip() if found else None


def test_extension_metadata():
    top = cmake_lists(ROOT / "CMakeLists.txt")
    assert top["EXTENSION_DEPENDS"] == ['"PyTorch"']
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "project(ClinicalFMamba)" in text and "add_subdirectory(ClinicalFMamba)" in text
    entry = json.loads((ROOT / "ClinicalFMamba.json").read_text(encoding="utf-8"))
    assert entry["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/")
    assert entry["build_dependencies"] == ["PyTorch"] and entry["scm_url"]
    assert entry["category"] in text
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")


def test_extension_urls_name_one_slicer_repository():
    """ExtensionsIndex (scripts/check_description_files.py): the extension (the .json file's
    name) does not start with "Slicer", its git repository does; the icon and every screenshot
    are downloaded from literal https URLs (a CMake variable there fails the check). Every URL
    points into that repository, and docs/slicer.md lists each one to be filled in at
    publication."""
    entry = json.loads((ROOT / "ClinicalFMamba.json").read_text(encoding="utf-8"))
    repository = entry["scm_url"].removesuffix(".git")
    owner, name = repository.split("/")[-2:]
    assert name == "SlicerClinicalFMamba" and not "ClinicalFMamba".lower().startswith("slicer")
    assert (index_value("EXTENSION_HOMEPAGE") or "").startswith(repository + "/")
    raw = f"https://raw.githubusercontent.com/{owner}/{name}/{entry['scm_revision']}/"
    icon = index_value("EXTENSION_ICONURL")
    screenshots = (index_value("EXTENSION_SCREENSHOTURLS") or "").split()
    assert icon and screenshots, "EXTENSION_ICONURL or EXTENSION_SCREENSHOTURLS is not set"
    for url in [icon, *screenshots]:
        assert url.startswith(raw), f"not a literal URL under {raw}: {url}"
        assert (ROOT / url.removeprefix(raw)).is_file(), f"{url} names a missing file"
    docs = (ROOT / "docs" / "slicer.md").read_text(encoding="utf-8")
    for key in ("scm_url", "EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert key in docs, f"docs/slicer.md does not say how to fill in {key}"


def test_description_file_is_formatted_as_the_index_lints_it():
    """The index's lint runs prettier with multilineArraysWrapThreshold 0 (.prettierrc.js):
    two-space indent and every array item on its own line, as json.dumps(indent=2) writes."""
    text = (ROOT / "ClinicalFMamba.json").read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2) + "\n"


def test_icon_and_screenshot_exist():
    from PIL import Image

    with Image.open(MODULE / "Resources" / "Icons" / "ClinicalFMamba.png") as icon:
        assert icon.size == (128, 128)
    with Image.open(ROOT / "Resources" / "Screenshots" / "ClinicalFMamba.png") as shot:
        assert min(shot.size) >= 256
