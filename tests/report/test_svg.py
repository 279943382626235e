"""Inline SVG plots: well-formed, self-contained, labelled, and honest about how many samples they show."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from vllm_gate.load.samples import percentile
from vllm_gate.report.svg import RunPoint, bin_counts, histogram, multi_series, runs_plot, time_series

SVG = "{http://www.w3.org/2000/svg}"
# Spread, skewed latencies with repeats and a long tail, fixed so every run plots the same thing.
LATENCIES = [10 + (i * 37 % 101) + (400 if i % 17 == 0 else 0) for i in range(200)]


def parsed(svg: str, title: str, points: int) -> ET.Element:
    """The SVG as XML, after the checks every plot must pass."""
    root = ET.fromstring(svg)  # noqa: S314 (markup this module just built)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("width")
    assert root.get("height")
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    assert root[0].tag == f"{SVG}title"
    assert root[0].text == title
    assert root.get("data-points") == str(points)
    assert re.findall(r"https?://[^\s\"'<>]*", svg) == ["http://www.w3.org/2000/svg"]
    assert "<script" not in svg.lower()
    assert "javascript:" not in svg.lower()
    for element in root.iter():
        assert not any(name.startswith("on") or name.endswith("href") for name in element.attrib), element.attrib
    return root


def texts(root: ET.Element, cls: str) -> list[str]:
    return [e.text or "" for e in root.iter(f"{SVG}text") if e.get("class") == cls]


def test_bin_counts_by_hand():
    # Width 2 from 0 to 10: the max belongs to the last bin, each edge value to the bin it opens.
    assert bin_counts([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 5) == [2, 2, 2, 2, 3]
    assert bin_counts([7.5, 7.5, 7.5], 30) == [3]
    assert bin_counts([], 30) == []
    with pytest.raises(ValueError, match="bins must be at least 1"):
        bin_counts([1.0], 0)


@pytest.mark.parametrize("values", [LATENCIES, [i * 0.1 for i in range(31)], [1e-9, 1.0, 1.0 + 1e-12]])
def test_every_value_lands_in_exactly_one_bin(values: list[float]):
    counts = bin_counts(values, 30)
    assert len(counts) == 30
    assert sum(counts) == len(values)


def test_histogram_bars_ticks_and_counts():
    svg = histogram("TTFT", LATENCIES, bins=25)
    root = parsed(svg, "TTFT", len(LATENCIES))
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("data-count") is not None]
    assert [int(b.get("data-count")) for b in bars] == bin_counts(LATENCIES, 25)
    assert sum(int(b.get("data-count")) for b in bars) == len(LATENCIES)
    assert texts(root, "heading") == ["TTFT"]
    labels = texts(root, "tick-label")
    assert labels == [f"min {min(LATENCIES):.4g} ms", f"p50 {percentile(LATENCIES, 50):.4g} ms",
                      f"p95 {percentile(LATENCIES, 95):.4g} ms", f"max {max(LATENCIES):.4g} ms"]
    y_labels = [e.text for e in root.iter(f"{SVG}text") if e.get("text-anchor") == "end" and e.get("class") is None]
    assert y_labels == ["0", str(max(bin_counts(LATENCIES, 25)))]
    assert histogram("TTFT", LATENCIES, bins=25) == svg


def test_histogram_of_one_repeated_value_and_of_non_finite_values():
    root = parsed(histogram("ITL", [5.0, 5.0, math.nan, math.inf], unit="µs"), "ITL", 2)
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("data-count") is not None]
    assert [b.get("data-count") for b in bars] == ["2"]
    assert texts(root, "tick-label")[0] == "min 5 µs"


@pytest.mark.parametrize("svg", [histogram("E2E", []), histogram("E2E", [math.nan]), time_series("E2E", [], "ms"),
                                 multi_series("E2E", {"a": [], "b": [(1.0, math.nan)]}, "ms")])
def test_no_samples_gives_a_small_plot_saying_so(svg: str):
    root = parsed(svg, "E2E", 0)
    assert texts(root, "empty") == ["no samples"]
    assert int(root.get("height")) < 100


def test_title_and_names_are_escaped():
    title = '<b>p95</b> & "quoted"'
    svg = multi_series(title, {"<b>a</b>": [(0.0, 1.0), (1.0, 2.0)], "b & c": [(0.5, 3.0)]}, "<ms>")
    assert "<b>" not in svg
    root = parsed(svg, title, 3)
    assert texts(root, "legend") == ["<b>a</b>", "b & c"]
    assert "1 <ms>" in [e.text for e in root.iter(f"{SVG}text")]
    parsed(histogram(title, [1.0, 2.0], unit="<ms>"), title, 2)


def test_time_series_line_labels_and_points():
    points = [(0.0, 12.0), (1.0, 30.5), (2.0, 8.25), (3.0, 19.0), (4.0, 12.0)]
    svg = time_series("latency p50 e2e (ms)", points, "ms")
    root = parsed(svg, "latency p50 e2e (ms)", 5)
    [line] = list(root.iter(f"{SVG}polyline"))
    assert len(line.get("points").split()) == 5
    assert texts(root, "y-label") == ["max", "30.5 ms", "min", "8.25 ms"]
    assert texts(root, "tick-label") == ["0 s", "4 s"]
    assert texts(root, "legend") == []  # one line needs no legend
    assert texts(root, "x-name") == ["seconds since start"]
    assert time_series("latency p50 e2e (ms)", points, "ms") == svg


def test_time_series_orders_points_by_time_and_shows_a_flat_line_once():
    root = parsed(time_series("errors/s", [(2.0, 0.0), (0.0, 0.0), (1.0, 0.0)], "errors/s"), "errors/s", 3)
    [line] = list(root.iter(f"{SVG}polyline"))
    xs = [float(pair.split(",")[0]) for pair in line.get("points").split()]
    assert xs == sorted(xs)
    assert texts(root, "y-label") == ["flat", "0 errors/s"]


def test_multi_series_legend_and_per_series_counts():
    series = {"requests/s": [(0.0, 2.0), (1.0, 1.0), (2.0, 3.0)], "errors/s": [(0.0, 0.0), (1.0, 1.0)],
              "single": [(1.5, 2.5)]}
    root = parsed(multi_series("rates", series, "1/s"), "rates", 6)
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "series"]
    assert [(g.get("data-name"), g.get("data-points")) for g in groups] == [
        ("requests/s", "3"), ("errors/s", "2"), ("single", "1")]
    assert len(list(groups[2].iter(f"{SVG}circle"))) == 1  # one point cannot make a line
    assert texts(root, "legend") == list(series)
    colours = [g[0].get("stroke") for g in groups[:2]]
    assert len(set(colours)) == 2


def runs(values: list[float], images: list[str]) -> list[RunPoint]:
    """Earlier runs a day apart, the last one this run."""
    start = datetime(2026, 11, 20, 2, 30, tzinfo=UTC)
    last = len(values) - 1
    return [RunPoint(start + timedelta(days=i), value, image, "this run" if i == last else f"run {i}",
                     this_run=i == last) for i, (value, image) in enumerate(zip(values, images, strict=True))]


def point_ys(root: ET.Element) -> list[float]:
    return [float(c.get("cy")) for c in root.iter(f"{SVG}circle")]


def test_runs_plot_draws_each_run_dated_the_limit_and_where_the_image_changed():
    points = runs([70.0, 80.0, 75.0, 95.5], ["img-a", "img-a", "img-b", "img-b"])
    svg = runs_plot("ttft p95", points, 600, "<=", "ms")
    root = parsed(svg, "ttft p95", 4)
    assert [c.get("class") for c in root.iter(f"{SVG}circle")] == ["run", "run", "run", "this-run"]
    assert [c[0].text for c in root.iter(f"{SVG}circle")] == [
        "run 0, 2026-11-20 02:30 UTC: 70 ms; image img-a", "run 1, 2026-11-21 02:30 UTC: 80 ms; image img-a",
        "run 2, 2026-11-22 02:30 UTC: 75 ms; image img-b", "this run, 2026-11-23 02:30 UTC: 95.5 ms; image img-b"]
    # Higher values are drawn higher (smaller y), the limit above them all.
    ys = point_ys(root)
    assert ys[3] < ys[1] < ys[2] < ys[0]
    [limit] = [e for e in root.iter(f"{SVG}line") if e.get("class") == "limit"]
    assert float(limit.get("y1")) < min(ys)
    assert texts(root, "limit-label") == ["limit <= 600 ms"]
    assert texts(root, "run-date") == ["11-20", "11-21", "11-22", "11-23"]
    assert texts(root, "run-time") == ["02:30"] * 4
    assert texts(root, "this-run") == ["this run"]
    changes = [g for g in root.iter(f"{SVG}g") if g.get("class") == "image-change"]
    assert [g[0].text for g in changes] == ["image changed to img-b"]  # only where it changed
    assert runs_plot("ttft p95", points, 600, "<=", "ms") == svg


def test_runs_plot_of_a_floor_draws_the_limit_below_and_leaves_out_a_run_without_data():
    points = runs([900.0, 880.0, math.nan], ["a", "a", "a"])
    root = parsed(runs_plot("min output tokens/s", points, 500, ">=", "tok/s"), "min output tokens/s", 2)
    [limit] = [e for e in root.iter(f"{SVG}line") if e.get("class") == "limit"]
    assert float(limit.get("y1")) > max(point_ys(root))
    assert texts(root, "limit-label") == ["limit >= 500 tok/s"]
    assert texts(root, "this-run") == []  # this run had no data: no point, no label
    assert texts(root, "y-label") == ["900 tok/s", "500 tok/s"]


def test_runs_plot_dates_every_kth_run_when_they_cannot_all_fit_always_this_one():
    points = runs([float(i) for i in range(40)], ["a"] * 40)
    root = parsed(runs_plot("ttft p95", points, 600, "<=", "ms"), "ttft p95", 40)
    dates = texts(root, "run-date")
    assert 1 < len(dates) < 40
    assert dates[-1] == "12-29"  # this run's date
    xs = [float(e.get("x")) for e in root.iter(f"{SVG}text") if e.get("class") == "run-date"]
    assert min(b - a for a, b in itertools.pairwise(xs)) >= 7 * 5  # five characters each, none overlapping


def test_runs_plot_escapes_images_and_units():
    points = runs([1.0, 2.0], ["<b>a</b>", 'b & "c"'])
    svg = runs_plot("<p95>", points, 3, "<=", "<ms>")
    assert "<b>" not in svg
    root = parsed(svg, "<p95>", 2)
    assert [g[0].text for g in root.iter(f"{SVG}g") if g.get("class") == "image-change"] == [
        'image changed to b & "c"']


def test_time_axis_says_what_a_point_stands_for_escaped():
    root = parsed(time_series("requests/s", [(0.0, 3.0), (4.0, 2.75)], "req/s", "per 4 s bin <as a rate>"),
                  "requests/s", 2)
    assert texts(root, "x-name") == ["per 4 s bin <as a rate>"]
