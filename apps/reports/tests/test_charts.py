"""The inline SVG chart helpers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal

from apps.reports import charts

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(str(svg))  # well-formed XML, or this raises


def test_bar_chart_draws_one_bar_per_point_scaled_to_the_largest():
    svg = charts.bar_chart([("1", Decimal("10")), ("2", Decimal("40")), ("3", Decimal("0"))], title="Spend")
    root = parse(svg)
    bars = [r for r in root.iter(f"{SVG}rect")]
    assert len(bars) == 3
    heights = [float(b.get("height")) for b in bars]
    assert heights[1] == max(heights) and heights[2] == 0
    assert heights[1] / heights[0] == 4
    assert root.find(f"{SVG}title").text == "Spend"


def test_text_is_escaped():
    svg = charts.hbar_chart([("<script>alert(1)</script>", Decimal("1.5"))], title='a "quoted" & <b>title</b>')
    assert "<script>" not in str(svg)
    root = parse(svg)
    assert root.get("aria-label") == 'a "quoted" & <b>title</b>'


def test_line_chart_with_forecast_and_cap():
    chart = charts.LineChart(
        title="Burn-down",
        x_labels=[str(d) for d in range(1, 31)],
        series=[
            charts.Series(name="spent", values=[Decimal(i) for i in range(10)]),
            charts.Series(name="forecast", values=[Decimal(9), Decimal(30)], dashed=True, offset=9),
        ],
        hlines=[charts.HLine(value=Decimal(25), label="cap $25")],
    )
    root = parse(chart.render())
    lines = list(root.iter(f"{SVG}polyline"))
    assert len(lines) == 2 and lines[1].get("stroke-dasharray")
    first_point_of_forecast = lines[1].get("points").split()[0]
    assert first_point_of_forecast == lines[0].get("points").split()[-1]  # the forecast continues the actual line
    assert any(t.text == "cap $25" for t in root.iter(f"{SVG}text"))


def test_axis_labels_and_money_format():
    assert charts.usd(Decimal("1234.567")) == "$1,234.57"
    assert charts.usd(Decimal("-2")) == "-$2.00"
    assert charts.usd(None) == "—"
    assert charts.usd_short(1250) == "$1.25k" and charts.usd_short(0) == "$0" and charts.usd_short(0.5) == "$0.50"
    assert charts._nice_max(3785.59) == 5000 and charts._nice_max(0.003) == 0.005 and charts._nice_max(0) == 1.0
