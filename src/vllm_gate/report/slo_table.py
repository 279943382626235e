"""The SLO table of the sign-off report: each SLO with its measured value, limit, margin and result."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from vllm_gate.load.slo import SloResult
from vllm_gate.report.numbers import plain

COLUMNS = ("metric", "measured", "limit", "margin", "result")
NO_DATA = "no data"


def _with_unit(text: str, unit: str) -> str:
    return f"{text} {unit}".rstrip()


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
