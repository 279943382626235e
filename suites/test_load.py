"""The Locust load test meets every SLO of the spec."""

from __future__ import annotations


def test_slo(gate_load, gate_run, slo_name):
    result = next(r for r in gate_run.slo_results if r.name == slo_name)
    assert result.passed, result.line()
