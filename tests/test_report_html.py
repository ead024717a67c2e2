"""`gantool report SWEEP --html`: one self-contained page, parsed here and opened in a real
headless browser where one is installed, on a sweep the test writes."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from gantool.app.cli import main
from test_report import SHARED, completed, write_job

HOSTILE = "<script>alert('run folder')</script>"
MAGENTA = (255, 0, 255)  # the best job's sample picture: the browser test looks for it
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def png(colour: tuple[int, int, int], size: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def add_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Four jobs: the best (drawn curves: no plots/), a worse one with its own pictures and a
    file named .png that is not one, a failed one and a killed one, with hostile text."""
    root = tmp_path / "sweep"
    worse = write_job(root / "0", ["optimizer.g.lr=0.1", *SHARED], completed(1.3, 0.5, 0.6))
    add_file(worse / "samples" / "step_0000050.png", png((0, 0, 255)))
    add_file(worse / "samples" / "step_0000100.png", png((0, 128, 0)))
    add_file(worse / "plots" / "losses.png", png((200, 200, 0)))
    add_file(worse / "plots" / "evil.png", HOSTILE.encode())
    write_job(
        root / "1", [f"model.name={HOSTILE}", *SHARED], {"status": "failed", "error": HOSTILE}
    )
    write_job(root / "2", ["optimizer.g.lr=0.3", *SHARED], steps_logged=[10, 20])  # killed
    best = write_job(root / "3", ["optimizer.g.lr=0.2", *SHARED], completed(1.1, 0.2, 0.9))
    add_file(best / "samples" / "step_0000100.png", png(MAGENTA, 64))
    rows = [
        {"step": s, "train/d_loss": 1.0 + s / 100, "train/g_loss": 0.7, "eval/w1": w}
        for s, w in ((50, 0.4), (100, 0.2))
    ]
    (best / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


class Page(HTMLParser):
    """What the tests read from the page: tags seen, pictures, card headings, text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.images: list[str] = []
        self.headings: list[str] = []
        self.text: list[str] = []
        self.policy = ""
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.add(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "meta" and dict(attrs).get("http-equiv") == "Content-Security-Policy":
            self.policy = dict(attrs)["content"]
        if tag == "h2":
            self._in_h2 = True
            self.headings.append("")
        for name, value in attrs:  # no handler of any kind, and nothing fetched from outside
            assert not name.startswith("on"), name
            if name in ("src", "href"):
                assert value.startswith("data:image/png;base64,"), value[:40]

    def handle_endtag(self, tag: str) -> None:
        self._in_h2 = self._in_h2 and tag != "h2"

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_h2:
            self.headings[-1] += data


def read_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_page_has_every_job_best_first_with_decodable_pictures_and_escaped_text(
    sweep: Path, capsys
) -> None:
    assert main(["report", str(sweep), "--html"]) in (None, 0)
    out = capsys.readouterr().out
    assert f"Wrote {sweep / 'report.html'}" in " ".join(out.split())
    page = read_page(sweep / "report.html")

    # Best objective (eval/w1, lower) first; failed and killed jobs last, in job order.
    jobs = [heading.split()[2] for heading in page.headings]
    assert jobs == ["3", "0", "1", "2"]
    assert [h.split()[3] for h in page.headings] == [
        "completed",
        "completed",
        "failed",
        "unfinished",
    ]

    # Every picture decodes: the best job's sample, its loss and evaluation curves drawn from
    # metrics.jsonl, the other job's newest sample and its losses.png, the killed job's losses
    # so far, drawn.
    pictures = [
        Image.open(io.BytesIO(base64.b64decode(src.partition(",")[2]))) for src in page.images
    ]
    for picture in pictures:
        picture.load()
    assert [p.size for p in pictures][:2] == [(64, 64), (600, 350)]
    assert len(pictures) == 6 and pictures[5].size == (600, 350)
    assert pictures[0].getpixel((0, 0))[:3] == MAGENTA
    assert pictures[3].getpixel((0, 0))[:3] == (0, 128, 0)  # step 100, not step 50
    assert pictures[4].getpixel((0, 0))[:3] == (200, 200, 0)

    text = " ".join(page.text)
    assert "script" not in page.tags and "link" not in page.tags
    assert "default-src 'none'" in page.policy  # and a browser would run none anyway
    assert text.count(HOSTILE) == 3  # the failed job's override, its error, the table cell
    assert "evil.png is not a PNG file" in text
    assert "no sample picture in samples/" in text  # the killed job says so
    no_pictures = "no pictures: no sample picture in samples/; no loss curves: no plots/"
    assert no_pictures in text  # the failed job, in one line
    assert "no summary.json yet: still running, or killed after step 20" in text


def test_html_refuses_in_one_line_and_writes_nothing(sweep: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "empty"), "--html"])
    assert exit_info.value.code == 1
    assert "holds no gantool runs" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []

    (sweep / "report.html").mkdir()  # in the way of the page: it cannot be written
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(sweep), "--html"])
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"error: cannot write {sweep / 'report.html'}")
    assert captured.out == "" and not (sweep / "report.csv").exists()
    assert list((sweep / "report.html").iterdir()) == []


def test_a_headless_browser_shows_the_page(sweep: Path, tmp_path: Path) -> None:
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip(f"no headless browser installed (looked for {', '.join(BROWSERS)})")
    assert main(["report", str(sweep), "--html"]) in (None, 0)
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # root in a container has no sandbox to give
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1000,1200",
            (sweep / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    # The browser decoded and drew the best job's embedded sample picture near the top.
    screen = Image.open(shot).convert("RGB")
    colours = screen.getcolors(maxcolors=screen.width * screen.height)
    magenta = sum(count for count, colour in colours if colour == MAGENTA)
    assert magenta > 100 * 100, f"{magenta} magenta pixels"
