"""Errors caused by what the user gave us (config, image, paths).

The CLI prints them as one line and exits with code 2, without a traceback, because the
fix is on the user's side and a traceback would only hide the one line that matters.
"""


class UserError(Exception):
    """Bad input named in the message: a config key, a file, a value."""

    exit_code = 2
