"""Errors that the command line reports as one line, each with its exit code.

The codes are documented in README.md ("Exit codes"); ``cli.main`` is the one place that
turns an exception into a message and a code. Library callers can catch the usual base
classes (ValueError, RuntimeError) as before.
"""

from __future__ import annotations

EXIT_INTERNAL = 1      # an unexpected error: a bug, reported in one line
EXIT_INPUT = 2         # bad usage, or an input or weights file that cannot be used
EXIT_OUTPUT = 3        # the output cannot be written where asked (or would replace an input)
EXIT_RESULT = 4        # the network's result is not a valid image (NaN/Inf)
EXIT_PARTIAL = 5       # a folder run finished, but some pairs failed (see its summary)
EXIT_SIGINT = 130      # 128 + SIGINT: interrupted (Ctrl-C); SIGHUP 129, SIGTERM 143 likewise


class ClinicalFMambaError(Exception):
    """Base of the errors below; ``exit_code`` is the command's exit status."""

    exit_code = EXIT_INTERNAL


class InputError(ClinicalFMambaError, ValueError):
    """An input file, folder or option cannot be used as given."""

    exit_code = EXIT_INPUT


class OutputError(ClinicalFMambaError, ValueError):
    """The output path cannot be written, or would overwrite an input."""

    exit_code = EXIT_OUTPUT


class InvalidResultError(ClinicalFMambaError, RuntimeError):
    """The network produced non-finite values: nothing is written."""

    exit_code = EXIT_RESULT


class PartialRunError(ClinicalFMambaError):
    """Some jobs of a batch failed; the others were written."""

    exit_code = EXIT_PARTIAL


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: raised in the main thread so that temporary files are
    cleaned up on the way out, like KeyboardInterrupt for SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum


class Cancelled(RuntimeError):
    """The caller's ``cancel()`` returned True."""
