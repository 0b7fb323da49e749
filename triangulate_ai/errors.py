"""Errors caused by what the user gave us (config, image, paths).

The CLI prints them as one line and exits with code 2, without a traceback, because the
fix is on the user's side and a traceback would only hide the one line that matters.
"""

import os
import sys
from typing import Callable


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


def one_line_errors(command: Callable[[], int]) -> int:
    """Run a command; a UserError becomes its one line on stderr and its exit code."""
    try:
        return command()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
