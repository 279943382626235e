"""summary.json: one object per model, valid against its versioned schema; an invalid one is refused, named."""

from __future__ import annotations

import math
from pathlib import Path

import jsonschema
import pytest

from vllm_gate.contract import Mode, required_checks
from vllm_gate.gate import GateRun
from vllm_gate.report.summary import SCHEMA_VERSION, run_summary, schema
from vllm_gate.slo import SloResult
from vllm_gate.spec import load_spec
from vllm_gate.tools import MODELS_DIR

SPEC = load_spec("llama3", MODELS_DIR)


def a_run() -> GateRun:
    run = GateRun(spec=SPEC, cluster="local (KWOK test)", capabilities=None, report_path=Path("r.html"),
                  mode=Mode.REHEARSAL, cluster_key="local",
                  required=required_checks(SPEC.slo, deployed_by_gate=True, runs_containers=False, real_gpus=False))
    run.simulated = "simulator: vllm-sim-standin"
    run.record("health/test_chat_completion", "passed", "")
    run.record("identity/test_answers_have_not_drifted", "baseline", "5 answers: baseline recorded")
    run.record("gpu/test_pod_has_the_gpus_it_asked_for", "skipped", "recorded telemetry")
    run.slo_results = [SloResult("ttft p95", 75.5, 600, True, "ms"), SloResult("goodput", math.nan, 0.95, False, "")]
    return run


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_a_run_summary_validates_and_says_what_the_run_decided():
    summary = run_summary([a_run()])
    validator().validate(summary)
    assert summary["schema_version"] == SCHEMA_VERSION == 1
    (model,) = summary["models"]
    assert model["verdict"]["mode"] == "rehearsal"
    assert model["verdict"]["kind"] == "partial"  # most required checks never ran in this made-up run
    assert not model["verdict"]["certified"]
    assert model["checks"]["identity/test_answers_have_not_drifted"] == {
        "outcome": "baseline", "message": "5 answers: baseline recorded", "required": True}
    assert model["slo"][1] == {"name": "goodput", "measured": None, "limit": 0.95, "unit": "", "passed": False}
    assert model["image"] == "simulator: vllm-sim-standin"
    assert model["chart"] == "vllm-0.1.0"
    assert model["cluster"] == {"description": "local (KWOK test)", "key": "local"}


@pytest.mark.parametrize(("plant", "path"), [
    (lambda s: s["models"][0].pop("verdict"), "'verdict' is a required property"),
    (lambda s: s["models"][0]["verdict"].update(kind="certified"), "'certified' is not one of"),
    (lambda s: s.update(schema_version=2), "1 was expected"),
    (lambda s: s["models"][0]["slo"][0].update(measured="75 ms"), "'75 ms' is not of type 'number', 'null'"),
])
def test_a_summary_that_breaks_the_schema_is_refused_naming_what(plant, path):
    summary = run_summary([a_run()])
    plant(summary)
    with pytest.raises(jsonschema.ValidationError, match=path):
        validator().validate(summary)


def test_a_certifications_image_is_the_specs_and_the_digest_its_pods_actually_ran():
    run = GateRun(spec=SPEC, cluster="pool", capabilities=None, report_path=Path("r.html"))
    assert run.image() == "vllm/vllm-openai:v0.11.0"
    run.image_ids = ("docker.io/vllm/vllm-openai@sha256:" + "a" * 64,)
    assert run.image() == f"vllm/vllm-openai:v0.11.0 (ran docker.io/vllm/vllm-openai@sha256:{'a' * 64})"
    assert run_summary([run])["models"][0]["image"] == run.image()
