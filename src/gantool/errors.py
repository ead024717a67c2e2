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


class NothingToDo(GantoolError):
    """A command with nothing left to do (a resume to a step the run has passed): one plain
    line and exit 0."""

    exit_code = 0


class Interrupted(GantoolError):
    """SIGINT or SIGTERM stopped training after a checkpoint; exits with 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


# Hydra plugins that gantool installs only with an extra: which extra brings which option.
PLUGIN_EXTRAS = {
    "hydra/launcher=submitit_slurm": "slurm",
    "hydra/launcher=submitit_local": "slurm",
    "hydra/sweeper=optuna": "optuna",
}


def describe_config_error(error: Exception, overrides: list[str] | None = None) -> str:
    """One line for a Hydra or OmegaConf composition error: the key, the value, what is allowed.

    `overrides`, when given, lets a parse error name the override that failed.
    """
    cause = error.__cause__ if error.__cause__ is not None else error
    text = str(error)
    missing = re.search(r"Could not (?:find|load) '(.+)/([^'/]+)'", text)
    if missing:
        group, option = missing.groups()
        available = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", text)
        if not available:
            return f"{group}={option} is not a choice (`gantool train --help` lists them)"
        choices = ", ".join(available.group(1).split())
        extra = PLUGIN_EXTRAS.get(f"{group}={option}")
        hint = f" (it comes with pip install 'gantool[{extra}]')" if extra else ""
        return f"{group}={option} is not a choice: expected one of {choices}{hint}"
    full_key = getattr(cause, "full_key", None)
    object_type = getattr(cause, "object_type", None)
    line = first_line(getattr(cause, "msg", None) or cause)
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
        return f"{full_key}: {line}"
    culprit = _not_an_option_name(overrides or [])  # `group=null`, `group=0`, `group=[0]`
    if culprit:
        return f"{culprit}: a config group takes the name of one of its options"
    if type(error).__name__ == "OverrideParseException":
        culprit = _unparsable(overrides or [])
        what = f"the override {culprit!r}" if culprit else "the overrides"
        return f"cannot parse {what}: {line}"
    if overrides and not type(error).__module__.startswith(("hydra", "omegaconf")):
        # A plain TypeError or ValueError from inside Hydra says nothing of the input.
        return f"cannot compose the config from {' '.join(overrides)}: {line}"
    return line


def first_line(error: object) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _parse_each(overrides: list[str]):
    """Each override with Hydra's parse of it, or None where it does not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            yield override, parser.parse_override(override)
        except Exception:  # Hydra's parse errors have no common public base
            yield override, None


def _not_an_option_name(overrides: list[str]) -> str | None:
    for override, parsed in _parse_each(overrides):
        if parsed is None or "." in parsed.key_or_group:
            continue
        value = parsed.value()
        names = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in names):
            return override
    return None


def _unparsable(overrides: list[str]) -> str | None:
    return next((o for o, parsed in _parse_each(overrides) if parsed is None), None)
