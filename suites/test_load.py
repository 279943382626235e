"""The Locust load test meets every SLO of the spec, and has not fallen behind the last passed run."""

from __future__ import annotations

import pytest

from vllm_gate.verdict.regression import capacity_problems, regression_problems


def test_slo(gate_load, gate_run, slo_name):
    result = next(r for r in gate_run.slo_results if r.name == slo_name)
    assert result.passed, result.line()


def test_capacity_search(gate_capacity, gate_spec):
    if gate_capacity is None:
        pytest.skip("no capacity search asked: capacity.enabled in the spec, or --find-capacity")
    # No step held, or a budget spent before the knee was resolved: no capacity known to its stated resolution.
    assert gate_capacity.knee is not None, gate_capacity.headline()
    assert gate_capacity.complete, (f"{gate_capacity.headline()}: raise capacity.budget_s "
                                    f"({gate_spec.capacity.budget_s:g} s) or capacity.resolution")


def test_no_regression_against_the_last_passed_run(gate_load, gate_run, gate_last_run, gate_spec, gate_baseline,
                                                   gate_capacity):
    if gate_last_run.no_history:
        pytest.skip(gate_last_run.no_history)
    now = {r.name: r.measured for r in gate_run.slo_results}
    if gate_last_run.past is None:
        gate_baseline(f"nothing to compare with ({gate_last_run.past_from}); this run's numbers are recorded if "
                      "it passes")
        return
    problems = regression_problems(now, gate_run.image(), gate_run.started_at, gate_last_run.past,
                                   gate_last_run.past_from, gate_spec.regression)
    if gate_capacity is not None:
        problems += capacity_problems(gate_capacity, gate_run.image(), gate_run.started_at, gate_last_run.past,
                                      gate_last_run.past_from, gate_spec.capacity.max_drop)
    compared = ", ".join(f"{name} {value:.4g} (was {gate_last_run.past.slo_values[name]:.4g})"
                         for name, value in now.items() if name in gate_last_run.past.slo_values)
    if gate_capacity is not None and gate_last_run.past.knee is not None:
        compared = ", ".join(part for part in (compared, f"capacity {gate_capacity.knee} users (was "
                                                         f"{gate_last_run.past.knee})") if part)
    gate_run.telemetry.append(f"regression: against {gate_last_run.past_from}: {compared}")
    assert not problems, "; ".join(problems)
