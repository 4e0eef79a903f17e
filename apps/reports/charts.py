"""Tiny server-side SVG charts for the admin: no JavaScript, no CDN (the machine may have no internet).

Amounts arrive as Decimal and are turned into floats only to place pixels; every label shown is
formatted from the original value. All text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PALETTE = ["#2f6fb0", "#e07b39", "#3a9d5d", "#c04a4a", "#7e5bb5", "#8c6d31", "#d45f9c", "#5b8a99"]
AXIS = "#9aa4ad"
GRID = "#e5e9ec"
TEXT = "#4a545c"
FONT = 'font-family="-apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="11"'


def usd(value: Decimal | float | int | None, *, places: int = 2) -> str:
    if value is None:
        return "—"
    amount = Decimal(value)
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.{places}f}"


def usd_short(value: Decimal | float | int) -> str:
    """Axis labels: $750, $1.25k, $2.5M (no more than three significant digits)."""
    amount = float(value)
    for limit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if abs(amount) >= limit:
            return f"${_trim(amount / limit)}{suffix}"
    if abs(amount) >= 10 or amount == 0:
        return f"${amount:.0f}"
    return f"${amount:.2f}"


def _trim(number: float) -> str:
    text = f"{number:.2f}" if abs(number) < 10 else f"{number:.1f}" if abs(number) < 100 else f"{number:.0f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _nice_max(value: float) -> float:
    """A round axis maximum ≥ value (1, 2, 2.5, 5 × 10^n)."""
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent * (1 + 1e-9):
            return step * exponent
    return 10 * exponent


def _svg(width: int, height: int, body: list[str], *, title: str) -> SafeString:
    return mark_safe(  # noqa: S308 - every interpolated text below went through escape()
        f'<svg class="finops-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _y_axis(body: list[str], *, top: float, left: float, plot_w: float, plot_h: float, y_max: float, fmt: Callable) -> None:
    for i in range(5):
        frac = i / 4
        y = top + plot_h - frac * plot_h
        body.append(
            f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{left + plot_w:.1f}" y2="{y:.1f}" stroke="{GRID}" stroke-width="1"/>'
        )
        body.append(
            f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end" fill="{TEXT}" {FONT}>{escape(fmt(y_max * frac))}</text>'
        )
    body.append(
        f'<line x1="{left:.1f}" y1="{top + plot_h:.1f}" x2="{left + plot_w:.1f}" y2="{top + plot_h:.1f}" stroke="{AXIS}"/>'
    )


def bar_chart(
    points: Sequence[tuple[str, Decimal | float | int]],
    *,
    title: str,
    width: int = 470,
    height: int = 220,
    color: str = PALETTE[0],
    fmt: Callable[[Any], str] = usd_short,
    highlight: Callable[[int], bool] | None = None,
) -> SafeString:
    """Vertical bars, one per point (e.g. spend per day); x labels are thinned to stay readable."""
    left, right, top, bottom = 56, 12, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [float(v) for _, v in points]
    y_max = _nice_max(max(values, default=0.0))
    body: list[str] = []
    _y_axis(body, top=top, left=left, plot_w=plot_w, plot_h=plot_h, y_max=y_max, fmt=fmt)
    n = max(len(points), 1)
    slot = plot_w / n
    every = max(1, round(n / 12))
    for i, ((label, value), number) in enumerate(zip(points, values, strict=True)):
        h = plot_h * number / y_max if y_max else 0
        x = left + i * slot + slot * 0.15
        fill = color if highlight is None or highlight(i) else "#b9c7d6"
        body.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" fill="{fill}">'
            f"<title>{escape(label)}: {escape(fmt(value) if fmt is not usd_short else usd(value))}</title></rect>"
        )
        if i % every == 0:
            body.append(
                f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - 10}" text-anchor="middle" fill="{TEXT}" {FONT}>{escape(label)}</text>'
            )
    return _svg(width, height, body, title=title)


def hbar_chart(
    rows: Sequence[tuple[str, Decimal | float | int]],
    *,
    title: str,
    width: int = 420,
    row_height: int = 22,
    color: str = PALETTE[0],
    fmt: Callable[[Any], str] = usd,
) -> SafeString:
    """Horizontal bars with the label on the left and the value at the end of the bar (e.g. top models)."""
    label_w, value_w = 170, 80
    plot_w = width - label_w - value_w
    height = max(row_height * len(rows) + 8, 30)
    top_value = max((float(v) for _, v in rows), default=0.0) or 1.0
    body: list[str] = []
    for i, (label, value) in enumerate(rows):
        y = 4 + i * row_height
        w = max(plot_w * float(value) / top_value, 1 if float(value) > 0 else 0)
        short = label if len(label) <= 28 else label[:27] + "…"
        body.append(
            f'<text x="{label_w - 6}" y="{y + row_height * 0.65:.1f}" text-anchor="end" fill="{TEXT}" {FONT}>{escape(short)}</text>'
        )
        body.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_height - 7}" fill="{color}" rx="2">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
        )
        body.append(
            f'<text x="{label_w + w + 4:.1f}" y="{y + row_height * 0.65:.1f}" fill="{TEXT}" {FONT}>{escape(fmt(value))}</text>'
        )
    if not rows:
        body.append(f'<text x="10" y="20" fill="{TEXT}" {FONT}>No data</text>')
    return _svg(width, height, body, title=title)


@dataclass
class Series:
    name: str
    values: Sequence[Decimal | float | int | None]  # one per x position; None = no point (e.g. the future)
    color: str = PALETTE[0]
    dashed: bool = False
    offset: int = 0  # index of the first value on the x axis


@dataclass
class HLine:
    value: Decimal | float | int
    label: str
    color: str = "#c04a4a"


@dataclass
class LineChart:
    title: str
    x_labels: Sequence[str]
    series: list[Series] = field(default_factory=list)
    hlines: list[HLine] = field(default_factory=list)
    width: int = 470
    height: int = 220
    fmt: Callable[[Any], str] = usd_short

    def render(self) -> SafeString:
        left, right, top, bottom = 56, 12, 12, 44
        plot_w, plot_h = self.width - left - right, self.height - top - bottom
        n = max(len(self.x_labels), 2)
        numbers = [float(v) for s in self.series for v in s.values if v is not None] + [float(h.value) for h in self.hlines]
        y_max = _nice_max(max(numbers, default=0.0) * 1.05)
        body: list[str] = []
        _y_axis(body, top=top, left=left, plot_w=plot_w, plot_h=plot_h, y_max=y_max, fmt=self.fmt)

        def xy(i: int, value: float) -> tuple[float, float]:
            return left + plot_w * i / (n - 1), top + plot_h - plot_h * value / y_max

        every = max(1, round(n / 12))
        for i, label in enumerate(self.x_labels):
            if i % every == 0:
                x, _ = xy(i, 0)
                body.append(
                    f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="{TEXT}" {FONT}>{escape(label)}</text>'
                )
        for line in self.hlines:
            _, y = xy(0, float(line.value))
            body.append(
                f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="{line.color}" stroke-width="1.5" stroke-dasharray="2 3"/>'
                f'<text x="{left + plot_w - 4}" y="{y - 4:.1f}" text-anchor="end" fill="{line.color}" {FONT}>{escape(line.label)}</text>'
            )
        legend_x = left
        for series in self.series:
            points = [xy(series.offset + i, float(v)) for i, v in enumerate(series.values) if v is not None]
            if points:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
                dash = ' stroke-dasharray="5 4"' if series.dashed else ""
                body.append(f'<polyline points="{path}" fill="none" stroke="{series.color}" stroke-width="2"{dash}/>')
            body.append(
                f'<rect x="{legend_x}" y="{self.height - 14}" width="10" height="3" fill="{series.color}"/>'
                f'<text x="{legend_x + 14}" y="{self.height - 9}" fill="{TEXT}" {FONT}>{escape(series.name)}</text>'
            )
            legend_x += 24 + 7 * len(series.name)
        return _svg(self.width, self.height, body, title=self.title)
