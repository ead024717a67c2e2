"""The docs as a user reads them: every relative link resolves, and every `gantool train`
command in them composes (`--cfg job`); every other gantool command names a real command."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from gantool.app.cli import COMMANDS, main

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
README_LINES = 200  # "a few screens"


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to -."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        ):
            broken.append(target)
    assert broken == []


def test_the_readme_is_a_few_screens_with_a_picture() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_LINES
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert pictures and all((ROOT / p).is_file() for p in pictures)


def commands(prefix: str) -> list[tuple[str, str]]:
    """(page, line) for every line of a shell block of the docs that runs `gantool PREFIX`."""
    found = []
    for page in PAGES:
        for language, body in FENCE.findall(page.read_text()):
            if language not in ("bash", "sh", "console", "shell"):
                continue
            for line in body.splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith(f"gantool {prefix}"):
                    found.append((page_id(page), line))
    return found


# Sweeper and launcher plugins some commands name, which come with an extra.
EXTRAS = {"hydra/launcher=submitit": "hydra_plugins.hydra_submitit_launcher",
          "hydra/sweeper=optuna": "hydra_plugins.hydra_optuna_sweeper"}  # fmt: skip


def one_job(args: list[str]) -> list[str]:
    """A sweep's first job: without -m, the first value of each comma-separated list."""
    if "-m" not in args and "--multirun" not in args:
        return args
    job = []
    for arg in args:
        if arg in ("-m", "--multirun"):
            continue
        key, eq, value = arg.partition("=")
        if eq and "," in value and not value.startswith(("[", "{", "'", '"')):
            value = value.split(",")[0]
        job.append(f"{key}{eq}{value}")
    return job


@pytest.mark.parametrize(("page", "line"), commands("train "), ids=lambda x: str(x)[:60])
def test_every_train_command_in_the_docs_composes(page: str, line: str, capsys) -> None:
    args = shlex.split(line.split(" #")[0])[2:]
    for prefix, module in EXTRAS.items():
        if any(a.startswith(prefix) for a in args) and not importlib.util.find_spec(module):
            pytest.skip(f"{prefix} needs its extra installed")
    try:
        main(["train", *one_job(args), "--cfg", "job"])
    except SystemExit as e:
        pytest.fail(f"{page}: `{line}` exited {e.code}: {capsys.readouterr().err.strip()}")
    assert "dataset:" in capsys.readouterr().out


def test_every_other_command_in_the_docs_is_a_gantool_command() -> None:
    named = {line.split()[1] for _, line in commands("")}
    assert named - {"--help", "--version", "-sc"} <= set(COMMANDS)
    assert len(commands("train ")) >= 20  # the docs show many; finding none would pass above
