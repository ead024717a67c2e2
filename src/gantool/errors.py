"""Errors meant for the user: the CLI prints their message on one line, with no traceback."""

from __future__ import annotations

import dataclasses
import difflib
import re


class GantoolError(Exception):
    """A problem the user can fix; `exit_code` is what the process exits with."""

    exit_code = 1


class ConfigError(GantoolError):
    """A config value out of range, or a setting this machine cannot honour."""

    exit_code = 2


class Interrupted(GantoolError):
    """SIGINT or SIGTERM stopped training after a checkpoint; exits with 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def describe_config_error(error: Exception) -> str:
    """One line for a Hydra or OmegaConf composition error: the key, the value, what is allowed."""
    cause = error.__cause__ if error.__cause__ is not None else error
    text = str(error)
    missing = re.search(r"Could not find '(.+)/([^'/]+)'", text)
    if missing:
        group, option = missing.groups()
        available = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", text)
        choices = ", ".join(available.group(1).split()) if available else "none"
        return f"{group}={option} is not a choice: expected one of {choices}"
    full_key = getattr(cause, "full_key", None)
    object_type = getattr(cause, "object_type", None)
    first_line = str(getattr(cause, "msg", None) or cause).strip().splitlines()[0]
    if full_key and type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
        parent, _, key = full_key.rpartition(".")
        known = (
            [f.name for f in dataclasses.fields(object_type)]
            if dataclasses.is_dataclass(object_type)
            else []
        )
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {'.'.join(filter(None, [parent, close[0]]))}?)" if close else ""
        where = f"{parent} has" if parent else "known keys:"
        listing = f"; {where} {', '.join(known)}" if known else ""
        return f"{full_key}: no such key{hint}{listing}"
    if full_key:
        return f"{full_key}: {first_line}"
    if type(error).__name__ == "OverrideParseException":
        return f"cannot parse the overrides: {first_line}"
    return first_line
