"""What every picture shares: a matplotlib Figure (no pyplot, no global state) rendered to the
bytes of a PNG, PDF or SVG file, and axis limits that grow in whole steps."""

from __future__ import annotations

import io

from matplotlib.figure import Figure


def figure(**kwargs) -> Figure:
    """A new figure; render() turns it into a file's bytes."""
    return Figure(**kwargs)


def render(fig: Figure, fmt: str = "png", tight: bool = True) -> bytes:
    """The figure as the bytes of a PNG, PDF or SVG file."""
    buffer = io.BytesIO()
    if tight:
        fig.tight_layout()
    fig.savefig(buffer, format=fmt, dpi=100)
    return buffer.getvalue()


def doubled(base: float, needed: float) -> float:
    """base x 2^k for the smallest k >= 0 that reaches `needed`: a limit that changes only
    when a picture would not fit, and then by a whole step."""
    limit = base
    while limit < needed and limit < 1e300:
        limit *= 2
    return limit
