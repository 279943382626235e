"""The SLO table of the sign-off report: each SLO with its measured value, limit, margin and result."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from vllm_gate.load.slo import SloResult

COLUMNS = ("metric", "measured", "limit", "margin", "result")
NO_DATA = "no data"
DIGITS = 4  # significant digits, or more where the whole part has more: it is always printed in full
MAX_DECIMALS = 9  # below a nanosecond (or a billionth of a ratio) is nothing an SLO tells apart


def _with_unit(text: str, unit: str) -> str:
    return f"{text} {unit}".rstrip()


def plain(value: float, signed: bool = False) -> str:
    """A number as a person reads it, never in exponent notation: "11,790", "0.00042", "-250,000", "+2.5".

    Every digit of the whole part with thousands separators, and decimals to DIGITS significant digits (at most
    MAX_DECIMALS), trailing zeros dropped. ``signed``: a "+" before a positive value or zero.
    """
    if not math.isfinite(value):
        return f"{value:+}" if signed and value > 0 else f"{value}"
    magnitude = math.floor(math.log10(abs(value))) if value else 0
    decimals = min(max(0, DIGITS - 1 - magnitude), MAX_DECIMALS)
    text = f"{value:{'+' if signed else ''},.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text.lstrip("+-") == "0":
        # A miss too small to print still shows its side; only an exact zero (-0.0 too) is on the limit.
        return "-0" if value < 0 else "+0" if signed else "0"
    return text


def margin(result: SloResult) -> float:
    """How far the measured value is from the limit in the passing direction: negative when it misses."""
    if result.op == ">=":
        return result.measured - result.limit
    return result.limit - result.measured


def _row(result: SloResult) -> str:
    # No measurement cannot pass, whatever the result says.
    missing = math.isnan(result.measured)
    passed = result.passed and not missing
    verdict = "pass" if passed else "fail"
    measured = NO_DATA if missing else _with_unit(plain(result.measured), result.unit)
    room = "—" if missing else _with_unit(plain(margin(result), signed=True), result.unit)
    note = f'<br><span class="note">{escape(result.note)}</span>' if result.note else ""
    cells = (f'<th scope="row">{escape(result.name)}{note}</th>',
             f'<td class="measured">{escape(measured)}</td>',
             f'<td class="limit">{escape(_with_unit(f"{result.op} {plain(result.limit)}", result.unit))}</td>',
             f'<td class="margin">{escape(room)}</td>',
             f'<td class="result {verdict}">{verdict.upper()}</td>')
    return f'<tr class="{verdict}">{"".join(cells)}</tr>'


def slo_table(results: Sequence[SloResult]) -> str:
    """An HTML table, one row per SLO; rows and result cells carry class "pass" or "fail" for styling."""
    head = "".join(f'<th scope="col">{name}</th>' for name in COLUMNS)
    rows = "\n".join(_row(r) for r in results)
    return f'<table class="vllm-gate-slo">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>'
