"""The caller's side: start the worker in its own process group, read its messages, kill it
with everything it started, and remove job folders a dead caller left (standard library
only)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from .protocol import FOLDER_PREFIX, JOB_FILE, STDERR, STDOUT


def remove_orphaned_folders(parent: Path) -> list[Path]:
    """Remove job folders in ``parent`` left by a caller that died before cleaning up (after
    its worker had already ended, so the worker's own watch could not). Only this user's
    folders whose recorded caller process is gone; POSIX only. Returns what was removed."""
    if os.name == "nt":
        return []
    removed = []
    for folder in Path(parent).glob(f"{FOLDER_PREFIX}*"):
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            caller = json.loads((folder / JOB_FILE).read_text()).get("caller")
            os.kill(int(caller), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except (OSError, ValueError, TypeError):  # alive, being written, or not ours
            continue
    return removed


class WorkerProcess:
    """The worker started in its own process group (POSIX session / Windows group), so
    ``kill`` ends it with every process it started: PythonSlicer is a launcher whose child
    is the real interpreter, and killing the launcher alone would leave that child running.

    Its standard output and error go to files in the job folder, read at each ``messages``
    call: no pipe to drain, no reader thread (which, in Slicer, would wait for the GIL).
    """

    def __init__(self, python: str, folder: Path, root: Path) -> None:
        self.folder = Path(folder)
        self._offset = 0
        with open(self.folder / STDOUT, "wb") as out, open(self.folder / STDERR, "wb") as err:
            if os.name == "nt":
                group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP
                         | subprocess.CREATE_NO_WINDOW}
            else:
                group = {"start_new_session": True}
            # cwd = the folder holding ClinicalFMambaLib, which `-m` puts on sys.path.
            self.process = subprocess.Popen(
                [python, "-m", "ClinicalFMambaLib.worker", str(self.folder)], cwd=str(root),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, **group)

    @property
    def pid(self) -> int:
        return self.process.pid

    def returncode(self) -> int | None:
        return self.process.poll()

    def messages(self) -> list[dict]:
        """JSON lines written since the last call (complete lines only)."""
        with open(self.folder / STDOUT, "rb") as out:
            out.seek(self._offset)
            data = out.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        found = []
        for line in data[:end].splitlines():
            try:
                message = json.loads(line)
            except ValueError:  # a library's stray print
                continue
            if isinstance(message, dict):
                found.append(message)
        return found

    def kill(self) -> None:
        """Kill the whole process tree now (whatever of it is left, also after the worker
        exited by itself) and reap the worker."""
        if self.process.poll() is None or os.name != "nt":
            if os.name == "nt":
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.pid)],
                               capture_output=True, check=False)
            else:
                try:
                    os.killpg(self.pid, signal.SIGKILL)  # the group outlives its leader
                except (ProcessLookupError, PermissionError):  # no member left
                    pass
        self.process.wait()

    def exit_description(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                return f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"stopped with exit status {code}"

    def stderr_tail(self, lines: int = 1) -> str:
        try:
            text = (self.folder / STDERR).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])
