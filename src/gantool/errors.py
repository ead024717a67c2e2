"""Errors meant for the user: the CLI prints their message on one line, with no traceback."""


class GantoolError(Exception):
    """A problem the user can fix; `exit_code` is what the process exits with."""

    exit_code = 1


class ConfigError(GantoolError):
    """A config value out of range, or a setting this machine cannot honour."""

    exit_code = 2
