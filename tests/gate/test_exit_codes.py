"""The gate's exit status: the verdict's code, and --require-certification for nightly certification jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.gate.exit_code import model_exit_code
from vllm_gate.gate.run import GateRun
from vllm_gate.spec import load_spec
from vllm_gate.verdict.contract import NOT_A_CERTIFICATION_EXIT, Mode, required_checks

SPEC = load_spec("llama3", MODELS_DIR)


def passed_run(mode: Mode) -> GateRun:
    run = GateRun(spec=SPEC, cluster="test", capabilities=None, report_path=Path("r.html"), mode=mode,
                  required=required_checks(SPEC.slo, deployed_by_gate=mode is not Mode.ENDPOINT, runs_containers=True,
                                           real_gpus=True),
                  engine_observed=mode is Mode.CERTIFICATION)
    if mode is Mode.REHEARSAL:
        run.simulated = "simulator: test"
    for check in run.required:
        run.record(check, "passed", "")
    return run


@pytest.mark.parametrize("mode", [Mode.REHEARSAL, Mode.ENDPOINT])
def test_a_passed_run_that_is_not_a_certification_fails_only_when_certification_is_required(mode):
    assert model_exit_code(passed_run(mode), pytest.ExitCode.OK, require_certification=False) == 0
    assert model_exit_code(passed_run(mode), pytest.ExitCode.OK, require_certification=True) == NOT_A_CERTIFICATION_EXIT


def test_a_certification_exits_zero_either_way_and_a_failure_keeps_its_code():
    certified = passed_run(Mode.CERTIFICATION)
    assert certified.settle().certified
    assert model_exit_code(certified, pytest.ExitCode.OK, require_certification=True) == 0
    failed = passed_run(Mode.REHEARSAL)
    failed.record(failed.required[0], "failed", "boom")
    assert model_exit_code(failed, pytest.ExitCode.TESTS_FAILED, require_certification=True) == 1
