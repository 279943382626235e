"""Inline SVG plots as strings: self-contained (no URL but the namespace, no script) and deterministic."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from vllm_gate.load.samples import percentile
from vllm_gate.report.numbers import plain

WIDTH, HEIGHT = 640, 320
EMPTY_WIDTH, EMPTY_HEIGHT = 320, 60
LEFT, TOP = 70, 40  # room for the y labels and the title
BOTTOM, SERIES_BOTTOM = 75, 40  # four rows of histogram ticks; a time axis and its name
RIGHT, LEGEND_RIGHT = 20, 170
TICK_ROW = 13
CHAR_WIDTH = 7  # at most, for one character of an 11 px sans-serif label
RUNS_BOTTOM = 3 * TICK_ROW + 10  # under a runs plot: each run's date, its time, the axis name
RUN_LABEL_WIDTH = 42  # room for one run's date ("11-25") or image mark beside the next
RUNS_PAD = 0.08  # of the value range, above and below, so no point sits on the plot's edge
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _num(value: float) -> str:
    return plain(value)


def _at(value: float) -> str:
    """A coordinate, rounded so that the same input always gives the same text."""
    return f"{value:.1f}"


def _with_unit(value: float, unit: str) -> str:
    return f"{_num(value)} {unit}".rstrip()


def _svg(title: str, points: int, width: int, height: int, body: list[str]) -> str:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" class="vllm-gate-plot" data-points="{points}" '
            f'font-family="sans-serif" font-size="11">')
    heading = (f'<text class="heading" x="{width / 2:g}" y="20" text-anchor="middle" font-size="14" '
               f'font-weight="bold">{escape(title)}</text>')
    return "\n".join([head, f"<title>{escape(title)}</title>", heading, *body, "</svg>"])


def _empty(title: str) -> str:
    note = (f'<text class="empty" x="{EMPTY_WIDTH / 2:g}" y="45" text-anchor="middle" '
            f'fill="#666">no samples</text>')
    return _svg(title, 0, EMPTY_WIDTH, EMPTY_HEIGHT, [note])


def _fit(anchor: str, x: float, label: str) -> str:
    """Anchor a centred label near the plot's left or right edge to that edge, so none of it is cut off."""
    if anchor != "middle":
        return anchor
    half = len(label) * CHAR_WIDTH / 2
    if x + half > WIDTH:
        return "end"
    return "start" if x - half < 0 else anchor


def _scale(lo: float, hi: float, out_lo: float, out_hi: float) -> tuple[float, float]:
    """Slope and offset mapping [lo, hi] onto [out_lo, out_hi]; lo < hi."""
    slope = (out_hi - out_lo) / (hi - lo)
    return slope, out_lo - slope * lo


