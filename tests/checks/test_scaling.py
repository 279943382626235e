"""The autoscaling test's judgement of what the HPA, the Deployment and the Service did: each way a policy fails
(no scale-out, too late, a pod removed under load, a scale-in sooner than its window or never, new pods nobody
reaches, SLOs still broken, a target past the measured capacity) is named; the readings below are the shapes
read_point takes from the API."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import pytest

from vllm_gate.base.errors import GateError
from vllm_gate.checks import scaling_watch
from vllm_gate.checks.scaling import (
    ScalePoint,
    Scaling,
    judged,
    load_users,
    overflow,
    queue_target,
    scale_in_s,
    scaling_load,
    scaling_users,
)
from vllm_gate.checks.scaling_watch import tolerant, watch_scaling
from vllm_gate.load.capacity import Capacity, Step
from vllm_gate.load.samples import LoadRun, RequestSample
from vllm_gate.spec import Autoscaling, CapacitySearch, Load, Slos, UsersProfile

METRIC = "vllm_num_requests_waiting"
T0 = 1_000_000.0
POLICY = Autoscaling(enabled=True, target=1, scale_out_within_s=60, hold_s=30, scale_down_stabilization_s=100)
BOTH_ANSWERED = {"llama3-vllm-a-1": 300.0, "llama3-vllm-b-2": 280.0}


def point(at: float, desired: int, serving: int, metric: float | None = 0.0, current: int | None = None) -> ScalePoint:
    return ScalePoint(T0 + at, desired, serving if current is None else current, serving, serving, metric)


def held(passed: bool = True) -> Step:
    return Step(6, passed, () if passed else ("ttft p95",), {"ttft p95": 80.0 if passed else 3000.0},
                {"ttft p95": 1000.0}, 40, 100.0, 70.0)


def scaling(points: list[ScalePoint], after: Step | None = None, load_s: float = 90,
            implied: tuple[float | None, str] = (None, ""), served: dict[str, float] | None = None) -> Scaling:
    return Scaling(METRIC, 1.0, 1, 2, 6, 100, 60, 160, T0, T0 + load_s, tuple(points), after or held(),
                   BOTH_ANSWERED if served is None else served, "", *implied)


# Out at 20 s (the metric 2 waiting per pod), held to the load's end at 90 s, the HPA lowering its wish at 120 s
# (110 s after the metric was last above target, more than the 100 s window), one pod again at 130 s.
GOOD = [point(0, 1, 1, 0), point(10, 2, 1, 2), point(20, 2, 2, 0.5), point(60, 2, 2, 0), point(90, 2, 2, 0),
        point(120, 1, 2, 0, current=2), point(130, 1, 1, 0)]


def test_a_policy_that_scales_out_holds_and_scales_back_in_passes():
    good = scaling(GOOD)
    assert good.problems() == []
    assert good.headline() == ("autoscaling: 6 users; scaled out to 2 pods serving 20 s into the load, back to 1 40 s "
                               "after it")
    summary = good.summary()
    assert (summary["scale_out_s"], summary["scale_in_s"], summary["peak_serving"]) == (20.0, 40.0, 2)
    assert summary["served_by_pod"] == BOTH_ANSWERED
    assert len(summary["points"]) == len(GOOD)


def test_no_scale_out_names_what_the_hpa_wanted_and_the_metric():
    flat = scaling([point(0, 1, 1, 0), point(30, 1, 1, 0.4), point(90, 1, 1, 0.2)])
    (problem,) = flat.problems()
    assert problem == ("did not scale out under 6 users within 60 s: the HPA wanted 1 replica(s) at most; "
                       "vllm_num_requests_waiting averaged at most 0.4 per pod (target 1)")
    unread = scaling([point(0, 1, 1, None), point(90, 1, 1, None)])
    assert unread.problems()[0].endswith("vllm_num_requests_waiting was never read (target 1)")


def test_a_scale_out_after_the_bound_is_too_late():
    late = [point(0, 1, 1, 2), point(70, 2, 2, 0), point(90, 2, 2, 0), point(200, 1, 1, 0)]
    problems = scaling(late).problems()
    assert any(p.startswith("scaled out too late: a new pod served 70 s into the load") for p in problems), problems


def test_a_pod_removed_while_the_load_runs_is_a_window_too_short():
    flapping = [point(0, 1, 1, 2), point(20, 2, 2, 0), point(50, 1, 2, 0, current=2), point(52, 1, 1, 0),
                point(70, 2, 2, 2), point(90, 2, 2, 0), point(200, 1, 1, 0)]
    problems = scaling(flapping).problems()
    assert any(p.startswith("removed a pod while the load ran (30 s after scaling out)") for p in problems), problems


def test_a_scale_in_sooner_than_the_window_after_the_metric_fell_fails():
    hasty = [point(0, 1, 1, 2), point(20, 2, 2, 1.5), point(85, 2, 2, 1.5), point(90, 2, 2, 0),
             point(120, 1, 2, 0, current=2), point(122, 1, 1, 0)]
    assert scaling(hasty).problems() == ["scaled in 35 s after the metric was last above target, sooner than its "
                                         "scale-down window (100 s)"]
    # Within the status's lag (the controller's 15 s sync and the 2 s reading) of the window: on time.
    on_time = [*hasty[:4], point(175, 1, 2, 0, current=2), point(177, 1, 1, 0)]
    assert scaling(on_time).problems() == []


def test_no_scale_in_after_the_window_and_allowance_fails():
    stuck = [point(0, 1, 1, 2), point(20, 2, 2, 0), point(90, 2, 2, 0), point(250, 2, 2, 0)]
    assert scaling(stuck).problems() == ["did not scale back in to 1 replica(s) within 160 s of the load's end (its "
                                         "100 s window, a pod every 120 s after the first, and 60 s)"]


def test_the_scale_in_deadline_grows_with_each_pod_the_policy_removes_one_at_a_time():
    policy = Autoscaling(enabled=True, min_replicas=1, max_replicas=4, scale_down_stabilization_s=300)
    assert [scale_in_s(policy, peak) for peak in (2, 3, 4)] == [360, 480, 600]


def test_new_pods_the_load_never_reaches_fail_and_an_unread_prometheus_is_not_a_pass():
    one = scaling(GOOD, served={"llama3-vllm-a-1": 580.0, "llama3-vllm-b-2": 0.0})
    assert one.problems() == ["2 pods served, but only 1 answered requests after the scale-out (llama3-vllm-a-1): "
                              "the load's clients never reached the new pods"]
    unread = replace(scaling(GOOD), served_by_pod=None, served_unread="Prometheus http://p: HTTP 503")
    assert unread.problems() == ["which pods answered the load after the scale-out is not shown: Prometheus "
                                 "http://p: HTTP 503"]


def test_slos_still_broken_after_the_scale_out_fail_naming_them():
    problems = scaling(GOOD, after=held(passed=False)).problems()
    assert problems == ["after scaling out to 2 pods, ttft p95 still broke its SLO (40 requests)"]
    none = replace(scaling(GOOD), after_scale_out=None)
    assert none.problems() == ["no request started in the load's last hold_s once the new pods served: the SLOs "
                               "after scaling out are not shown"]


def test_a_target_past_the_measured_capacity_fails_with_the_one_it_implies():
    problems = scaling(GOOD, implied=(0.5, "capacity 4 users per replica, max_num_seqs 4")).problems()
    assert problems == ["target 1 waiting requests per pod scales out only past the capacity this run measured "
                        "(capacity 4 users per replica, max_num_seqs 4): set autoscaling.target to 0.5"]


def test_the_load_and_the_target_come_from_one_replicas_capacity():
    # Above one replica by two at least; at larger capacities the most that a random spread over two pods holds
    # 99 % of the time (21 users over 2 pods put 17 or more on one 0.72 % of the time; 22 users, 1.7 %).
    assert [load_users(k) for k in (1, 4, 8, 16, 64)] == [3, 6, 10, 21, 102]
    assert overflow(6, 4) == 2 * (6 + 1) / 64
    assert round(overflow(20, 16), 4) == 0.0026
    assert overflow(33, 16) == 1.0
    assert queue_target(4, 4) == 1  # breaks before it queues: any queue is past capacity
    assert queue_target(10, 4) == 6
    load = scaling_load(Load(profile=UsersProfile(users=4, duration_s=60), prompt_tokens=8, output_tokens=8), 6,
                        POLICY)
    assert (load.profile.users, load.profile.duration_s) == (6, 90)


def test_the_tests_users_are_the_specs_else_the_knees_else_it_says_what_to_do():
    knee = Capacity(16, 17, ("ttft p95",), (), "resolved", 100.0, CapacitySearch())
    assert scaling_users(POLICY, knee) == 21
    assert scaling_users(POLICY.model_copy(update={"load_users": 9}), None) == 9
    with pytest.raises(GateError, match=r"\(no capacity search ran\): set autoscaling.load_users, or search it"):
        scaling_users(POLICY, None)


def sample(start: float, ttft_s: float) -> RequestSample:
    return RequestSample(start, ttft_s, [0.02], ttft_s + 0.2, 8, 8, None)


def test_the_loads_last_hold_s_after_the_scale_out_and_the_backlog_is_held_to_the_slos():
    slos = Slos(ttft_ms={"p95": 1000}, min_output_tokens_per_s=1)
    # Slow while one pod queued (before 20 s), fast after: the judged step sees only the fast ones.
    samples = [sample(T0 + t, 3.0) for t in range(0, 20)] + [sample(T0 + t, 0.1) for t in range(20, 90)]
    result = judged(LoadRun(samples, 90, math.nan, Path("/dev/null")), T0, tuple(GOOD), POLICY, METRIC, 6, slos)
    assert result.after_scale_out is not None
    assert result.after_scale_out.passed
    # From 60 s, scale_out_within_s: the load's last hold_s (the backlog before the scale-out drained at 22.2 s).
    assert result.after_scale_out.requests == 30
    late = judged(LoadRun(samples, 90, math.nan, Path("/dev/null")), T0, tuple(GOOD),
                  POLICY.model_copy(update={"scale_out_within_s": 15}), METRIC, 6, slos)
    # With a 15 s bound, from the backlog's end: the last request started before the scale-out (at 19 s, 3.2 s long)
    # held the first pod until 22.2 s.
    assert late.after_scale_out.requests == 67
    assert result.load_ended == T0 + 89.3  # the last request's end, not when its pods were gone
    assert result.problems() == ["which pods answered the load after the scale-out is not shown: not read"]


@pytest.fixture
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readings 10 ms apart instead of 2 s: the same loops, without the wall-clock wait."""
    monkeypatch.setattr(scaling_watch, "POLL_S", 0.01)


