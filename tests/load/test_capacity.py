"""The capacity search: a climb and a bisection that land on the knee, within the budget, saying each step; and
against the stand-in with a known knee (its --max-num-seqs queue), driven by Locust, within 10 % of it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.conftest import require
from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.load.capacity import Step, judge, search, start_users, step_load
from vllm_gate.load.local import run_load
from vllm_gate.load.samples import RequestSample
from vllm_gate.spec import CapacitySearch, Load, Slos

SETTINGS = CapacitySearch(max_users=64, resolution=0.1, step_duration_s=10, warmup_s=2, budget_s=10_000)


def knee_at(knee: int, seconds: float = 12.0):
    """A server whose every latency SLO holds up to ``knee`` users and breaks TTFT p95 above (a fake: no load)."""
    def measure(users: int) -> Step:
        passed = users <= knee
        return Step(users, passed, () if passed else ("ttft p95",), {"ttft p95": 100.0 if passed else 900.0},
                    {"ttft p95": 600.0}, 40, 10.0 * users, seconds)
    return measure


@pytest.mark.parametrize(("knee", "start"), [(12, 8), (8, 8), (3, 8), (1, 4), (40, 2), (63, 8)])
def test_the_search_lands_on_the_knee_to_its_resolution(knee, start):
    lines: list[str] = []
    found = search(knee_at(knee), SETTINGS, start, lines.append)
    assert found.knee is not None
    assert math.ceil(0.9 * knee) <= found.knee <= knee  # within the 10 % resolution, never above
    assert found.lowest_failing == found.knee + 1 or found.lowest_failing - found.knee <= 0.1 * found.knee
    assert found.lowest_failing > knee
    assert found.complete
    assert found.broke_first == ("ttft p95",)
    assert len({s.users for s in found.steps}) == len(found.steps)  # no concurrency measured twice
    assert len(lines) == len(found.steps)  # one line per step
    assert lines[0].startswith(f"capacity: {min(start, 64)} users: ")


def test_a_ceiling_that_holds_and_one_user_that_breaks_say_so():
    held = search(knee_at(1000), SETTINGS, 8, lambda _l: None)
    assert (held.knee, held.lowest_failing, held.ended) == (64, None, "ceiling held: 64 users")
    assert held.complete
    assert [s.users for s in held.steps] == [8, 16, 32, 64]
    broken = search(knee_at(0), SETTINGS, 8, lambda _l: None)
    assert (broken.knee, broken.lowest_failing, broken.ended) == (None, 1, "no step passed")
    assert [s.users for s in broken.steps] == [8, 4, 2, 1]
    assert broken.headline().startswith("capacity: not found, no step held; the lowest tried, 1 users, broke "
                                        "ttft p95")


def test_no_step_starts_that_the_budget_cannot_finish():
    now = [0.0]

    def measure(users: int) -> Step:
        now[0] += 12.0  # each step takes 12 s on this clock
        return knee_at(12)(users)
    tight = SETTINGS.model_copy(update={"budget_s": 40})
    found = search(measure, tight, 8, lambda _l: None, clock=lambda: now[0])
    assert found.ended == "budget spent before the knee was resolved"
    assert not found.complete
    assert found.elapsed_s <= tight.budget_s
    assert [s.users for s in found.steps] == [8, 16, 12]  # a fourth would end at 48 s
    assert found.knee == 12


def test_the_peak_says_how_many_replicas_it_needs():
    found = search(knee_at(12), SETTINGS, 8, lambda _l: None, peak_users=100)
    assert found.knee == 12
    assert found.replicas_for_peak == 9  # ceil(100 / 12)
    assert "peak 100 users needs 9 replicas" in found.headline()
    assert found.summary()["replicas_for_peak"] == 9


def _sample(start: float, ttft_s: float, error: str | None = None) -> RequestSample:
    return RequestSample(start, ttft_s, [0.01], ttft_s + 0.1, 8, 4, error)


def test_a_step_judges_latency_and_errors_after_its_warm_up_only():
    slos = Slos(ttft_ms={"p95": 100}, min_output_tokens_per_s=1000, max_error_rate=0.1)
    # Slow and failing requests in the first 2 s (the warm-up) are not judged; the steady ones are fast.
    samples = [_sample(0.0, 0.9, "timeout"), _sample(1.0, 0.9), *(_sample(2.0 + i / 10, 0.02) for i in range(20))]
    step = judge(6, samples, slos, warmup_s=2, seconds=9)
    assert (step.passed, step.requests, step.values["error rate"]) == (True, 20, 0.0)
    assert "min output tokens/s" not in step.values  # floors grow with load: not part of the knee
    slow = judge(6, [*samples, *(_sample(3.0, 0.5) for _ in range(3))], slos, warmup_s=2, seconds=9)
    assert slow.broke == ("ttft p95",)
    empty = judge(6, samples[:2], slos, warmup_s=2, seconds=9)
    assert (empty.passed, empty.broke) == (False, ("no request started after the 2 s warm-up",))


def test_the_first_step_is_the_concurrency_the_slo_load_test_held():
    users = Load(profile={"kind": "users", "users": 5, "duration_s": 30}, prompt_tokens=8, output_tokens=4)
    assert start_users(users, SETTINGS, []) == 5
    assert start_users(users, SETTINGS.model_copy(update={"start_users": 3}), []) == 3
    # A rate profile: the requests it kept in flight (Little's law): 20 requests of 1 s over 10 s is 2.
    rate = Load(profile={"kind": "rate", "requests_per_s": 2, "duration_s": 10}, prompt_tokens=8, output_tokens=4)
    held = [RequestSample(i / 2, 0.1, [], 1.0, 8, 4, None) for i in range(19)] + [RequestSample(9.0, 0.1, [], 1.0,
                                                                                               8, 4, None)]
    assert start_users(rate, SETTINGS, held) == 2
    assert step_load(rate, 7, SETTINGS).profile.users == 7
    assert step_load(rate, 7, SETTINGS).profile.duration_s == 12


# --- against the stand-in: a known knee -----------------------------------------------------------------------------

# Four requests at once, the rest queue: with 20 ms to the first token and 5 ms between the next 19, a request holds
# its slot ~115 ms; at five closed-loop users one in five waits that long for a slot, which breaks a TTFT p95 of 60 ms
# (p95 needs 95 % within it). So the true knee is 4 users.
TRUE_KNEE = 4
STANDIN = {"max_num_seqs": TRUE_KNEE, "ttft_ms": 20, "itl_ms": 5}
SLOS = Slos(ttft_ms={"p95": 60}, min_output_tokens_per_s=1)
SHAPE = Load(profile={"kind": "users", "users": 2, "duration_s": 5}, prompt_tokens=16, output_tokens=20)


def test_the_search_finds_the_stand_ins_known_knee_within_ten_percent(tmp_path: Path):
    require("vllm-sim-standin")
    settings = CapacitySearch(max_users=16, resolution=0.1, step_duration_s=2.5, warmup_s=0.5, budget_s=300)
    lines: list[str] = []
    with SimServer(model="m", max_model_len=512, **STANDIN) as server:
        def measure(users: int) -> Step:
            run = run_load(server.url, "m", step_load(SHAPE, users, settings), tmp_path / f"step-{users}",
                           lambda _m: None)
            return judge(users, run.samples, SLOS, settings.warmup_s, run.wall_s)
        found = search(measure, settings, start_users(SHAPE, settings, []), lines.append)
    assert found.knee is not None, lines
    assert abs(found.knee - TRUE_KNEE) <= 0.1 * TRUE_KNEE, lines
    assert found.complete, lines
    assert found.lowest_failing == TRUE_KNEE + 1, lines
    assert found.broke_first == ("ttft p95",), lines