def bin_counts(values: Sequence[float], bins: int) -> list[int]:
    """How many values fall in each of ``bins`` equal bins from min to max (the last bin holds the max).

    All values equal: one bin holding them all.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, not {bins}")
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi == lo:
        return [len(values)]
    counts = [0] * bins
    width = (hi - lo) / bins
    for value in values:
        # min() keeps the max, and any rounding just below a bin edge, inside the last bin.
        counts[min(int((value - lo) / width), bins - 1)] += 1
    return counts


def histogram(title: str, values_ms: Sequence[float], unit: str = "ms", bins: int = 30) -> str:
    """A latency distribution: one bar per bin, ticks at min, median, p95 and max, counts on the y axis."""
    values = [v for v in values_ms if math.isfinite(v)]  # a NaN or infinity has no place on an axis
    if not values:
        return _empty(title)
    counts = bin_counts(values, bins)
    lo, hi = min(values), max(values)
    x_lo, x_hi = (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)  # one value: a bar of width 1 around it
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM
    xs, xc = _scale(x_lo, x_hi, x0, x1)
    top = max(counts)
    width = (x_hi - x_lo) / len(counts)
    body = ['<g class="bars" fill="#4c78a8">']
    for i, count in enumerate(counts):
        left, right = x_lo + i * width, x_lo + (i + 1) * width
        height = (y1 - y0) * count / top
        body.append(f'<rect x="{_at(xs * left + xc)}" y="{_at(y1 - height)}" width="{_at(xs * width)}" '
                    f'height="{_at(height)}" data-count="{count}"><title>{escape(_num(left))}–'
                    f'{escape(_with_unit(right, unit))}: {count}</title></rect>')
    body.append("</g>")
    body += _axes(x0, x1, y0, y1)
    body += [f'<text x="{x0 - 6}" y="{_at(y1 + 4)}" text-anchor="end">0</text>',
             f'<text x="{x0 - 6}" y="{_at(y0 + 4)}" text-anchor="end">{top}</text>',
             f'<text x="16" y="{_at((y0 + y1) / 2)}" text-anchor="middle" '
             f'transform="rotate(-90 16 {_at((y0 + y1) / 2)})">count</text>']
    ticks = (("min", lo, "start"), ("p50", percentile(values, 50), "middle"),
             ("p95", percentile(values, 95), "middle"), ("max", hi, "end"))
    for row, (name, value, anchor) in enumerate(ticks, 1):
        # One row each, so ticks close together never print over one another.
        x, label_y = xs * value + xc, y1 + row * TICK_ROW
        label = f"{name} {_with_unit(value, unit)}"
        dash = ' stroke-dasharray="4 3"' if name in ("p50", "p95") else ""
        top_y = y0 if dash else y1
        body += [f'<line class="tick" x1="{_at(x)}" y1="{top_y}" x2="{_at(x)}" y2="{label_y - 10}" '
                 f'stroke="#333"{dash}/>',
                 f'<text class="tick-label" x="{_at(x)}" y="{label_y}" text-anchor="{_fit(anchor, x, label)}">'
                 f'{escape(label)}</text>']
    return _svg(title, len(values), WIDTH, HEIGHT, body)


def _axes(x0: float, x1: float, y0: float, y1: float) -> list[str]:
    return [f'<line class="axis" x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#333"/>',
            f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>']


TIME_AXIS = "seconds since start"


def time_series(title: str, points: Sequence[tuple[float, float]], unit: str, x_name: str = TIME_AXIS) -> str:
    """One line over time: x in seconds since the start, y labelled with its min and max.

    ``x_name``: the time axis's name, which says what each point stands for (the bin it averages).
    """
    return multi_series(title, {title: points}, unit, x_name)


def multi_series(title: str, series: Mapping[str, Sequence[tuple[float, float]]], unit: str,
                 x_name: str = TIME_AXIS) -> str:
    """Several lines over time on one y axis, with a legend when there is more than one."""
    finite = {name: sorted((x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y))
              for name, pts in series.items()}
    xs_all = [x for pts in finite.values() for x, _ in pts]
    ys_all = [y for pts in finite.values() for _, y in pts]
    if not xs_all:
        return _empty(title)
    legend = len(finite) > 1
    x0, x1, y0, y1 = LEFT, WIDTH - (LEGEND_RIGHT if legend else RIGHT), TOP, HEIGHT - SERIES_BOTTOM
    x_lo, x_hi = min(0.0, *xs_all), max(xs_all)
    if x_hi == x_lo:
        x_hi = x_lo + 1
    y_min, y_max = min(ys_all), max(ys_all)
    y_lo, y_hi = (y_min, y_max) if y_max > y_min else (y_min - 1, y_max + 1)  # flat: the line mid-height
    xs, xc = _scale(x_lo, x_hi, x0, x1)
    ys, yc = _scale(y_lo, y_hi, y1, y0)
    body = _axes(x0, x1, y0, y1)
    for i, (name, pts) in enumerate(finite.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = [(_at(xs * x + xc), _at(ys * y + yc)) for x, y in pts]
        body.append(f'<g class="series" data-name="{escape(name)}" data-points="{len(pts)}">')
        if len(coords) == 1:
            body.append(f'<circle cx="{coords[0][0]}" cy="{coords[0][1]}" r="2.5" fill="{colour}"/>')
        elif coords:
            line = " ".join(f"{x},{y}" for x, y in coords)
            body.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        body.append("</g>")
        if legend:
            ly = y0 + 16 * i
            body += [f'<rect x="{x1 + 12}" y="{ly}" width="10" height="10" fill="{colour}"/>',
                     f'<text class="legend" x="{x1 + 28}" y="{ly + 9}">{escape(name)}</text>']
    y_labels = ([("flat", y_min)] if y_min == y_max else [("max", y_max), ("min", y_min)])
    for name, value in y_labels:
        # Name and value on two lines: the left margin is too narrow for both on one.
        y = ys * value + yc
        body += [f'<text class="y-label" x="{x0 - 6}" y="{_at(y + 4)}" text-anchor="end">{name}</text>',
                 f'<text class="y-label" x="{x0 - 6}" y="{_at(y + 16)}" text-anchor="end">'
                 f'{escape(_with_unit(value, unit))}</text>']
    for value, anchor in ((x_lo, "start"), (x_hi, "end")):
        x = _at(xs * value + xc)
        body.append(f'<text class="tick-label" x="{x}" y="{y1 + TICK_ROW}" text-anchor="{anchor}">'
                    f'{_num(value)} s</text>')
    body.append(f'<text class="x-name" x="{(x0 + x1) / 2:g}" y="{y1 + 2 * TICK_ROW}" text-anchor="middle">'
                f"{escape(x_name)}</text>")
    return _svg(title, len(xs_all), WIDTH, HEIGHT, body)


@dataclass(frozen=True)
class RunPoint:
    """One run's value of a metric: when it finished, what served, and whether it is this run."""

    when: datetime
    value: float
    image: str
    about: str  # which run it is, for the point's hover text ("certification 12", "this run")
    this_run: bool = False


