"""Run the Slicer ExtensionsIndex's checks on this extension without the network.

    tools/check_extension_index.sh PATH/TO/ExtensionsIndex   (sets up the Python this needs)

The index's CI runs its scripts/check_description_files.py on the submitted description
file: it clones scm_url, measures the clone, reads the top-level CMakeLists.txt and downloads
the JSON schema, the icon, the screenshots and the repository's GitHub topics. Here the clone
comes from a snapshot of this working tree (tracked and new files, not ignored ones) committed
on top of this repository's history, so the size check counts the history as a clone from
GitHub does; our raw.githubusercontent.com files are read from that snapshot and the schema
from the index's schemas/ folder. The topic 3d-slicer-extension can only be set on GitHub
(at publication) and is taken as set. Any other request fails.

The index's lint (prettier with multi-line arrays) is checked as well: the description file
must read as json.dumps(indent=2) writes it.
"""

from __future__ import annotations

import importlib.util
import json
import mimetypes
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTION = ROOT / "ClinicalFMamba.json"
SCHEMAS_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
TOPIC = "3d-slicer-extension"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def snapshot(dest: Path, branch: str) -> None:
    """This repository's history plus one commit of the working tree on `branch`: what the
    index clones once the working tree is committed and pushed."""
    git("clone", "--quiet", "--shared", "--no-checkout", str(ROOT), str(dest), cwd=ROOT)
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():  # a tracked file deleted from the working tree stays out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    # --no-checkout left no index: the commit holds exactly the files copied.
    git("add", "--all", cwd=dest)
    git("-c", "user.name=snapshot", "-c", "user.email=snapshot@localhost", "commit",
        "--quiet", "--allow-empty", "-m", "working tree", cwd=dest)
    git("update-ref", f"refs/heads/{branch}", "HEAD", cwd=dest)
    git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=dest)


def local_get(index: Path, clone: Path, raw_url: str,
              topics_url: str) -> Callable[..., requests.Response]:
    """A stand-in for requests.get answering the checker's downloads from local files."""

    def get(url: str, **_options: object) -> requests.Response:
        if url.startswith(raw_url):
            path = clone / url[len(raw_url):]
            content = path.read_bytes() if path.is_file() else None
        elif url.startswith(SCHEMAS_URL):
            path = index / "schemas" / url[len(SCHEMAS_URL):]
            content = path.read_bytes() if path.is_file() else None
        elif url == topics_url:
            content = json.dumps({"names": [TOPIC]}).encode()
        else:
            raise requests.ConnectionError(f"offline check: no local answer for {url}")
        response = requests.Response()
        response.url = url
        found = content is not None
        response.status_code, response.reason = (200, "OK") if found else (404, "Not Found")
        response._content = content or b""  # what requests fills in from the body
        kind = mimetypes.guess_type(url)[0]
        response.headers["Content-Type"] = kind or "application/octet-stream"
        return response

    return get


def run_checker(index: Path) -> int:
    entry = json.loads(DESCRIPTION.read_text(encoding="utf-8"))
    scm_url, branch = entry["scm_url"], entry["scm_revision"]
    owner, repository = scm_url.removesuffix(".git").split("/")[-2:]
    print(f"Offline: {scm_url} is a snapshot of {ROOT}; topic '{TOPIC}' taken as set.\n")
    with tempfile.TemporaryDirectory(prefix="extension-index-check-") as folder:
        clone, descriptions = Path(folder) / "repository", Path(folder) / "index"
        snapshot(clone, branch)
        # The checker reads every description file of its working folder (dependency check).
        descriptions.mkdir()
        for path in [*index.glob("*.json"), DESCRIPTION]:
            shutil.copy(path, descriptions)
        # Its `git clone scm_url` reads the snapshot instead (git's url.<base>.insteadOf).
        os.environ.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_VALUE_0=scm_url,
                          GIT_CONFIG_KEY_0=f"url.{clone.as_uri()}.insteadOf")
        requests.get = local_get(
            index, clone, f"https://raw.githubusercontent.com/{owner}/{repository}/{branch}/",
            f"https://api.github.com/repos/{owner}/{repository}/topics")
        path = index / "scripts" / "check_description_files.py"
        spec = importlib.util.spec_from_file_location("check_description_files", path)
        checker = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(checker)
        os.chdir(descriptions)
        sys.argv = [str(path), DESCRIPTION.name]
        try:
            return checker.main()
        finally:
            os.chdir(ROOT)


def check_format() -> int:
    """The index's prettier settings (multilineArraysWrapThreshold 0) put every array item on
    its own line, as json.dumps(indent=2) does."""
    text = DESCRIPTION.read_text(encoding="utf-8")
    expected = json.dumps(json.loads(text), indent=2) + "\n"
    print("## Lint: JSON formatting (prettier, multi-line arrays)")
    if text == expected:
        print(f":white_check_mark: {DESCRIPTION.name} is formatted as the lint formats it")
        return 0
    print(f":x: {DESCRIPTION.name} differs from the lint's formatting:\n```\n{expected}```")
    return 1


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: check_extension_index.py PATH/TO/ExtensionsIndex", file=sys.stderr)
        return 2
    status = run_checker(Path(sys.argv[1]).resolve())
    return 1 if check_format() or status else 0


if __name__ == "__main__":
    sys.exit(main())
