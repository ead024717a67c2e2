"""`gantool report SWEEP_DIR --html`: the sweep as one self-contained page, SWEEP_DIR/report.html.

The table `gantool report` prints sits on top; below it a card per job, best objective first:
its newest sample picture, its loss and evaluation curves, its numbers beside their floors and
noise points, its overrides and its status. Every picture is embedded as a data: URI and the
style is in the page, so the file can be mailed or archived alone.

A run folder is data, never code: every text taken from one (names, overrides, keys, errors)
is escaped, only PNG files are embedded, and the page has no script at all.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from gantool.app.report import (
    LOSS_KEYS,
    UNFINISHED,
    Job,
    format_value,
    header_pieces,
    is_number,
    logged_rows,
    make_columns,
    metric_keys,
    sort_jobs,
)
from gantool.config.metrics import metric
from gantool.core.files import NotRegular, read_regular, write_file

HTML_NAME = "report.html"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Should text from a run folder ever slip through unescaped, the browser still runs no script
# and fetches nothing: only the page's own style and data: pictures are allowed.
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

# Pictures larger than this are left out (a note says so): the page must stay openable.
MAX_PICTURE_BYTES = 20_000_000

# What a missing picture's note is wrapped in.
MISSING, MISSING_END = '<figure><p class="missing">', "</p></figure>"

# The numbers shown beside a score, as its table heads them.
BESIDE = ("real vs real", "noise", "target")

# Evaluation keys drawn over training, at most this many panels per job.
MAX_EVAL_PANELS = 4

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #f6f6f6; }
h1 { font-size: 1.3em; word-break: break-all; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #eee; text-align: left; vertical-align: bottom; }
th.num { text-align: right; }
.wide-table { overflow-x: auto; max-width: 100%; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bold { font-weight: bold; }
.red { color: #b00020; }
.notes { color: #555; margin: 0.4em 0 1.5em; padding-left: 1.2em; }
.card { background: #fff; border: 1px solid #ccc; border-radius: 6px; margin: 1.2em 0;
        padding: 0.8em 1em; }
.card h2 { font-size: 1.1em; margin: 0 0 0.5em; }
.badge { display: inline-block; padding: 0.1em 0.5em; border-radius: 4px; font-size: 0.85em;
         margin-left: 0.5em; color: #fff; background: #777; }
.badge.completed { background: #2e7d32; }
.badge.failed, .badge.interrupted, .badge.unreadable { background: #b00020; }
.message { color: #b00020; white-space: pre-wrap; word-break: break-word; }
.pictures { display: flex; flex-wrap: wrap; gap: 0.8em; align-items: flex-start; }
figure { margin: 0; flex: 1 1 320px; max-width: 440px; }
figure.wide { flex: 2 1 560px; max-width: 780px; }
figure img { width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
.missing { color: #777; font-style: italic; }
.details { display: flex; flex-wrap: wrap; gap: 1.5em; margin-top: 0.8em; }
code { background: #f0f0f0; padding: 0 0.2em; word-break: break-all; }
"""


def write_page(sweep_dir: Path, jobs: list[Job], sort: str | None) -> Path:
    """Write SWEEP_DIR/report.html (atomically; GantoolError if it cannot be) and return its
    path. Jobs are ordered by `sort`, else by the objective where any job has one."""
    if sort is None and "objective" in metric_keys(jobs):
        sort = "objective"
    if sort is not None:
        jobs = sort_jobs(jobs, sort)
    path = sweep_dir / HTML_NAME
    write_file(path, page(sweep_dir, jobs, sort).encode("utf-8"))
    return path


