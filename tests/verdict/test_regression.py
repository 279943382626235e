"""Tonight's numbers against the last passed run's: each regression beyond the spec's tolerance is named."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime

import pytest

from vllm_gate.load.capacity import Capacity
from vllm_gate.registry.history import PastRun
from vllm_gate.spec import CapacitySearch, Regression
from vllm_gate.verdict.regression import capacity_problems, regression_problems

THEN = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
PAST = PastRun(7, THEN, "certified", "vllm/vllm-openai:v0.11.0", "vllm-0.1.0", "existing:gpu-pool",
               {"ttft p95": 100.0, "itl p95": 30.0, "e2e p95": 3000.0, "min output tokens/s": 400.0})
DEFAULT = Regression()


def test_numbers_within_the_tolerances_pass():
    now = {"ttft p95": 119.0, "itl p95": 30.0, "e2e p95": 3500.0, "min output tokens/s": 341.0}
    assert regression_problems(now, "vllm/vllm-openai:v0.12.0", NOW, PAST, "the last certification", DEFAULT) == []


@pytest.mark.parametrize(("metric", "value", "change"), [
    ("ttft p95", 130.0, "+30%"), ("itl p95", 40.0, "+33%"), ("e2e p95", 3700.0, "+23%"),
    ("min output tokens/s", 280.0, "-30%"),
])
def test_a_regression_names_the_metric_both_values_and_both_runs(metric, value, change):
    now = {**PAST.slo_values, metric: value}
    (problem,) = regression_problems(now, "vllm/vllm-openai:v0.12.0", NOW, PAST, "the last certification",
                                     DEFAULT)
    name = metric.removeprefix("min ")
    allowed = "-15%" if metric.startswith("min") else "+20%"
    assert problem == (f"{name} regressed {change} (allowed {allowed}): {value:.4g} now (2026-11-27 02:00 UTC, "
                       f"vllm/vllm-openai:v0.12.0) vs {PAST.slo_values[metric]:.4g} at the last certification "
                       "(2026-11-26 02:00 UTC, vllm/vllm-openai:v0.11.0)")


def test_faster_or_stronger_is_never_a_regression_and_the_spec_sets_the_tolerance():
    better = {"ttft p95": 50.0, "itl p95": 10.0, "e2e p95": 1000.0, "min output tokens/s": 900.0}
    assert regression_problems(better, "x", NOW, PAST, "the last", DEFAULT) == []
    strict = Regression(latency_p95_increase=0.05, throughput_decrease=0.01)
    slower = {**PAST.slo_values, "ttft p95": 110.0}
    assert [p.split(" regressed")[0] for p in regression_problems(slower, "x", NOW, PAST, "the last", strict)] == [
        "ttft p95"]


def test_no_data_now_or_nothing_comparable_is_a_problem_never_a_pass():
    nan_now = {**PAST.slo_values, "ttft p95": math.nan}
    assert regression_problems(nan_now, "x", NOW, PAST, "the last certification", DEFAULT) == [
        "ttft p95: no data in this run, nothing to compare with the last certification"]
    other_slos = PastRun(8, THEN, "certified", "x", "c", "k", {"goodput": 1.0})
    (problem,) = regression_problems({"ttft p95": 70.0}, "x", NOW, other_slos, "the last certification", DEFAULT)
    assert problem.startswith("no metric of ttft p95, itl p95, e2e p95, min output tokens/s measured both now and at "
                              "the last certification")


def _capacity(knee: int | None, lowest_failing: int | None, ended: str = "resolved to 10%") -> Capacity:
    return Capacity(knee, lowest_failing, ("ttft p95",), (), ended, 100.0, CapacitySearch())


def _past_with(capacity: Capacity) -> PastRun:
    return dataclasses.replace(PAST, capacity=capacity.summary())


def test_a_planted_capacity_drop_fails_naming_both_numbers_and_both_images():
    past = _past_with(_capacity(16, 17))
    (problem,) = capacity_problems(_capacity(12, 13), "vllm/vllm-openai:v0.12.0", NOW, past,
                                   "the last certification", 0.15)
    assert problem == ("capacity regressed -25% (allowed -15%): 12 concurrent users now, 13 broke (2026-11-27 02:00 "
                       "UTC, vllm/vllm-openai:v0.12.0) vs 16 at the last certification (2026-11-26 02:00 UTC, "
                       "vllm/vllm-openai:v0.11.0)")
    # Within the tolerance and the resolution (14 broke, 16 x 0.85 = 13.6), or better: no problem.
    for knee, failing in ((13, 14), (16, 17), (20, 22)):
        assert capacity_problems(_capacity(knee, failing), "img", NOW, past, "the last certification", 0.15) == []
    (none,) = capacity_problems(_capacity(None, 1, "no step passed"), "img", NOW, past, "the last certification",
                                0.15)
    assert none.startswith("capacity: no step held in this run, 16 users at the last certification")


def test_capacity_is_compared_only_between_complete_searches_asked_the_same_way():
    now = _capacity(8, 9)
    assert capacity_problems(now, "img", NOW, PAST, "the last", 0.15) == []  # no search then
    unfinished = _past_with(_capacity(16, 32, "budget spent before the knee was resolved"))
    assert capacity_problems(now, "img", NOW, unfinished, "the last", 0.15) == []  # only a floor then
    finer = Capacity(16, 17, ("ttft p95",), (), "resolved to 5%", 100.0, CapacitySearch(resolution=0.05))
    assert capacity_problems(now, "img", NOW, _past_with(finer), "the last", 0.15) == []  # another measurement
