"""Small line plots as SVG text, drawn on the server: no chart library runs in the browser."""
from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

WIDTH, HEIGHT, MARGIN = 320, 80, 4


def line(points: Sequence[tuple[float, float]], *, start: float, end: float, title: str, unit: str = "") -> str:
    """An SVG of `points` (time, value) between `start` and `end`, its peak labelled."""
    peak = max((v for _, v in points), default=0.0)
    top = peak or 1.0
    span = (end - start) or 1.0

    def x(t: float) -> float:
        return MARGIN + (t - start) / span * (WIDTH - 2 * MARGIN)

    def y(v: float) -> float:
        return HEIGHT - MARGIN - v / top * (HEIGHT - 2 * MARGIN - 12)

    path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
    label = f"{title}: peak {peak:.3g}{unit}" if points else f"{title}: no samples yet"
    return (f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}">'
            f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" class="frame"/>'
            f'<text x="{MARGIN + 2}" y="12">{escape(label)}</text>'
            + (f'<polyline points="{path}" class="line"/>' if points else "") + "</svg>")
