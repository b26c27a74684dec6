"""Server-rendered SVG chart geometry: the views compute rectangles here and templates draw them, so charts
need no script and no inline style (the CSP allows neither)."""

import datetime
import math
from dataclasses import dataclass, field
from decimal import Decimal

PALETTE_SIZE = 7  # series s1..s7; s8 is "other"


def nice_ceiling(value: float) -> float:
    """A round axis maximum at or above value: 1, 2, 2.5, 5 × 10^n."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return candidate
    return 10 ** (exponent + 1)


def _scaled(value: float) -> str:
    """An axis number: 250, 2.5k, 62.5M, 1.2B."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"


def _money_label(value: float) -> str:
    return f"${_scaled(value)}" if value >= 1 or value == 0 else f"${value:.2g}"


@dataclass
class Chart:
    width: int
    height: int
    left: int
    bottom: int
    top: int = 8
    bars: list = field(default_factory=list)
    ticks: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    legend: list = field(default_factory=list)
    extras: list = field(default_factory=list)
    # The figures as rows for a table under the chart: what the bars' tooltips say, for keyboards and screen
    # readers (an <svg role="img"> hides its <title>s from them).
    table: list = field(default_factory=list)

    @property
    def plot_height(self) -> int:
        return self.height - self.bottom - self.top

    @property
    def baseline(self) -> int:
        return self.height - self.bottom


def daily_team_chart(rows: list[dict], *, first_day: datetime.date, days: int = 30, width: int = 760,
                     height: int = 230) -> Chart:
    """Stacked bars per day by team from DailySpend rows {"day", "team_name", "cost_usd"}. The biggest
    PALETTE_SIZE teams get their own colour; the rest are summed as "other"."""
    totals_by_team: dict[str, Decimal] = {}
    for row in rows:
        totals_by_team[row["team_name"]] = totals_by_team.get(row["team_name"], Decimal("0")) + row["cost_usd"]
    ranked = sorted(totals_by_team, key=lambda name: -totals_by_team[name])
    series = {name: f"s{index + 1}" for index, name in enumerate(ranked[:PALETTE_SIZE])}
    per_day: dict[datetime.date, dict[str, Decimal]] = {}
    for row in rows:
        key = row["team_name"] if row["team_name"] in series else "__other__"
        day = per_day.setdefault(row["day"], {})
        day[key] = day.get(key, Decimal("0")) + row["cost_usd"]
    peak = max((sum(v.values()) for v in per_day.values()), default=Decimal("0"))
    axis_max = nice_ceiling(float(peak))
    chart = Chart(width=width, height=height, left=48, bottom=22)
    band = (width - chart.left - 4) / days
    bar_width = max(2.0, band * 0.72)
    order = [*series, "__other__"]
    for index in range(days):
        day = first_day + datetime.timedelta(days=index)
        x = chart.left + index * band + (band - bar_width) / 2
        y = float(chart.baseline)
        values = per_day.get(day, {})
        if any(values.values()):
            chart.table.append({"day": day, "total": sum(values.values()), "parts": [
                ("other teams" if name == "__other__" else (name or "unallocated"), values[name])
                for name in order if values.get(name)]})
        for name in order:
            amount = values.get(name)
            if not amount:
                continue
            h = float(amount) / axis_max * chart.plot_height
            y -= h
            label = "other teams" if name == "__other__" else (name or "unallocated")
            chart.bars.append({"x": round(x, 2), "y": round(y, 2), "w": round(bar_width, 2), "h": round(h, 2),
                               "cls": series.get(name, "s8"),
                               "title": f"{day:%b %-d} · {label}: ${amount:,.2f}"})
        if index % 5 == 0 or index == days - 1:
            chart.labels.append({"x": round(x + bar_width / 2, 2), "y": height - 6, "text": f"{day:%b %-d}"})
    for step in range(5):
        value = axis_max * step / 4
        y = chart.baseline - chart.plot_height * step / 4
        chart.ticks.append({"y": round(y, 2), "label": _money_label(value)})
    chart.legend = [{"cls": cls, "name": name or "unallocated"} for name, cls in series.items()]
    if any("__other__" in v for v in per_day.values()):
        chart.legend.append({"cls": "s8", "name": "other teams"})
    return chart