@pytest.mark.usefixtures("quick_polls")
def test_watching_reads_while_the_load_runs_and_until_the_scale_in():
    readings = iter([point(0, 1, 1), point(1, 2, 2)] + [point(2, 2, 2)] * 3 + [point(9, 1, 1)] * 500)
    said: list[str] = []

    def load() -> LoadRun:
        time.sleep(0.2)
        return LoadRun([], 0.2, math.nan, Path("/dev/null"))

    watched = watch_scaling(load, lambda: next(readings), min_replicas=1, after_s=lambda _peak: 30,
                            describe=lambda p: f"{p.serving} serving", progress=said.append)
    assert watched.points[-1].serving == 1  # stopped at the scale-in, long before after_s
    assert said
    assert said[0].startswith("autoscaling: load running")


@pytest.mark.usefixtures("quick_polls")
def test_readings_that_keep_failing_fail_the_watch_saying_why():
    def broken() -> ScalePoint:
        raise GateError("autoscaling: reading HorizontalPodAutoscaler ns/x ... failed: HTTP 503 Service Unavailable")

    def load() -> LoadRun:
        time.sleep(0.5)  # long enough for five readings to fail
        return LoadRun([], 0.5, math.nan, Path("/dev/null"))

    said: list[str] = []
    with pytest.raises(GateError, match="HTTP 503"):
        watch_scaling(load, broken, min_replicas=1, after_s=lambda _peak: 30, describe=str, progress=said.append)
    assert said == ["autoscaling: reading HorizontalPodAutoscaler ns/x ... failed: HTTP 503 Service Unavailable "
                    "(5 readings in a row): the autoscaling test stops reading"]


