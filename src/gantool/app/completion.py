"""Tab completion: `gantool -sc install=bash` and the queries the shell sends on TAB."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable

from gantool.core.errors import GantoolError


def shell_completion(argv: list[str], commands: list[str], run_train: Callable) -> None:
    """`gantool -sc ...`. On TAB the shell runs `gantool -sc query=SHELL` with the typed line in
    COMP_LINE (and the cursor in COMP_POINT); it offers what this prints. The first word
    completes to the commands; after `train`, and after `resume RUN_DIR`, Hydra completes the
    overrides; after any other command nothing is printed, so bash offers file names. Never an
    error text: it would land in the command line. install=SHELL and uninstall=SHELL are Hydra's.
    """
    query = next((arg for arg in argv[1:] if arg.startswith("query=")), None)
    if query is None:
        run_train(argv)
        return
    line = os.environ.get("COMP_LINE", "")
    point = int(os.environ.get("COMP_POINT", len(line)))
    typed = line[:point]
    words = typed.split()
    if not typed or typed[-1].isspace():
        words.append("")  # a new word begins at the cursor
    # words[0] is the app; words[-1] is the word being completed.
    if len(words) <= 2:
        word = words[-1]
        choices = ["--help", "--version"] if word.startswith("-") else commands
        separator = "\n" if query == "query=fish" else " "
        print(separator.join(c for c in choices if c.startswith(word)))
        return
    drop = {"train": 1, "resume": 2}.get(words[1], 0)  # the words before the overrides
    if drop and len(words) > drop + 1:
        drop_subcommand_from_completion_line(drop)
        with contextlib.suppress(GantoolError):  # an override Hydra cannot parse: no choices
            run_train(argv)


def drop_subcommand_from_completion_line(num_words: int = 1) -> None:
    """Hydra's completion reads COMP_LINE as the app name then overrides, so the words between
    (`train`, or `resume RUN_DIR`) go, and the cursor in COMP_POINT moves back as far."""
    line = os.environ.get("COMP_LINE", "")
    point = int(os.environ.get("COMP_POINT", len(line)))
    match = re.match(rf"(\s*\S+\s+)((?:\S+\s+){{{num_words}}})", line)
    if match:
        os.environ["COMP_LINE"] = match[1] + line[match.end() :]
        os.environ["COMP_POINT"] = str(max(len(match[1]), point - len(match[2])))