def session_token_chart(iterations: list[dict], *, loop_iterations: set[int], width: int = 760,
                        height: int = 240) -> Chart:
    """Bars per iteration: prompt tokens with completion tokens stacked on top; the growth ratio of prompt
    tokens over the previous iteration in each bar's tooltip (and printed when few enough to read); the
    iterations of a runaway-loop anomaly shaded and marked."""
    chart = Chart(width=width, height=height, left=52, bottom=22, top=18)
    count = len(iterations)
    if not count:
        return chart
    peak = max(row["prompt_tokens"] + row["completion_tokens"] for row in iterations)
    axis_max = nice_ceiling(float(peak))
    band = (width - chart.left - 4) / count
    bar_width = max(1.0, band * 0.75)
    previous = None
    label_every = max(1, math.ceil(count / 12))
    for index, row in enumerate(iterations):
        x = chart.left + index * band + (band - bar_width) / 2
        prompt, completion = row["prompt_tokens"] or 0, row["completion_tokens"] or 0
        ratio = (prompt / previous) if previous else None
        previous = prompt or None
        in_loop = row["iteration_index"] in loop_iterations
        ph = prompt / axis_max * chart.plot_height
        ch = completion / axis_max * chart.plot_height
        ratio_text = f", growth ×{ratio:.2f}" if ratio is not None else ""
        title = (f"Iteration {row['iteration_index']}: {prompt:,} prompt + {completion:,} completion tokens"
                 f"{ratio_text}{' (runaway loop)' if in_loop else ''}")
        if in_loop:
            chart.extras.append({"kind": "zone", "x": round(chart.left + index * band, 2), "y": chart.top,
                                 "w": round(band, 2), "h": chart.plot_height})
        chart.bars.append({"x": round(x, 2), "y": round(chart.baseline - ph, 2), "w": round(bar_width, 2),
                           "h": round(ph, 2), "cls": "prompt", "title": title})
        if ch:
            chart.bars.append({"x": round(x, 2), "y": round(chart.baseline - ph - ch, 2), "w": round(bar_width, 2),
                               "h": round(ch, 2), "cls": "completion", "title": title})
        if ratio is not None and count <= 40:
            chart.extras.append({"kind": "ratio", "x": round(x + bar_width / 2, 2),
                                 "y": round(max(chart.top + 8, chart.baseline - ph - ch - 4), 2),
                                 "text": f"×{ratio:.1f}", "hot": ratio > 1.4})
        if index % label_every == 0 or index == count - 1:
            chart.labels.append({"x": round(x + bar_width / 2, 2), "y": height - 6,
                                 "text": str(row["iteration_index"])})
    if loop_iterations:
        xs = [e["x"] for e in chart.extras if e["kind"] == "zone"]
        if xs:
            chart.extras.append({"kind": "loop", "x": round((min(xs) + max(xs)) / 2 + band / 2, 2),
                                 "y": chart.top - 5, "text": "runaway loop"})
    for step in range(5):
        value = axis_max * step / 4
        y = chart.baseline - chart.plot_height * step / 4
        chart.ticks.append({"y": round(y, 2), "label": _scaled(value)})
    return chart


def render_svg(chart: Chart, *, chart_id: str, title: str) -> str:
    """The chart as SVG markup (every text escaped). Built here rather than in a template loop: a session of
    1,000 iterations is 2,000 rectangles, which the template engine renders an order of magnitude slower."""
    from django.utils.html import escape
    from django.utils.safestring import mark_safe

    parts = [f'<svg class="chart" viewBox="0 0 {chart.width} {chart.height}" role="img" '
             f'aria-labelledby="{escape(chart_id)}-title"><title id="{escape(chart_id)}-title">{escape(title)}</title>']
    for tick in chart.ticks:
        parts.append(f'<line class="grid-line" x1="{chart.left}" x2="{chart.width}" y1="{tick["y"]}" '
                     f'y2="{tick["y"]}"/><text x="{chart.left - 6}" y="{tick["y"]}" text-anchor="end" '
                     f'dominant-baseline="middle">{escape(tick["label"])}</text>')
    for extra in chart.extras:
        if extra["kind"] == "zone":
            parts.append(f'<rect class="loop-zone" x="{extra["x"]}" y="{extra["y"]}" width="{extra["w"]}" '
                         f'height="{extra["h"]}"/>')
    for bar in chart.bars:
        parts.append(f'<rect class="seg {bar["cls"]}" x="{bar["x"]}" y="{bar["y"]}" width="{bar["w"]}" '
                     f'height="{bar["h"]}" rx="1"><title>{escape(bar["title"])}</title></rect>')
    for extra in chart.extras:
        if extra["kind"] == "ratio":
            css = ' class="ratio-hot"' if extra["hot"] else ""
            parts.append(f'<text x="{extra["x"]}" y="{extra["y"]}" text-anchor="middle"{css}>'
                         f'{escape(extra["text"])}</text>')
        elif extra["kind"] == "loop":
            parts.append(f'<text x="{extra["x"]}" y="{extra["y"]}" text-anchor="middle" class="loop-mark" '
                         f'dominant-baseline="hanging">⚠ {escape(extra["text"])}</text>')
    parts.append(f'<line class="axis" x1="{chart.left}" x2="{chart.width}" y1="{chart.baseline}" '
                 f'y2="{chart.baseline}"/>')
    for label in chart.labels:
        parts.append(f'<text x="{label["x"]}" y="{label["y"]}" text-anchor="middle">{escape(label["text"])}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped above
