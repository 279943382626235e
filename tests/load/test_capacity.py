"""The capacity search: a climb and a bisection that land on the knee, within the budget, saying each step; and
against the stand-in with a known knee (its --max-num-seqs queue), driven by Locust, within 10 % of it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.conftest import require
from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.load.capacity import Step, judge, resolved, search, start_users, step_load
from vllm_gate.load.local import run_load
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
    assert found.knee <= knee  # never above: every step at or below the knee passed
    assert found.lowest_failing is not None
    assert found.lowest_failing > knee
    assert resolved(found.knee, found.lowest_failing, SETTINGS.resolution)
    assert found.broke_first == ("ttft p95",)
    assert len(lines) == len(found.steps)  # one line per step
    assert lines[0].startswith(f"capacity: {min(start, 64)} users: ")


def test_a_ceiling_that_holds_and_one_user_that_breaks_say_so():
    held = search(knee_at(1000), SETTINGS, 8, lambda _l: None)
    assert (held.knee, held.lowest_failing, held.ended) == (64, None, "the ceiling of 64 users held")
    assert [s.users for s in held.steps] == [8, 16, 32, 64]
    broken = search(knee_at(0), SETTINGS, 8, lambda _l: None)
    assert (broken.knee, broken.lowest_failing) == (None, 1)
    assert [s.users for s in broken.steps] == [8, 4, 2, 1]
    assert broken.headline().startswith("capacity: below 1 user (ttft p95 broke at 1)")


def test_no_step_starts_that_the_budget_cannot_finish():
    ticks = itertools.count(0, 12)  # each step takes 12 s on this clock
    tight = SETTINGS.model_copy(update={"budget_s": 40})
    found = search(knee_at(12), tight, 8, lambda _l: None, clock=lambda: float(next(ticks)))
    assert found.ended == "budget spent"
    assert len(found.steps) <= 3
    assert found.knee == 8  # the highest step that passed before the budget ran out


def test_the_peak_says_how_many_replicas_it_needs():
    found = search(knee_at(12), SETTINGS, 8, lambda _l: None, peak_users=100)
    assert found.knee == 12
    assert found.replicas_for_peak == 9  # ceil(100 / 12)
    assert "peak 100 users needs 9 replicas" in found.headline()
    assert found.summary()["replicas_for_peak"] == 9


def test_a_step_judges_latency_and_errors_after_its_warm_up_only():
    load = Load(profile={"kind": "rate", "requests_per_s": 2.5, "duration_s": 30}, prompt_tokens=8, output_tokens=4)
    assert start_users(load, SETTINGS) == 3
    assert step_load(load, 7, SETTINGS).profile.users == 7
    assert step_load(load, 7, SETTINGS).profile.duration_s == 12


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
    settings = CapacitySearch(max_users=16, resolution=0.1, step_duration_s=4, warmup_s=1, budget_s=300)
    lines: list[str] = []
    with SimServer(model="m", max_model_len=512, **STANDIN) as server:
        def measure(users: int) -> Step:
            run = run_load(server.url, "m", step_load(SHAPE, users, settings), tmp_path / f"step-{users}",
                           lambda _m: None)
            return judge(users, run.samples, SLOS, settings.warmup_s, run.wall_s)
        found = search(measure, settings, start_users(SHAPE, settings), lines.append)
    assert found.knee is not None, lines
    assert abs(found.knee - TRUE_KNEE) <= 0.1 * TRUE_KNEE, lines
    assert found.lowest_failing == TRUE_KNEE + 1, lines
    assert found.broke_first == ("ttft p95",), lines
