"""A gate run's exit code: each model's verdict, never lower than pytest's own status; the worst model's wins."""

from __future__ import annotations

import pytest

from vllm_gate.gate.run import GateRun
from vllm_gate.verdict.contract import EXIT_CODES, NOT_A_CERTIFICATION_EXIT, Kind

# How a run of several models exits when they disagree, worst first (each model's own code: model_exit_code).
WORST_FIRST = (int(pytest.ExitCode.INTERRUPTED), int(pytest.ExitCode.INTERNAL_ERROR), EXIT_CODES[Kind.FAILED],
               EXIT_CODES[Kind.PARTIAL], NOT_A_CERTIFICATION_EXIT)


def model_exit_code(run: GateRun, pytest_status: int, require_certification: bool) -> int:
    """The verdict's exit code, never lower than pytest's own (an error outside the contract still fails).

    ``require_certification``: a passed rehearsal or endpoint run is not enough (NOT_A_CERTIFICATION_EXIT).
    """
    verdict = run.settle()
    code = verdict.exit_code  # a decision that failed has made a passed verdict FAILED (GateRun.fail_decision)
    if code == 0 and pytest_status not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        return int(pytest_status)
    if code == 0 and require_certification and not verdict.certified:
        return NOT_A_CERTIFICATION_EXIT
    return code


def session_exit_code(runs: list[GateRun], pytest_status: int, require_certification: bool) -> int:
    """The run's exit code: the worst model's (model_exit_code), by WORST_FIRST; then any other, then 0."""
    codes = [model_exit_code(run, pytest_status, require_certification) for run in runs]
    return min(codes, key=lambda code: WORST_FIRST.index(code) if code in WORST_FIRST
               else len(WORST_FIRST) + (code == 0))