def _range(values: Sequence[float]) -> tuple[float, float]:
    """An axis range holding ``values`` with a margin, so no point or line sits on the plot's edge."""
    lo, hi = min(values), max(values)
    pad = (hi - lo) * RUNS_PAD or abs(hi) * RUNS_PAD or 1.0
    return lo - pad, hi + pad


def _runs_labels(points: Sequence[RunPoint], xs: Sequence[float], slot: float, y1: float) -> list[str]:
    """Each run's date and time under its point; every k-th only when they would not fit side by side."""
    step = math.ceil(RUN_LABEL_WIDTH / slot)
    last = len(points) - 1
    body = []
    for i, (point, x) in enumerate(zip(points, xs, strict=True)):
        if (last - i) % step:  # counted from this run, which is always labelled
            continue
        when = point.when.astimezone(UTC)
        body += [f'<text class="run-date" x="{_at(x)}" y="{_at(y1 + TICK_ROW)}" text-anchor="middle">'
                 f"{when:%m-%d}</text>",
                 f'<text class="run-time" x="{_at(x)}" y="{_at(y1 + 2 * TICK_ROW)}" text-anchor="middle">'
                 f"{when:%H:%M}</text>"]
    years = sorted({f"{p.when.astimezone(UTC):%Y}" for p in points})
    body.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2:g}" y="{_at(y1 + 3 * TICK_ROW + 2)}" text-anchor="middle">'
                f"run finished (UTC), {escape('–'.join((years[0], years[-1])) if len(years) > 1 else years[0])}"
                "</text>")
    return body


def runs_plot(title: str, points: Sequence[RunPoint], limit: float, op: str, unit: str) -> str:
    """A metric over runs, oldest first, this run last: the limit dashed, each point dated and its image hovered.

    A dotted mark stands where the image changed from the run before (the new image in its hover text).
    """
    points = [p for p in points if math.isfinite(p.value)]
    if not points:
        return _empty(title)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - RUNS_BOTTOM
    slot = (x1 - x0) / len(points)
    xs = [x0 + slot * (i + 0.5) for i in range(len(points))]
    values = [p.value for p in points]
    bounds = [*values, limit] if math.isfinite(limit) else values
    y_lo, y_hi = _range(bounds)
    ys, yc = _scale(y_lo, y_hi, y1, y0)
    body = _axes(x0, x1, y0, y1)
    for i in range(1, len(points)):
        if points[i].image == points[i - 1].image:
            continue
        x = _at(xs[i] - slot / 2)
        label = (f'<text class="image-change" x="{x}" y="{TOP - 5}" text-anchor="middle">image</text>'
                 if slot >= RUN_LABEL_WIDTH else "")
        body.append(f'<g class="image-change"><title>image changed to {escape(points[i].image)}</title>'
                    f'<line x1="{x}" y1="{y0}" x2="{x}" y2="{y1}" stroke="#8c564b" stroke-dasharray="2 3"/>'
                    f"{label}</g>")
    if math.isfinite(limit):
        y = ys * limit + yc
        label_y = y - 4 if y - y0 > TICK_ROW + 2 else y + TICK_ROW  # below the line when it runs along the top
        body += [f'<line class="limit" x1="{x0}" y1="{_at(y)}" x2="{x1}" y2="{_at(y)}" stroke="#cf222e" '
                 f'stroke-dasharray="6 4"/>',
                 f'<text class="limit-label" x="{x0 + 4}" y="{_at(label_y)}" fill="#a40e26">'
                 f"limit {escape(op)} {escape(_with_unit(limit, unit))}</text>"]
    coords = [(_at(x), _at(ys * p.value + yc)) for x, p in zip(xs, points, strict=True)]
    body.append(f'<g class="series" data-points="{len(points)}">')
    if len(coords) > 1:
        line = " ".join(f"{x},{y}" for x, y in coords)
        body.append(f'<polyline points="{line}" fill="none" stroke="{COLOURS[0]}" stroke-width="1.5"/>')
    for (x, y), point in zip(coords, points, strict=True):
        colour, radius = (COLOURS[3], 4.5) if point.this_run else (COLOURS[0], 3)
        hover = (f"{point.about}, {point.when.astimezone(UTC):%Y-%m-%d %H:%M} UTC: "
                 f"{_with_unit(point.value, unit)}; image {point.image}")
        body.append(f'<circle class="{"this-run" if point.this_run else "run"}" cx="{x}" cy="{y}" r="{radius}" '
                    f'fill="{colour}"><title>{escape(hover)}</title></circle>')
    body.append("</g>")
    last_y = ys * points[-1].value + yc
    if points[-1].this_run:
        # Above its point, or below when the point is near the top, where the image marks are.
        label_y = last_y - 8 if last_y - y0 > 2 * TICK_ROW else last_y + 16
        anchor = _fit("middle", xs[-1], "this run")
        body.append(f'<text class="this-run" x="{_at(xs[-1])}" y="{_at(label_y)}" text-anchor="{anchor}">'
                    "this run</text>")
    for value in sorted({min(bounds), max(bounds)}, reverse=True):  # the highest and lowest of runs and limit
        body.append(f'<text class="y-label" x="{x0 - 6}" y="{_at(ys * value + yc + 4)}" text-anchor="end">'
                    f"{escape(_with_unit(value, unit))}</text>")
    body += _runs_labels(points, xs, slot, y1)
    return _svg(title, len(points), WIDTH, HEIGHT, body)


