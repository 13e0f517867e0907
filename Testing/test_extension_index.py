"""What the ExtensionsIndex's reviewers check on a new extension (Tier 1 of the index's
.github/PULL_REQUEST_TEMPLATE.md) and Slicer's form for the description fields
(Docs/developer_guide/extensions.md, "Supported metadata fields"), on the files they read."""

from __future__ import annotations

import json
import re

from test_cmake_lists import ROOT, index_value

PUBLICATION = "https://arxiv.org/abs/2508.03008"


def entry() -> dict:
    return json.loads((ROOT / "ClinicalFMamba.json").read_text(encoding="utf-8"))


def test_description_is_one_or_two_plain_sentences():
    """Checklist: 1-2 sentences a non-expert understands; Slicer: one line. It also says the
    extension is not for diagnosis."""
    description = index_value("EXTENSION_DESCRIPTION") or ""
    sentences = re.split(r"(?<=[.!?])\s+", description)
    assert 1 <= len(sentences) <= 2 and description.endswith("."), sentences
    assert not re.search(r"[\n<>`*\[\]]|https?://", description), "markup, a link or a line break"
    assert "research use" in description and "not for diagnosis" in description


def test_contributors_are_named_with_affiliations():
    """Slicer's form: ``Name (Org), Name ([SubOrg, ]Org)``."""
    person = r"[^,()]+ \([^()]+\)"
    contributors = index_value("EXTENSION_CONTRIBUTORS") or ""
    assert re.fullmatch(rf"{person}(, {person})*", contributors), contributors


def test_homepage_has_what_the_checklist_asks():
    """The homepage (a page of this repository) names the extension and its license, shows an
    image and links the publication."""
    repository = entry()["scm_url"].removesuffix(".git")
    prefix = f"{repository}/blob/{entry()['scm_revision']}/"
    url = index_value("EXTENSION_HOMEPAGE") or ""
    assert url.startswith(prefix), url
    page = ROOT / url.removeprefix(prefix)
    text = page.read_text(encoding="utf-8")
    assert "ClinicalFMamba" in text and "Apache" in text, f"{page.name}: name or license missing"
    assert PUBLICATION in text, f"{page.name} does not link the publication"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert images and all((page.parent / image).is_file() for image in images), images


def test_description_file_matches_cmake_lists():
    """Checklist: the submitted .json agrees with the top-level CMakeLists.txt. The index's
    checker compares project() with the file's name."""
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"project\s*\(\s*([^\s)]+)", text, re.IGNORECASE).group(1) == "ClinicalFMamba"
    assert entry()["category"] == index_value("EXTENSION_CATEGORY")
    assert entry()["build_dependencies"] == (index_value("EXTENSION_DEPENDS") or "").split()
