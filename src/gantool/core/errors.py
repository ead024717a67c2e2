"""Errors meant for the user: the CLI prints their message on one line, with no traceback."""

from __future__ import annotations


class GantoolError(Exception):
    """A problem the user can fix; `exit_code` is what the process exits with."""

    exit_code = 1


class ConfigError(GantoolError):
    """A config value out of range, or a setting this machine cannot honour."""

    exit_code = 2


class NothingToDo(GantoolError):
    """A command with nothing left to do (a resume to a step the run has passed): one plain
    line and exit 0."""

    exit_code = 0


class Interrupted(GantoolError):
    """SIGINT or SIGTERM stopped training after a checkpoint; exits with 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def first_line(error: object) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
