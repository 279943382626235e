"""The SLO table: one row per SLO, margins in the passing direction, missing data failing, names escaped."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from vllm_gate.load.slo import SloResult
from vllm_gate.report.numbers import plain
from vllm_gate.report.slo_table import margin, slo_table

RESULTS = [
    SloResult("ttft p95", 400.0, 500.0, True, "ms"),                # ceiling met by 100 ms
    SloResult("e2e p99", 2500.0, 2000.0, False, "ms"),              # ceiling missed by 500 ms
    SloResult("error rate", 0.02, 0.01, False, ""),                 # ceiling missed, no unit
    SloResult("min output tokens/s", 80.0, 100.0, False, "tok/s"),  # floor missed by 20
    SloResult("goodput", 0.97, 0.95, True, ""),                     # floor met by 0.02
    SloResult("itl p50", math.nan, 30.0, False, "ms"),              # nothing measured
]


def rows(html: str) -> list[tuple[str | None, list[str]]]:
    """Each body row's class and its cells' text."""
    table = ET.fromstring(html)  # noqa: S314 (markup this module just built)
    assert table.tag == "table"
    assert table.get("class") == "vllm-gate-slo"
    assert [th.text for th in table.find("thead").iter("th")] == ["metric", "measured", "limit", "margin", "result"]
    return [(tr.get("class"), [cell.text or "" for cell in tr]) for tr in table.find("tbody")]


def test_one_row_per_result_with_measured_limit_margin_and_result():
    assert rows(slo_table(RESULTS)) == [
        ("pass", ["ttft p95", "400 ms", "<= 500 ms", "+100 ms", "PASS"]),
        ("fail", ["e2e p99", "2,500 ms", "<= 2,000 ms", "-500 ms", "FAIL"]),
        ("fail", ["error rate", "0.02", "<= 0.01", "-0.01", "FAIL"]),
        ("fail", ["min output tokens/s", "80 tok/s", ">= 100 tok/s", "-20 tok/s", "FAIL"]),
        ("pass", ["goodput", "0.97", ">= 0.95", "+0.02", "PASS"]),
        ("fail", ["itl p50", "no data", "<= 30 ms", "—", "FAIL"]),
    ]


@pytest.mark.parametrize(("result", "expected"), [
    (SloResult("ttft p99", 400.0, 500.0, True, "ms"), 100.0),
    (SloResult("ttft p99", 600.0, 500.0, False, "ms"), -100.0),
    (SloResult("min output tokens/s", 120.0, 100.0, True, "tok/s"), 20.0),
    (SloResult("min output tokens/s", 80.0, 100.0, False, "tok/s"), -20.0),
    (SloResult("goodput", 0.5, 0.9, False, ""), -0.4),
])
def test_margin_is_positive_on_the_passing_side_of_either_kind_of_limit(result: SloResult, expected: float):
    assert margin(result) == pytest.approx(expected)


@pytest.mark.parametrize(("value", "signed", "expected"), [
    (1.179e4, True, "+11,790"),          # the report printed "+1.179e+04"
    (11790.4, False, "11,790"),
    (-250000.0, True, "-250,000"),       # "-2.5e+05"
    (123456.7, False, "123,457"),        # every whole digit, where .4g kept four: "1.235e+05"
    (1e20, False, "100,000,000,000,000,000,000"),
    (0.00042, True, "+0.00042"),
    (0.000123456, False, "0.0001235"),   # four significant digits, however small
    (-0.3, True, "-0.3"),
    (2.5, True, "+2.5"),
    (1.23456, False, "1.235"),
    (100.0, True, "+100"),               # no trailing zeros
    (1 - 0.98, True, "+0.02"),           # nor float noise
    (9999.6, True, "+10,000"),
    (0.0, True, "+0"),                   # on the limit: passing
    (-0.0, True, "+0"),
    (-1e-12, True, "-0"),                # a miss too small to print is still a miss
    (1e-12, False, "0"),
])
def test_numbers_print_plainly_with_thousands_separators_and_never_an_exponent(value: float, signed: bool,
                                                                               expected: str):
    assert plain(value, signed=signed) == expected


def test_a_large_margin_prints_plainly_in_the_table():
    [(_, cells)] = rows(slo_table([SloResult("e2e p95", 8210.0, 20000.0, True, "ms")]))
    assert cells[1:4] == ["8,210 ms", "<= 20,000 ms", "+11,790 ms"]
    [(_, cells)] = rows(slo_table([SloResult("min output tokens/s", 0.00042, 250000.0, False, "tok/s")]))
    assert cells[1:4] == ["0.00042 tok/s", ">= 250,000 tok/s", "-250,000 tok/s"]


def test_result_cell_carries_a_class_for_styling():
    table = ET.fromstring(slo_table(RESULTS[:2]))  # noqa: S314 (markup this module just built)
    assert [td.get("class") for td in table.iter("td") if td.text in ("PASS", "FAIL")] == ["result pass", "result fail"]


def test_no_data_fails_even_when_marked_passed():
    [(verdict, cells)] = rows(slo_table([SloResult("e2e p95", math.nan, 1000.0, True, "ms")]))
    assert verdict == "fail"
    assert cells[1] == "no data"
    assert cells[4] == "FAIL"


def test_names_and_units_are_escaped():
    html = slo_table([SloResult("<b>ttft</b> & p95", 1.0, 2.0, True, "<ms>")])
    assert "<b>" not in html
    [(_, cells)] = rows(html)
    assert cells[:3] == ["<b>ttft</b> & p95", "1 <ms>", "<= 2 <ms>"]


def test_no_results_gives_an_empty_body():
    assert rows(slo_table([])) == []
