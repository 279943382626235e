"""The identity checks against the real simulator: tokenizer/template canary, stopping, answer drift, and
the planted faults (another chat template, no end-of-sequence, changed answers) each named."""

from __future__ import annotations

import pytest

from tests.conftest import require
from vllm_gate.checks import identity
from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.spec import Identity

SPEC = Identity()  # the defaults every model spec gets
MODEL = "llama3"


@pytest.fixture(autouse=True)
def _sim_binary():
    require("vllm-sim-standin")


def test_the_canary_count_depends_on_the_chat_template_and_a_change_is_named():
    with SimServer(model=MODEL, chat_template="llama3") as right, SimServer(model=MODEL, chat_template="none") as bare:
        expected = identity.canary_prompt_tokens(right.url, MODEL, SPEC.canary)
        again = identity.canary_prompt_tokens(right.url, MODEL, SPEC.canary)
        other = identity.canary_prompt_tokens(bare.url, MODEL, SPEC.canary)
    assert again == expected
    assert other != expected
    assert identity.canary_problems(again, expected, "the last certification took") == []
    assert identity.canary_problems(other, expected, "the last certification took") == [
        f"the canary conversation takes {other} prompt tokens, the last certification took {expected}: another "
        "tokenizer or chat template serves this model"]


def test_answers_that_stop_pass_and_a_model_that_never_stops_fails_with_the_count():
    with SimServer(model=MODEL, eos_after=24) as stops, SimServer(model=MODEL, eos_after=0) as never:
        good = identity.stop_answers(stops.url, MODEL, SPEC.stopping)
        bad = identity.stop_answers(never.url, MODEL, SPEC.stopping)
    assert [r.finish_reason for r in good] == ["stop"] * len(SPEC.stopping.prompts)
    assert identity.stopping_problems(good, SPEC.stopping) == []
    problems = identity.stopping_problems(bad, SPEC.stopping)
    assert len(problems) == len(SPEC.stopping.prompts)
    assert f"never stopped: finish_reason length at {SPEC.stopping.max_tokens} tokens" in problems[0]


def test_a_late_stop_beyond_the_bound_fails():
    late = Identity.model_validate({"stopping": {"max_tokens": 64, "stop_within_tokens": 8}}).stopping
    with SimServer(model=MODEL, eos_after=24) as sim:
        problems = identity.stopping_problems(identity.stop_answers(sim.url, MODEL, late), late)
    assert problems
    assert "stopped only after 24 tokens (bound 8)" in problems[0]


def test_answers_at_temperature_zero_repeat_across_servers_and_a_changed_model_is_quoted():
    with SimServer(model=MODEL) as first, SimServer(model=MODEL) as second, \
            SimServer(model=MODEL, answer_salt="v0.12-upgrade") as changed:
        baseline = identity.drift_answers(first.url, MODEL, SPEC.drift)
        same = identity.drift_answers(second.url, MODEL, SPEC.drift)
        drifted = identity.drift_answers(changed.url, MODEL, SPEC.drift)
    report = identity.compare_answers(baseline, same)
    assert (report.exact, report.compared, report.mean_similarity) == (len(SPEC.drift.prompts),) * 2 + (1.0,)
    assert identity.drift_problems(report, SPEC.drift, "the last certification") == []
    report = identity.compare_answers(baseline, drifted)
    problems = identity.drift_problems(report, SPEC.drift, "the last certification")
    assert report.mean_similarity < SPEC.drift.min_similarity
    assert len(problems) == 1
    prompt, before, now, _ = report.worst
    assert before != now
    assert f"most changed ({report.worst[3]:.3f}) {prompt!r}: was " in problems[0]
    assert repr(before[:40]).rstrip("'") in problems[0]
    assert repr(now[:40]).rstrip("'") in problems[0]


def test_drift_against_a_baseline_of_other_prompts_has_nothing_to_compare():
    report = identity.compare_answers([("an old prompt", "an old answer")], [("a new prompt", "x")])
    assert report.compared == 0
    assert identity.drift_problems(report, SPEC.drift, "the last certification") == [
        "none of today's drift prompts is in the last certification (its prompts: an old prompt): nothing to compare"]


def test_a_baseline_asked_another_way_names_the_prompts_that_changed():
    before = ["What is 2 + 2?", "Name a colour."]
    assert identity.prompt_changes(before, ["What is 2 + 2?", "Name a fruit."]) == (
        "drift prompt 'Name a fruit.' added; drift prompt 'Name a colour.' removed")
    assert identity.prompt_changes(before, list(before)).startswith("the same drift prompts; the canary conversation")