def page(sweep_dir: Path, jobs: list[Job], sort: str | None) -> str:
    """The whole page as text."""
    esc = html.escape
    keys = metric_keys(jobs)
    title, columns, notes = make_columns(jobs, keys, sweep_dir, sort)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">',
        f"<title>{esc(title.plain)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{esc(title.plain)}</h1>",
        _table(columns),
        '<ul class="notes">' + "".join(f"<li>{esc(n.plain)}</li>" for n in notes) + "</ul>",
    ]
    parts += [_card(rank, job) for rank, job in enumerate(jobs, 1)]
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(columns) -> str:
    """The report's columns as an HTML table; bold and red where the terminal's are."""
    esc = html.escape
    head = "".join(  # headers may wrap where the terminal's do: after a space, dot or slash
        ('<th class="num">' if c.right else "<th>")
        + "<wbr>".join(esc(piece) for piece in header_pieces(c.header))
        + "</th>"
        for c in columns
    )
    rows = []
    for cells in zip(*(c.cells for c in columns), strict=True):
        tds = []
        for column, cell in zip(columns, cells, strict=True):
            classes = [*(["num"] if column.right else []), *str(cell.style or "").split()]
            attr = f' class="{" ".join(classes)}"' if classes else ""
            tds.append(f"<td{attr}>{esc(cell.plain)}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="wide-table">{table}</div>'


def _card(rank: int, job: Job) -> str:
    """One job: heading and status, its pictures, its numbers, its overrides."""
    esc = html.escape
    status = esc(job.status)
    step = "" if job.step is None else f"step {job.step}"
    parts = [
        f'<section class="card" id="job-{rank}">',
        f'<h2>{rank}. job {esc(job.name)} <span class="badge {status}">{status}</span>'
        f" <small>{esc(step)}</small></h2>",
        _status_lines(job),
        _picture_row(_pictures(job)),
        '<div class="details">' + _numbers(job) + _overrides(job) + "</div>",
        "</section>",
    ]
    return "\n".join(parts)


def _status_lines(job: Job) -> str:
    """Why a job failed or is not finished, and any file of it that could not be read."""
    esc = html.escape
    lines = []
    if job.error:
        lines.append(f'<p class="message">{esc(job.status)}: {esc(job.error)}</p>')
    elif job.status == UNFINISHED:
        lines.append(
            '<p class="missing">no summary.json yet: still running, or killed'
            f"{esc(f' after step {job.step}' if job.step is not None else '')}</p>"
        )
    lines += [f'<p class="message">{esc(problem)}</p>' for problem in job.problems]
    return "".join(lines)


def _picture_row(figures: list[str]) -> str:
    """The figures side by side; a job with no picture at all (failed at its start, say) gets
    one line saying what is missing instead of a row of notes."""
    if all(f.startswith(MISSING) for f in figures):
        reasons = [f.removeprefix(MISSING).removesuffix(MISSING_END) for f in figures]
        return f'<p class="missing">no pictures: {"; ".join(reasons)}</p>'
    return '<div class="pictures">' + "".join(figures) + "</div>"


def _pictures(job: Job) -> list[str]:
    """The newest sample picture, then the loss curves, the evaluation curves and the run's
    other plots; what is missing is said in words where the picture would be."""
    folder = job.path
    if folder is None:  # a Job made by hand, not read from a folder
        return [_missing("no folder to read them from")]
    figures = [_sample_figure(folder)]
    plots = _png_files(folder / "plots")
    rows = logged_rows(folder)
    losses = plots.pop("losses.png", None)
    if losses is not None:
        figures.append(_figure_from_file(losses, "loss curves"))
    elif any(key in row for row in rows for key in LOSS_KEYS):
        figures.append(_figure(_draw_losses(rows), "loss curves, drawn from metrics.jsonl"))
    else:
        figures.append(_missing("no loss curves: no plots/losses.png and no losses logged"))
    evaluated = _eval_keys(rows)
    if evaluated:
        picture = _draw_evals(rows, evaluated)
        figures.append(_figure(picture, "evaluation during training", wide=len(evaluated) > 1))
    else:
        figures.append(_missing("no evaluation logged during training (trainer.eval_every)"))
    figures += [_figure_from_file(path, name) for name, path in plots.items()]
    return figures


def _sample_figure(folder: Path) -> str:
    """samples/step_N.png with the largest N (the names are zero-padded), else the newest PNG."""
    pictures = _png_files(folder / "samples")
    steps = sorted(name for name in pictures if name.startswith("step_"))
    if steps:
        return _figure_from_file(pictures[steps[-1]], f"final samples ({steps[-1]})", wide=True)
    if pictures:
        newest = max(pictures.values(), key=lambda p: p.stat().st_mtime)
        return _figure_from_file(newest, f"samples ({newest.name})", wide=True)
    return _missing("no sample picture in samples/")


def _png_files(folder: Path) -> dict[str, Path]:
    """The *.png regular files of `folder` by name, sorted; none if it is not a folder."""
    if not folder.is_dir():
        return {}
    files = sorted(folder.glob("*.png"))
    return {p.name: p for p in files if p.is_file() and not p.is_symlink()}


def _figure_from_file(path: Path, caption: str, wide: bool = False) -> str:
    """The picture at `path`, embedded, or a note saying why not (a PNG only: a run folder's
    files are data, and a file named .png may be anything)."""
    try:
        data = read_regular(path)
    except (OSError, NotRegular) as e:
        return _missing(f"cannot read {path.name}: {e}")
    if len(data) > MAX_PICTURE_BYTES:
        return _missing(f"{path.name} left out: {len(data):,} bytes")
    if not data.startswith(PNG_SIGNATURE):
        return _missing(f"{path.name} is not a PNG file")
    return _figure(data, caption, wide)


def _figure(png: bytes, caption: str, wide: bool = False) -> str:
    """The PNG as an embedded picture with its caption; `wide` ones get twice the room."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    esc = html.escape
    attr = ' class="wide"' if wide else ""
    return (
        f'<figure{attr}><img src="{uri}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _missing(why: str) -> str:
    """A note, escaped, where a picture would be."""
    return MISSING + html.escape(why) + MISSING_END


def _eval_keys(rows: list[dict]) -> list[str]:
    """The scoring eval/* keys with a number in some metrics row (periodic evaluation), the
    first logged first, at most MAX_EVAL_PANELS."""
    seen: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("eval/") and is_number(value) and metric(key).score:
                seen[key] = None
    return list(seen)[:MAX_EVAL_PANELS]


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """The (step, value) pairs of `key` in the rows that have a finite number for it."""
    pairs = [(r["step"], r[key]) for r in rows if is_number(r.get(key)) and math.isfinite(r[key])]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _draw_losses(rows: list[dict]) -> bytes:
    """D and G losses against step, for a run that wrote no plots/losses.png."""
    from gantool.plots.render import figure, render  # matplotlib: only when a picture is drawn

    fig = figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for key, label in zip(LOSS_KEYS, ("D loss", "G loss"), strict=True):
        ax.plot(*_series(rows, key), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    return render(fig)


def _draw_evals(rows: list[dict], keys: list[str]) -> bytes:
    """Each key's periodic evaluation against step, one panel each, its real-data floor and
    noise point (the latest logged) as dashed lines where the run measured them."""
    from gantool.plots.render import figure, render  # matplotlib: only when a picture is drawn

    fig = figure(figsize=(3.2 * len(keys), 2.8))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        ax.plot(*_series(rows, key), marker="o", ms=3)
        info = metric(key)
        for ref, colour, label in ((info.floor, "green", "real"), (info.noise, "red", "noise")):
            values = _series(rows, ref)[1] if ref else []
            if values:
                ax.axhline(values[-1], color=colour, ls="--", lw=0.8, label=label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        ax.set_title(info.label, fontsize="medium")
        ax.set_xlabel("step")
    return render(fig)


def _numbers(job: Job) -> str:
    """The job's scores beside their real-data floor, noise point and target; the losses,
    objective and wall time; then what the evaluation was measured with."""
    esc = html.escape
    values = job.values
    shown_beside = {ref for key in values for ref in (metric(key).floor, metric(key).noise) if ref}
    rows: list[tuple[str, float, list]] = []
    measured = []
    for key, value in values.items():
        if not key.startswith("eval/") or key in shown_beside:
            continue
        info = metric(key)
        if not info.score:
            measured.append(f"{info.label} {_format(value)}")
            continue
        beside = [
            values.get(info.floor) if info.floor else None,
            values.get(info.noise) if info.noise else None,
            job.targets.get(key),
        ]
        rows.append((key, value, beside))
    if not rows and not any(k in values for k in (*LOSS_KEYS, "wall_seconds")):
        return '<div><p class="missing">no numbers: the job has no summary.json results</p></div>'
    others = [
        f"{label} {_format(values[key], key)}"
        for key, label in (
            ("train/d_loss", "final D loss"),
            ("train/g_loss", "final G loss"),
            ("wall_seconds", "wall time"),
        )
        if key in values
    ]
    lines = [" · ".join(others)] if others else []
    if job.objective:
        lines.append(f"★ the objective, {job.objective}")
    if measured:
        lines.append("measured with: " + ", ".join(measured))
    table = _numbers_table(rows, job.objective)
    return "<div>" + table + "".join(f"<p>{esc(line)}</p>" for line in lines) + "</div>"


def _numbers_table(rows: list[tuple[str, float, list]], objective: str | None) -> str:
    """Each score with its floor, noise point and target beside it: only the columns that
    some row fills (a ring's metrics have no floor, a Gaussian's only targets)."""
    esc = html.escape
    if not rows:
        return ""
    filled = [i for i, name in enumerate(BESIDE) if any(r[2][i] is not None for r in rows)]
    head = "".join(f"<th>{h}</th>" for h in ("metric", "value", *(BESIDE[i] for i in filled)))
    body = []
    for key, value, beside in rows:
        star = " ★" if key == objective else ""
        body.append(
            f"<tr><td>{esc(metric(key).label)}{star}<br><code>{esc(key)}</code></td>"
            f'<td class="num bold">{_format(value)}</td>'
            + "".join(f'<td class="num">{_format(beside[i])}</td>' for i in filled)
            + "</tr>"
        )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _overrides(job: Job) -> str:
    esc = html.escape
    if not job.overrides_read:
        return '<div><p class="missing">overrides: .hydra/overrides.yaml cannot be read</p></div>'
    if not job.overrides:
        return '<div><p class="missing">no overrides</p></div>'
    items = "".join(f"<li><code>{esc(o)}</code></li>" for o in job.overrides)
    return f"<div><strong>overrides</strong><ul>{items}</ul></div>"


def _format(value: float | None, key: str = "") -> str:
    return html.escape(format_value(key, value))