def test_a_scale_in_later_than_its_limit_fails_saying_how_long_it_took():
    slow = [point(0, 1, 1, 2), point(20, 2, 2, 0), point(90, 2, 2, 0), point(200, 1, 2, 0, current=2),
            point(260, 1, 1, 0)]
    assert scaling(slow).problems() == ["did not scale back in to 1 replica(s) within 160 s of the load's end (its "
                                        "100 s window, a pod every 120 s after the first, and 60 s): it took 170 s"]


def test_a_pod_added_after_the_load_need_not_have_answered_it():
    # The HPA's status lags: a third pod that served only after the load's end got none of its requests.
    late_third = [*GOOD[:5], point(95, 3, 3, 0), point(120, 1, 2, 0, current=3), point(130, 1, 1, 0)]
    assert scaling(late_third).peak_during_load == 2
    assert scaling(late_third).problems() == []


@pytest.mark.usefixtures("quick_polls")
def test_a_reading_that_fails_once_is_tried_again_and_five_in_a_row_fail():
    answers: list[object] = [GateError("HTTP 503"), point(0, 1, 1)]

    def flaky() -> ScalePoint:
        answer = answers.pop(0)
        if isinstance(answer, GateError):
            raise answer
        return answer

    assert tolerant(flaky)() == point(0, 1, 1)
    answers[:] = [GateError("HTTP 503")] * 5
    with pytest.raises(GateError, match="HTTP 503"):
        tolerant(flaky)()
