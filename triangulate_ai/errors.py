"""Errors caused by what the user gave us (config, image, paths), and how commands end on them.

The CLI prints them as one line and exits with code 2, without a traceback, because the
fix is on the user's side and a traceback would only hide the one line that matters.
"""

import argparse
import importlib
import os
import sys
from typing import Callable

EXIT_INTERRUPTED = 130  # what a shell reports for a program ended by SIGINT


class UserError(Exception):
    """Bad input named in the message: a config key, a file, a value."""

    exit_code = 2


def program_name() -> str:
    """The command as the user typed it: `python -m package.module` for a module run with -m,
    else the script or console-script name (train.py, triangulate-fit, ...)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name and not spec.name.endswith("__main__"):
        return f"python -m {spec.name}"
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "triangulate-fit"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with a bad argument as one line (exit code 2, as argparse's own), like
    every other bad input, instead of the usage block followed by the error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def one_line_errors(command: Callable[[], int]) -> int:
    """Run a command; a UserError becomes its one line on stderr and its exit code, and Ctrl-C
    that the command did not turn into a stop of its own (during start-up, or a second one that
    aborts) becomes one line and exit code 130."""
    try:
        return command()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED


def run_command(module: str) -> int:
    """`main()` of `module`, imported here so that Ctrl-C while torch loads (seconds) is one line
    and exit code 130 too: the entry point of every script and console command."""
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) while starting", file=sys.stderr)
        return EXIT_INTERRUPTED
    return main()
