"""Several models in one run: which specs --model chooses, --set aimed at one, check ids, the run's exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_gate.base.errors import SpecError
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.gate.exit_code import session_exit_code
from vllm_gate.gate.run import GateRun
from vllm_gate.spec import load_spec
from vllm_gate.verdict.contract import NOT_A_CERTIFICATION_EXIT, Mode, check_id, model_param_id, required_checks
from vllm_gate.verdict.selection import load_specs, model_refs, overrides_per_model, split_target

SPEC = load_spec("llama3", MODELS_DIR)


def test_all_is_every_spec_sorted_and_a_model_named_twice_runs_once():
    assert model_refs(["all"], MODELS_DIR) == ["llama3", "mistral-7b"]
    assert model_refs(["mistral-7b", "all"], MODELS_DIR) == ["mistral-7b", "llama3"]  # the order given
    assert model_refs(["llama3", "llama3"], MODELS_DIR) == ["llama3"]


def test_an_empty_models_directory_is_refused(tmp_path: Path):
    with pytest.raises(SpecError, match=f"--model all: no model spec in {tmp_path}"):
        load_specs(["all"], [], tmp_path)


@pytest.mark.parametrize(("item", "split"), [
    ("resources.gpus=2", (None, "resources.gpus=2")),
    ("mistral-7b:resources.gpu_type=h100-sxm", ("mistral-7b", "resources.gpu_type=h100-sxm")),
    ("image.tag=v0.11.0:slim", (None, "image.tag=v0.11.0:slim")),  # a colon in the value names no model
    ("llama3:image.repository=registry:5000/vllm", ("llama3", "image.repository=registry:5000/vllm")),
])
def test_only_the_key_side_of_a_set_names_a_model(item, split):
    assert split_target(item) == split


def test_a_set_without_a_model_applies_to_every_model_and_one_with_a_model_to_that_one_only():
    per_model = overrides_per_model(["llama3", "mistral-7b"], [
        "load.profile.duration_s=5", "mistral-7b:resources.gpu_type=h100-sxm"], MODELS_DIR)
    assert per_model == {"llama3": ["load.profile.duration_s=5"],
                         "mistral-7b": ["load.profile.duration_s=5", "resources.gpu_type=h100-sxm"]}
    llama3, mistral = load_specs(["all"], ["load.profile.duration_s=5", "mistral-7b:resources.gpu_type=h100-sxm"],
                                 MODELS_DIR)
    assert (llama3.resources.gpu_type, mistral.resources.gpu_type) == ("rtx-6000-ada", "h100-sxm")
    assert llama3.load.profile.duration_s == mistral.load.profile.duration_s == 5


def test_a_set_for_a_model_not_in_the_run_is_refused_naming_the_models():
    with pytest.raises(SpecError, match=r"--set mistral-7b:resources.gpus=2: 'mistral-7b' is not a model of this run "
                                        r"\(models: llama3\)"):
        load_specs(["llama3"], ["mistral-7b:resources.gpus=2"], MODELS_DIR)


def test_a_targeted_set_that_breaks_its_spec_names_the_file_and_field():
    with pytest.raises(SpecError, match=r"models/mistral-7b.yaml \(with --set resources.gpus=0\): resources.gpus"):
        load_specs(["all"], ["mistral-7b:resources.gpus=0"], MODELS_DIR)


def test_two_specs_with_one_name_are_refused(tmp_path: Path):
    copy = tmp_path / "copy.yaml"
    copy.write_text((MODELS_DIR / "llama3.yaml").read_text())
    with pytest.raises(SpecError, match=f"--model llama3 and --model {copy} are both named 'llama3'"):
        load_specs(["llama3", str(copy)], [], MODELS_DIR)


@pytest.mark.parametrize(("name", "model", "check"), [
    ("test_chat_completion", None, "health/test_chat_completion"),
    ("test_slo[ttft p95]", None, "load/test_slo[ttft p95]"),
    ("test_chat_completion[llama3]", "llama3", "health/test_chat_completion"),
    ("test_slo[mistral-7b-ttft p95]", "mistral-7b", "load/test_slo[ttft p95]"),
    ("test_slo[mistral-7b-error rate]", "mistral-7b", "load/test_slo[error rate]"),
])
def test_a_checks_contract_id_drops_its_model(name, model, check):
    suite = check.split("/")[0]
    assert check_id(f"suites/test_{suite}.py", name, model) == check


def test_the_ids_the_plugin_gives_are_the_ones_check_id_drops():
    assert check_id("suites/test_load.py", f"test_slo[{model_param_id('b-7b', 'ttft p95')}]", "b-7b") == (
        "load/test_slo[ttft p95]")
    assert check_id("suites/test_health.py", f"test_chat_completion[{model_param_id('b-7b')}]", "b-7b") == (
        "health/test_chat_completion")


def run_of(mode: Mode, outcome: str = "passed") -> GateRun:
    """A decided run of llama3 in ``mode`` whose required checks all ended ``outcome``."""
    run = GateRun(spec=SPEC, cluster="test", capabilities=None, report_path=Path("r.html"), mode=mode,
                  required=required_checks(SPEC.slo, deployed_by_gate=True, runs_containers=True, real_gpus=True),
                  engine_observed=mode is Mode.CERTIFICATION, simulated="simulator: test" if mode is Mode.REHEARSAL
                  else None)
    for check in run.required:
        run.record(check, outcome, "")
    return run


def partial() -> GateRun:
    run = run_of(Mode.CERTIFICATION)
    run.outcomes.pop(run.required[0])
    return run


def interrupted() -> GateRun:
    run = run_of(Mode.CERTIFICATION)
    run.interrupted = "SIGTERM"
    return run


@pytest.mark.parametrize(("runs", "require", "code"), [
    (lambda: [run_of(Mode.CERTIFICATION), run_of(Mode.CERTIFICATION)], True, 0),
    (lambda: [run_of(Mode.REHEARSAL), run_of(Mode.REHEARSAL)], False, 0),
    (lambda: [run_of(Mode.CERTIFICATION), run_of(Mode.REHEARSAL)], True, NOT_A_CERTIFICATION_EXIT),
    (lambda: [run_of(Mode.REHEARSAL), partial()], True, 6),
    (lambda: [partial(), run_of(Mode.REHEARSAL, "failed")], True, 1),
    (lambda: [run_of(Mode.REHEARSAL, "failed"), interrupted()], False, 2),
], ids=["all certified", "rehearsals", "one not a certification", "partial beats 7", "failed beats partial",
        "interrupted beats failed"])
def test_a_run_of_several_models_exits_with_its_worst_models_code(runs, require, code):
    assert session_exit_code(runs(), pytest.ExitCode.OK, require) == code


def test_a_failure_outside_the_contract_still_fails_a_run_whose_models_passed():
    runs = [run_of(Mode.REHEARSAL), run_of(Mode.REHEARSAL)]
    assert session_exit_code(runs, pytest.ExitCode.TESTS_FAILED, False) == 1
