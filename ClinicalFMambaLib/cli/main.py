"""clinicalfmamba: fuse two co-registered brain images or volumes (MRI, CT, PET, SPECT),
measure the result, and see what a tumour classifier makes of it.

Start with `clinicalfmamba demo`, then `clinicalfmamba fuse A B -o OUT`. Exit codes: 0 done,
1 internal error, 2 bad input or option, 3 output cannot be written, 4 invalid network
output, 5 some pairs of a folder (or subject-sessions of a cohort) failed, 129/130/143
hang-up/interrupted/terminated (README.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings

from .. import __version__
from ..core.errors import EXIT_INPUT, EXIT_INTERNAL, EXIT_OUTPUT, EXIT_SIGINT, Terminated

DEBUG_VARIABLE = "CLINICALFMAMBA_DEBUG"  # set to 1 to let unexpected errors show a traceback


def build_parser() -> argparse.ArgumentParser:
    from . import (classify_commands, cohort_commands, evaluate_commands, fuse_commands,
                   train_commands)

    parser = argparse.ArgumentParser(prog="clinicalfmamba", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (fuse_commands, evaluate_commands, train_commands, classify_commands,
                  cohort_commands):
        group.register(commands)
    return parser


def exit_code_of(error: BaseException) -> int:
    """The one decision of how a failure ends the command (README.md, "Exit codes")."""
    from ..io.weights import WeightsError

    if hasattr(error, "exit_code"):
        return int(error.exit_code)
    if isinstance(error, (ValueError, FileNotFoundError, WeightsError)):
        return EXIT_INPUT
    if isinstance(error, OSError):  # permissions, a full disk, ... while writing
        return EXIT_OUTPUT
    return EXIT_INTERNAL


def _message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    text = " ".join(str(error).split()) or type(error).__name__
    return text if exit_code_of(error) != EXIT_INTERNAL else \
        f"internal error ({type(error).__name__}: {text}); set {DEBUG_VARIABLE}=1 for details"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"clinicalfmamba: warning: {' '.join(str(message).split())}\n"


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


TERMINATING = (signal.SIGTERM, signal.SIGHUP)  # SIGINT raises KeyboardInterrupt already


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends here as one line on stderr and an exit code.
    SIGTERM and SIGHUP unwind like Ctrl-C, so temporary files are removed on the way out."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded with trained weights
    prefix = f"clinicalfmamba {args.command}"
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, _raise_terminated)
                for signum in TERMINATING} if in_main_thread else {}
    format_warning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; no partial output was left", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated as stop:
        name = signal.Signals(stop.exit_code - 128).name
        print(f"{prefix}: terminated ({name}); no partial output was left", file=sys.stderr)
        return stop.exit_code
    except Exception as error:
        if os.environ.get(DEBUG_VARIABLE) and exit_code_of(error) == EXIT_INTERNAL:
            raise
        print(f"{prefix}: error: {_message(error)}", file=sys.stderr)
        return exit_code_of(error)
    finally:
        warnings.formatwarning = format_warning
        for signum, handler in previous.items():
            signal.signal(signum, handler)
