"""The right model, answering sensibly: its tokenizer and chat template, that it stops, and that its answers hold."""

from __future__ import annotations

import pytest

from vllm_gate.checks import identity


def _baseline_recorded(gate_baseline, gate_identity, what: str) -> None:
    if gate_identity.no_baseline:
        pytest.skip(gate_identity.no_baseline)
    gate_baseline(f"{what}: nothing to compare with ({gate_identity.baseline_from}); baseline recorded if this run "
                  "passes")


def test_canary_prompt_tokens_match_the_model(gate_identity, gate_spec, gate_run, gate_baseline):
    measured = gate_identity.record.canary_prompt_tokens
    # A pinned count is the real model's: a rehearsal's simulator compares with the rehearsal registry instead.
    pinned = gate_spec.identity.canary.prompt_tokens if gate_run.simulated is None else None
    baseline = gate_identity.baseline
    if pinned is not None:
        problems = identity.canary_problems(measured, pinned, "the spec pins")
    elif baseline is not None and baseline.canary_prompt_tokens is not None:
        problems = identity.canary_problems(measured, baseline.canary_prompt_tokens,
                                            f"{gate_identity.baseline_from} took")
    else:
        _baseline_recorded(gate_baseline, gate_identity, f"canary prompt tokens {measured}")
        return
    assert not problems, "; ".join(problems)


def test_answers_stop_within_the_bound(gate_endpoint, gate_spec, gate_run):
    if gate_run.on_real_engine:
        pytest.skip(f"not shown for this engine ({gate_run.stands_in}): random weights rarely stop")
    stopping = gate_spec.identity.stopping
    problems = identity.stopping_problems(identity.stop_answers(gate_endpoint, gate_spec.served_name, stopping),
                                          stopping)
    assert not problems, "; ".join(problems)


def test_answers_have_not_drifted(gate_identity, gate_spec, gate_run, gate_baseline):
    answers = gate_identity.record.answers
    if gate_identity.baseline is None:
        _baseline_recorded(gate_baseline, gate_identity, f"{len(answers)} answers at temperature 0")
        return
    report = identity.compare_answers(gate_identity.baseline.answers, answers)
    gate_run.telemetry.append(f"identity: drift: {report.line()} (against {gate_identity.baseline_from})")
    problems = identity.drift_problems(report, gate_spec.identity.drift, gate_identity.baseline_from)
    assert not problems, "; ".join(problems)
