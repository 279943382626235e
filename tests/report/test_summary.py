"""summary.json: one object per model, valid against its versioned schema; an invalid one is refused, named."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest

from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.gate import kv_cache
from vllm_gate.gate.run import GateRun
from vllm_gate.load.slo import SloResult
from vllm_gate.report.summary import SCHEMA_VERSION, run_summary, schema
from vllm_gate.sizing.engine import compare_cache_config, cpu_prediction
from vllm_gate.spec import load_spec
from vllm_gate.verdict.contract import Mode, required_checks

SPEC = load_spec("llama3", MODELS_DIR)
REPORTED = {"block_size": "128", "num_gpu_blocks": "16384", "kv_cache_size_tokens": "2097152",
            "kv_cache_memory_bytes": "1073741824", "gpu_memory_utilization": "0.95", "engine": "0"}


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


def two_runs(first_s: float, second_s: float) -> tuple[GateRun, GateRun]:
    """llama3 then mistral-7b, one after the other, taking ``first_s`` and ``second_s``."""
    first = a_run()
    second = dataclasses.replace(a_run(), spec=load_spec("mistral-7b", MODELS_DIR))
    first.finished_at = first.started_at + timedelta(seconds=first_s)
    second.started_at = first.finished_at
    second.finished_at = second.started_at + timedelta(seconds=second_s)
    return first, second


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_a_run_summary_validates_and_says_what_the_run_decided():
    run = a_run()
    run.slo_results.append(SloResult("error rate", 0.075, 0.01, False, "", "3 of 40 requests cut at the end of the "
                                                                         "load test, counted as not completed"))
    run.sizing = ["sizing (estimate): llama3 on rtx-6000-ada: ..."]
    # The labels vLLM 0.32.0's CPU build served for the tiny model, against its exact prediction.
    predicted = cpu_prediction(512, 2**30, 0.95, "tiny model")
    run.kv_cache = kv_cache.KvCacheComparison(predicted, REPORTED, compare_cache_config(predicted, REPORTED))
    summary = run_summary([run])
    validator().validate(summary)
    assert summary["schema_version"] == SCHEMA_VERSION == 4
    (model,) = summary["models"]
    assert model["verdict"]["mode"] == "rehearsal"
    assert model["verdict"]["kind"] == "partial"  # most required checks never ran in this made-up run
    assert not model["verdict"]["certified"]
    assert model["checks"]["identity/test_answers_have_not_drifted"] == {
        "outcome": "baseline", "message": "5 answers: baseline recorded", "required": True}
    assert model["slo"][1] == {"name": "goodput", "measured": None, "limit": 0.95, "unit": "", "passed": False,
                               "note": ""}
    assert model["slo"][2]["note"] == "3 of 40 requests cut at the end of the load test, counted as not completed"
    assert model["sizing"] == ["sizing (estimate): llama3 on rtx-6000-ada: ..."]
    assert model["kv_cache"]["difference"] == {"num_gpu_blocks": 0.0, "kv_cache_size_tokens": 0.0, "block_size": 0.0,
                                               "gpu_memory_utilization": 0.0, "kv_cache_memory_bytes": 0.0}
    assert model["kv_cache"]["lines"][1] == "KV cache: reported the same (vllm:cache_config_info)"
    assert model["image"] == "simulator: vllm-sim-standin"
    assert model["chart"] == "vllm-0.1.0"
    assert model["cluster"] == {"description": "local (KWOK test)", "key": "local"}


@pytest.mark.parametrize(("plant", "path"), [
    (lambda s: s["models"][0].pop("verdict"), "'verdict' is a required property"),
    (lambda s: s["models"][0]["verdict"].update(kind="certified"), "'certified' is not one of"),
    (lambda s: s.update(schema_version=3), "4 was expected"),
    (lambda s: s["models"][0]["slo"][0].update(measured="75 ms"), "'75 ms' is not of type 'number', 'null'"),
])
def test_a_summary_that_breaks_the_schema_is_refused_naming_what(plant, path):
    summary = run_summary([a_run()])
    plant(summary)
    with pytest.raises(jsonschema.ValidationError, match=path):
        validator().validate(summary)


def test_a_run_of_several_models_holds_one_object_each_with_its_own_times():
    first, second = two_runs(30, 12.5)
    summary = run_summary([first, second])
    validator().validate(summary)
    assert [(m["name"], m["model_id"], m["duration_s"]) for m in summary["models"]] == [
        ("llama3", "meta-llama/Meta-Llama-3-8B-Instruct", 30.0), ("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.3",
                                                               12.5)]
    assert summary["models"][0]["finished_at"] == summary["models"][1]["started_at"]


def test_a_certifications_image_is_the_specs_and_the_digest_its_pods_actually_ran():
    run = GateRun(spec=SPEC, cluster="pool", capabilities=None, report_path=Path("r.html"))
    assert run.image() == "vllm/vllm-openai:v0.11.0"
    run.image_ids = ("docker.io/vllm/vllm-openai@sha256:" + "a" * 64,)
    assert run.image() == f"vllm/vllm-openai:v0.11.0 (ran docker.io/vllm/vllm-openai@sha256:{'a' * 64})"
    assert run_summary([run])["models"][0]["image"] == run.image()