def capacity_plot(title: str, series: Mapping[str, Sequence[tuple[float, float]]], unit: str, *,
                  limits: Mapping[str, float], knee: int | None) -> str:
    """Values against concurrency (users), one line per series with its limit dashed in the same colour, and the
    knee (the highest concurrency that held) marked."""
    finite = {name: sorted((x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y))
              for name, pts in series.items()}
    xs_all = [x for pts in finite.values() for x, _ in pts]
    if not xs_all:
        return _empty(title)
    ys_all = [y for pts in finite.values() for _, y in pts] + [v for v in limits.values() if math.isfinite(v)]
    x0, x1, y0, y1 = LEFT, WIDTH - LEGEND_RIGHT, TOP, HEIGHT - SERIES_BOTTOM
    x_lo, x_hi = 0.0, max(xs_all)
    y_lo, y_hi = _range(ys_all)
    xs, xc = _scale(x_lo, x_hi, x0, x1)
    ys, yc = _scale(y_lo, y_hi, y1, y0)
    body = _axes(x0, x1, y0, y1)
    if knee is not None:
        x = _at(xs * knee + xc)
        body += [f'<line class="knee" x1="{x}" y1="{y0}" x2="{x}" y2="{y1}" stroke="#333" stroke-dasharray="2 3"/>',
                 f'<text class="knee-label" x="{x}" y="{TOP - 5}" text-anchor="{_fit("middle", float(x), "knee")}">'
                 f"knee {knee}</text>"]
    for i, (name, pts) in enumerate(finite.items()):
        colour = COLOURS[i % len(COLOURS)]
        if name in limits and math.isfinite(limits[name]):
            y = _at(ys * limits[name] + yc)
            body.append(f'<line class="limit" data-name="{escape(name)}" x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" '
                        f'stroke="{colour}" stroke-dasharray="6 4" stroke-opacity="0.7"/>')
        coords = [(_at(xs * x + xc), _at(ys * y + yc)) for x, y in pts]
        body.append(f'<g class="series" data-name="{escape(name)}" data-points="{len(pts)}">')
        if len(coords) > 1:
            body.append(f'<polyline points="{" ".join(f"{x},{y}" for x, y in coords)}" fill="none" '
                        f'stroke="{colour}" stroke-width="1.5"/>')
        body += [f'<circle cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>' for x, y in coords]
        body.append("</g>")
        ly = y0 + 16 * i
        body += [f'<rect x="{x1 + 12}" y="{ly}" width="10" height="10" fill="{colour}"/>',
                 f'<text class="legend" x="{x1 + 28}" y="{ly + 9}">{escape(name)}</text>']
    for value in sorted({y_lo, y_hi}, reverse=True):
        body.append(f'<text class="y-label" x="{x0 - 6}" y="{_at(ys * value + yc + 4)}" text-anchor="end">'
                    f"{escape(_with_unit(value, unit))}</text>")
    for value, anchor in ((x_lo, "start"), (x_hi, "end")):
        body.append(f'<text class="tick-label" x="{_at(xs * value + xc)}" y="{y1 + TICK_ROW}" '
                    f'text-anchor="{anchor}">{_num(value)}</text>')
    body.append(f'<text class="x-name" x="{(x0 + x1) / 2:g}" y="{y1 + 2 * TICK_ROW}" text-anchor="middle">'
                "concurrent users (one step each; dashed: the SLO limit)</text>")
    return _svg(title, len(xs_all), WIDTH, HEIGHT, body)
