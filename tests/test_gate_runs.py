"""The certification contract end to end: the gate as users run it, on the local cluster, with real PostgreSQL.

Every run here is a rehearsal (the local cluster's pods are KWOK's; a simulator answers), so none may
certify or write the registry a user gives; the contract's certified path is unit-tested in
tests/verdict/test_contract.py and its registry writes in tests/registry/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import jsonschema
import psycopg
import pytest
import yaml
from kubernetes import client

from tests.cluster.test_real_node import skip_unless_node_can_run
from tests.conftest import dump_tables, require, running_local_cluster
from tests.report.chromium import open_page
from vllm_gate.base.kube import api_client
from vllm_gate.base.ports import free_port, port_open
from vllm_gate.base.tools import MODELS_DIR, PROJECT_ROOT, find_tool, require_tool
from vllm_gate.cluster.dataplane import router_standin
from vllm_gate.cluster.dataplane.portforward import PortForward
from vllm_gate.cluster.node.images import chart_images
from vllm_gate.gate.run import chart_version
from vllm_gate.report.summary import schema
from vllm_gate.spec import available, load_spec
from vllm_gate.verdict.contract import known_checks, model_param_id

SUITES = str(PROJECT_ROOT / "suites")
SHORT_LOAD = ["--set", "load.profile.duration_s=5"]
# Short answers (many requests even in a 5 s load test) and wide regression tolerances: two healthy runs on
# 2 shared cores must compare as equal; the planted slower engine (TTFT x3) still fails them.
STEADY = ["--set", "load.output_tokens=16", "--set", "regression.latency_p95_increase=1.0",
          "--set", "regression.throughput_decrease=0.5"]
CLUSTER_TOOLS = ("kwokctl", "kube-apiserver", "helm", "kubectl", "vllm-sim-standin")
GATE_TIMEOUT_S = 420



@pytest.fixture(autouse=True)
def _own_rehearsal_registry(rehearsal_registry: str) -> None:
    """Each gate run compares with and records into a rehearsal registry of its own test."""

@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in CLUSTER_TOOLS:
        require(tool)


def gate_command(tmp_path: Path, *args: str, model: str = "llama3") -> list[str]:
    return [sys.executable, "-m", "pytest", SUITES, "-p", "no:cacheprovider", "--rootdir", str(PROJECT_ROOT),
            "--model", model, "--cluster", "local", "--gate-report", str(tmp_path / "report.html"), *args]


def gate_env(**extra: str) -> dict[str, str]:
    # Not this test session's: pytest-xdist's worker variables describe the test worker, not the gate's own run.
    env = {k: v for k, v in os.environ.items()
           if k not in ("IAS_DATABASE_URL", "HF_TOKEN", "PYTEST_ADDOPTS") and not k.startswith("PYTEST_XDIST_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run_gate(tmp_path: Path, *args: str, model: str = "llama3", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(gate_command(tmp_path, *args, model=model), capture_output=True, text=True,
                          timeout=GATE_TIMEOUT_S * (2 if model == "all" else 1), env=gate_env(**env),
                          cwd=PROJECT_ROOT, check=False)


def node_names(model: str) -> set[str]:
    """Every check of ``model`` as a test name in a run of several models: test_x[llama3], test_slo[llama3-...]."""
    names = set()
    for check in known_checks(load_spec(model, MODELS_DIR).slo):
        test, _, param = check.split("/", 1)[1].partition("[")
        names.add(f"{test}[{model_param_id(model, param.removesuffix(']') or None)}]")
    return names


def registry_rows(dsn: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The rehearsal registry's certifications (model, verdict) in the order recorded, and the registered models."""
    with psycopg.connect(dsn) as conn:
        certifications = conn.execute("SELECT model_name, verdict FROM certifications ORDER BY id").fetchall()
        registered = [row[0] for row in conn.execute("SELECT name FROM model_mappings ORDER BY name")]
    return certifications, registered


# First in this file: the longest gate run (five runs), so that pytest -n 2 starts it early (tests/scheduling.py).
def test_a_full_rehearsal_records_baselines_leaves_the_given_registry_then_compares_and_planted_changes_fail(
        tmp_path, rehearsal_registry, dsn):
    # The given registry holds a row already, so "untouched" means more than "still empty".
    subprocess.run([str(Path(sys.executable).with_name("ias-admin")), "--database-url", dsn, "model", "add",
                    "--name", "llama3", "--display-name", "Llama 3 (production)", "--backend-url",
                    "http://old.ias-production.svc.cluster.local:8000", "--input-cost", "1", "--output-cost", "2"],
                   check=True, capture_output=True, timeout=60)
    before = dump_tables(dsn)
    first = run_gate(tmp_path, *SHORT_LOAD, *STEADY, "--load-from", "local", IAS_DATABASE_URL=dsn)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output
    # A full rehearsal: every suite, the given registry untouched, the evidence beside the report.
    assert "REHEARSAL PASSED (simulator: vllm-sim-standin) — not a certification" in output
    tunnel = "load: measured through kubectl port-forward: latency includes the tunnel"
    assert tunnel in output
    assert "TTFT p95 +17 %" in output  # the warning carries the measured cost of the tunnel
    assert tunnel in (tmp_path / "report.html").read_text()
    assert re.search(r"not registered \(undone: no API-router stand-in reads the rehearsal registry at "
                     r"postgresql://gate:\*\*\*@\S+ \(VLLM_GATE_REHEARSAL_DATABASE_URL; never a production registry\) "
                     r"here\); rehearsal_passed certification 1 recorded there", output), output
    assert re.search(r"the registry you gave \(postgresql://gate:\*\*\*@127\.0\.0\.1:\d+/\w+\) was not touched",
                     output), output
    assert "CERTIFIED" not in output.replace("NOT CERTIFIED", "")
    assert dump_tables(dsn) == before
    report = (tmp_path / "report.html").read_text()
    assert "REHEARSAL PASSED" in report
    # The local cluster's own Prometheus answered the monitoring and gpu suites; its GPU data are named recorded.
    assert "suite monitoring: passed" in output
    assert "suite gpu: passed (on recorded telemetry, not a live GPU)" in output
    for text in (output, report):
        assert "GPU telemetry: recorded telemetry (H100 capture, test data, not a live GPU) in Prometheus" in text
    # The evidence beside the report: summary.json (valid), JUnit listing every check, samples, /metrics, values.
    evidence = tmp_path / "report"
    summary = json.loads((evidence / "summary.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(summary)
    assert summary["models"][0]["verdict"]["headline"].startswith("REHEARSAL PASSED")
    cases = {case.get("name") for case in ElementTree.parse(evidence / "junit.xml").iter("testcase")}  # noqa: S314 (the JUnit XML this test just had pytest write)
    assert len(cases) == len(known_checks(load_spec("llama3", MODELS_DIR).slo))
    assert "test_chat_completion" in cases
    assert len((evidence / "samples.jsonl").read_text().splitlines()) > 0
    assert "vllm:num_requests_running" in (evidence / "metrics-before.txt").read_text()
    assert "vllm:request_success_total" in (evidence / "metrics-after.txt").read_text()  # made by the first success
    assert yaml.safe_load((evidence / "values.yaml").read_text())["engine"] == "sim"
    assert "Scheduled" in (evidence / "events.txt").read_text()

    # The identity baselines that first run recorded, then compared by the next runs.
    assert "suite identity: baseline" in output
    recorded = re.search(r"BASELINE RECORDED identity/test_canary_prompt_tokens_match_the_model: canary prompt "
                         r"tokens (\d+): nothing to compare with \(the first passed rehearsal of llama3 in the "
                         r"rehearsal registry at [^)]*\)\); baseline recorded if this run passes", output)
    assert recorded, output
    assert "BASELINE RECORDED identity/test_answers_have_not_drifted: 5 answers at temperature 0" in output
    assert "identity baseline stored with certification 1" in output
    report = (tmp_path / "report.html").read_text()
    assert "Baseline recorded" in report  # the check's row, not "Passed"
    assert "baseline recorded if this run passes" in report

    second = run_gate(tmp_path, *SHORT_LOAD, *STEADY)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    assert "suite identity: passed" in output
    assert "suite load: passed" in output  # its SLO numbers compared with the first run's
    assert "BASELINE RECORDED" not in output
    assert "identity: drift: 5 of 5 answers match the baseline exactly; mean similarity 1.000" in output

    # Planted: the simulator's TTFT raised (a slower engine) while every SLO still passes.
    slower = run_gate(tmp_path, *SHORT_LOAD, *STEADY, "-k", "load", "--set", "rehearsal.ttft_ms=180",
                      "--set", "rehearsal.ttft_std_ms=20")
    output = slower.stdout + slower.stderr
    assert slower.returncode == 1, output
    assert "SLO PASS ttft p95" in output
    assert re.search(r"FAILED load/test_no_regression_against_the_last_passed_run: AssertionError: ttft p95 "
                     r"regressed \+\d+% \(allowed \+100%\): [\d.]+ now \(\d{4}-\d\d-\d\d \d\d:\d\d UTC, "
                     r"simulator: vllm-sim-standin\) vs [\d.]+ at the last passed rehearsal \(certification 2\) "
                     r"\(\d{4}-\d\d-\d\d \d\d:\d\d UTC, simulator: vllm-sim-standin\)", output), output
    history = subprocess.run([str(Path(sys.executable).with_name("ias-admin")), "--database-url", rehearsal_registry,
                              "model", "history", "llama3"], capture_output=True, text=True, timeout=60, check=True)
    lines = history.stdout.splitlines()
    assert [line.split()[3:5] for line in lines[:3]] == [["#1", "rehearsal_passed"], ["#2", "rehearsal_passed"],
                                                         ["#3", "rehearsal_failed"]], history.stdout
    assert all("ttft p95 " in line and chart_version() in line for line in lines[:3]), history.stdout

    # Planted: the model's answers changed (a vLLM upgrade), nothing else: only the drift check fails.
    changed = run_gate(tmp_path, "-k", "identity", "--set", "rehearsal.answer_salt=v0.12")
    output = changed.stdout + changed.stderr
    assert changed.returncode == 1, output
    assert re.search(r"FAILED identity/test_answers_have_not_drifted: AssertionError: answers drifted from the last "
                     r"passed rehearsal .*most changed \(0\.\d+\) '[^']+': was '.+', now '.+'", output), output
    assert "FAILED identity/test_canary" not in output
    assert "FAILED identity/test_answers_stop" not in output

    # Planted: another chat template and no end-of-sequence (Llama 3 served without its template).
    untemplated = run_gate(tmp_path, "-k", "identity", "--set", "rehearsal.chat_template=none",
                           "--set", "rehearsal.eos_after_tokens=0")
    output = untemplated.stdout + untemplated.stderr
    assert untemplated.returncode == 1, output
    assert re.search(r"FAILED identity/test_canary_prompt_tokens_match_the_model: AssertionError: the canary "
                     rf"conversation takes (?!{recorded[1]} )\d+ prompt tokens, the last passed rehearsal "
                     rf"\([^)]*\) took {recorded[1]}: another tokenizer or chat template", output), output
    assert ("FAILED identity/test_answers_stop_within_the_bound: AssertionError: 'Say hello.': never stopped: "
            "finish_reason length at 512 tokens") in output


def test_every_model_in_one_run_is_deployed_checked_and_decided_before_the_next(tmp_path, rehearsal_registry):
    require("chromium")
    models = available(MODELS_DIR)
    assert models == ["llama3", "mistral-7b"]
    # 10 s: a 5 s load's tokens/s on a busy machine fell under mistral-7b's 100 tok/s floor once (75, CI 15:40 UTC).
    result = run_gate(tmp_path, *SHORT_LOAD, "--set", "load.profile.duration_s=10", "-v", model="all")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Two verdicts, each under its model.
    for model in models:
        assert re.search(rf"^model {model} on local \(.*\):\n  REHEARSAL PASSED \(simulator: vllm-sim-standin\) — not "
                         r"a certification \(first of its kind: 3 comparisons recorded baselines\)$", output,
                         re.M), output
        assert re.search(rf"^  {model}: REHEARSAL PASSED .* \(\d+ s\)$", output, re.M), output
    # Per-model node ids; every check of llama3 ran before the first of mistral-7b, whose deploy came only after
    # llama3 was recorded (in the rehearsal registry) and undone.
    ran = re.findall(r"^suites/test_\w+\.py::(test_\w+\[[^\]]+\]) (?:PASSED|SKIPPED|BASELINE)", output, re.M)
    assert set(ran) == node_names("llama3") | node_names("mistral-7b"), output
    assert ["llama3" if "[llama3" in name else "mistral-7b" for name in ran] == (
        ["llama3"] * len(node_names("llama3")) + ["mistral-7b"] * len(node_names("mistral-7b"))), ran
    assert "suites/test_load.py::test_slo[mistral-7b-ttft p95] PASSED" in output
    # Each model is its own candidate release (<model>-<revision id>).
    order = [re.search(line, output).start() for line in (
        r"vllm-gate: llama3: uninstalled ias-production/llama3-[0-9a-f]{6} ",
        r"vllm-gate: llama3: not registered \(undone: ",
        r"helm: mistral-7b-[0-9a-f]{6} revision 1",
        r"vllm-gate: mistral-7b: uninstalled ias-production/mistral-7b-[0-9a-f]{6} ",
        r"vllm-gate: mistral-7b: not registered \(undone: ")]
    assert order == sorted(order), output
    assert registry_rows(rehearsal_registry) == (  # recorded; no rows: nothing routes to an undone rehearsal
        [("llama3", "rehearsal_passed"), ("mistral-7b", "rehearsal_passed")], [])
    # One report: an overview, then a section per model with its own verdict, SLO table and plots.
    report = (tmp_path / "report.html").read_text()
    assert report.count('class="vllm-gate-signoff"') == 2
    assert report.count('class="vllm-gate-slo"') == 2
    assert "vllm-gate: 2 models, one after another" in report
    assert report.index('id="vllm-gate-llama3"') < report.index('id="vllm-gate-mistral-7b"')
    opened = open_page(str(find_tool("chromium")), tmp_path / "report.html", tmp_path / "browser")
    assert (opened.console, opened.requests) == ([], [])
    headings = [h["text"] for h in opened.facts["headings"]]  # as drawn, top to bottom
    assert headings[:4] == ["vllm-gate sign-off: llama3, mistral-7b", "Summary",
                            "vllm-gate: 2 models, one after another", "vllm-gate verdict and sign-off: llama3"]
    assert headings.index("vllm-gate verdict and sign-off: mistral-7b") < headings.index("Environment")
    # One summary.json with an object per model; one JUnit XML listing every check of each model.
    evidence = tmp_path / "report"
    summary = json.loads((evidence / "summary.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(summary)
    llama3, mistral = summary["models"]
    assert (llama3["name"], mistral["name"]) == ("llama3", "mistral-7b")
    assert llama3["verdict"]["kind"] == mistral["verdict"]["kind"] == "passed"
    assert llama3["finished_at"] <= mistral["started_at"]  # one after another, not side by side
    assert re.fullmatch(r"llama3-[0-9a-f]{6}", llama3["release"]["name"])  # its candidate release
    cases = [case.get("name") for case in ElementTree.parse(evidence / "junit.xml").iter("testcase")]  # noqa: S314 (the JUnit XML this test just had pytest write)
    assert sorted(cases) == sorted(node_names("llama3") | node_names("mistral-7b"))
    for model in models:  # each model's own evidence
        assert yaml.safe_load((evidence / model / "values.yaml").read_text())["engine"] == "sim"
        assert len((evidence / model / "samples.jsonl").read_text().splitlines()) > 0
        assert "Scheduled" in (evidence / model / "events.txt").read_text()


def test_a_model_that_fails_does_not_stop_or_taint_the_next_and_the_run_fails(tmp_path, rehearsal_registry):
    # Planted: llama3 (first) asks for a GPU type the pool lacks; the --set names it, so mistral-7b keeps its own.
    result = run_gate(tmp_path, *SHORT_LOAD, "--set", "llama3:resources.gpu_type=h100-sxm",
                      "--require-certification", model="all")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output  # the worst model's code: a failure beats a passed rehearsal's 7
    assert re.search(r"^model llama3 on local \(.*\):\n  REHEARSAL FAILED \(simulator: vllm-sim-standin\)", output,
                     re.M), output
    assert "preflight: 1 pod of (1 nvidia.com/gpu + 4 cpu + 20Gi memory) needed, but no schedulable node has " \
           "gpu-type=h100-sxm" in output
    assert re.search(r"^model mistral-7b on local \(.*\):\n  REHEARSAL PASSED \(simulator: vllm-sim-standin\)",
                     output, re.M), output
    assert "vllm-gate: llama3: the gate deployed nothing in this run: nothing rolled back" in output
    assert registry_rows(rehearsal_registry) == (
        [("llama3", "rehearsal_failed"), ("mistral-7b", "rehearsal_passed")], [])
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(summary)
    assert [(m["name"], m["verdict"]["kind"], m["verdict"]["exit_code"]) for m in summary["models"]] == [
        ("llama3", "failed", 1), ("mistral-7b", "passed", 0)]
    assert summary["models"][0]["release"] is None


# A scaling policy the simulator proves: 16 requests run at once per pod and the rest queue, so 21 users (what two
# replicas of a knee of 16 hold, checks.scaling.load_users) queue 5 on one pod, twice the target; two pods hold
# them. The scale-down window outlasts the load once scaled out; the SLO load test's 8 users queue nothing.
# TTFT p95/p99 of 4 s: Locust's users keep their connections (as a router's pool does), and a Service never moves a
# kept connection, so the first pod keeps queueing a few requests (a queued one waits a whole 3 s request) until
# its users reconnect: on 2 busy cores 2 of 145 judged requests (CI, 15:22 UTC).
SCALING = ["--set", "rehearsal.max_num_seqs=16", "--set", "autoscaling.enabled=true", "--set", "autoscaling.target=2",
           "--set", "autoscaling.load_users=21", "--set", "autoscaling.scale_out_within_s=45",
           "--set", "autoscaling.hold_s=20", "--set", "autoscaling.scale_down_stabilization_s=75",
           "--set", "slo.ttft_ms.p95=4000", "--set", "slo.ttft_ms.p99=4000"]


@pytest.mark.real_node
def test_a_rehearsal_on_the_real_node_runs_its_pod_probes_service_helm_test_and_autoscaler_for_real(
        tmp_path, rehearsal_registry):
    skip_unless_node_can_run()
    result = run_gate(tmp_path, *SHORT_LOAD, *SCALING, VLLM_GATE_LOCAL_NODE="real")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "REHEARSAL PASSED (simulator: vllm-sim-standin) — not a certification" in output
    assert "CERTIFIED" not in output.replace("NOT CERTIFIED", "")
    assert re.search(r"pod llama3-[0-9a-f]{6}-vllm-\S+ on node real-0 \(its kubelet ran the container\)",
                     output), output
    # The default where pods run containers: the load came from Locust pods in the router's namespace.
    assert re.search(r"load: measured in-cluster: Locust 1 worker with the router's labels and a master "
                     r"\(locustio/locust:\S+\) as pods in ias-production", output), output
    assert "through kubectl port-forward" not in output
    junit = ElementTree.parse(tmp_path / "report" / "junit.xml")  # noqa: S314 (the JUnit XML this test just had pytest write)
    cases = {case.get("name"): list(case) for case in junit.iter("testcase")}
    # Passed for real (no skipped or failure element): they run pods, which only the real node can.
    assert cases["test_helm_test_passes"] == [], "helm test did not pass for real"
    assert cases["test_network_policy_is_enforced"] == [], "the NetworkPolicy probe did not pass for real"
    assert "suite monitoring: passed" in output
    events = (tmp_path / "report" / "events.txt").read_text()
    assert re.search(r"Successfully assigned ias-production/llama3-[0-9a-f]{6}-vllm-\S+ to real-0", events), events
    assert "Started" in events  # the kubelet started the container
    # The real HPA controller read the queue through the local prometheus-adapter, added a pod on the real node
    # that served, and took it away after the load.
    assert cases["test_hpa_reads_its_metric"] == [], "the HPA did not read its metric for real"
    assert cases["test_scales_out_under_load_and_back_in"] == [], output
    scaled = json.loads((tmp_path / "report" / "summary.json").read_text())["models"][0]["scaling"]
    assert (scaled["users"], scaled["peak_serving"], scaled["problems"]) == (21, 2, [])
    assert len([pod for pod, answered in scaled["served_by_pod"].items() if answered > 0]) == 2
    assert 0 < scaled["scale_out_s"] <= 45
    assert scaled["scale_in_s"] is not None
    assert scaled["after_scale_out"]["passed"]
    assert any(p["metric"] and p["metric"] > 2 for p in scaled["points"])  # the queue the HPA scaled on


@pytest.mark.parametrize(("target", "selection", "missing"), [
    (SUITES, ["-k", "health"], "metrics/test_required_vllm_metric_families_are_exposed"),
    (f"{SUITES}/test_exposure.py", [], "health/test_chat_completion"),
    (SUITES, ["--deselect", "suites/test_load.py::test_slo[ttft p95]"], "load/test_slo[ttft p95]"),
], ids=["-k health", "one suite file", "--deselect one SLO"])
def test_a_subset_is_partial_names_what_did_not_run_and_registers_nothing(tmp_path, target, selection, missing):
    cmd = gate_command(tmp_path, *SHORT_LOAD, *selection)
    cmd[cmd.index(SUITES)] = target
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=GATE_TIMEOUT_S, env=gate_env(),
                            cwd=PROJECT_ROOT, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 6, output
    assert re.search(r"REHEARSAL PARTIAL \(simulator: vllm-sim-standin\) — not a certification: \d+ required "
                     r"checks? did not run", output), output
    assert f"DID NOT RUN {missing}" in output
    assert "uninstalled ias-production/llama3" in output
    assert "not registered; rehearsal_partial certification 1 recorded" in output
    assert "registered llama3 ->" not in output


def _descendants(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            children += [child, *_descendants(child)]
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_load_test_is_interrupted_undone_and_recorded(tmp_path, sig):
    proc = subprocess.Popen(gate_command(tmp_path, "--set", "load.profile.duration_s=60"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=gate_env(), cwd=PROJECT_ROOT)
    lines: list[str] = []
    started = time.monotonic()
    children: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.lstrip().startswith("load "):  # the load test's first progress line
                children = _descendants(proc.pid)
                proc.send_signal(sig)
                break
            assert time.monotonic() - started < GATE_TIMEOUT_S, "".join(lines)
        lines += proc.stdout.readlines()
        proc.wait(GATE_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines)
    assert children, f"the load test never started:\n{output}"
    assert proc.returncode == 2, output
    assert re.search(rf"REHEARSAL INTERRUPTED \(simulator: vllm-sim-standin\) — not a certification: "
                     rf"{'SIGINT' if sig == signal.SIGINT else 'SIGTERM'}", output), output
    assert "uninstalled ias-production/llama3" in output
    assert "not registered; rehearsal_interrupted certification 1 recorded" in output
    assert "registered llama3 ->" not in output
    forwarded = re.search(r"port-forward svc/\S+ -> http://127\.0\.0\.1:(\d+)", output)
    assert forwarded, output
    assert not port_open(int(forwarded.group(1)))
    # The watchdog of the local cluster outlives the gate by design only until it has cleaned up.
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [pid for pid in children if _alive(pid)] == []


@pytest.fixture(scope="module")
def pool():
    """A local cluster the gate reaches as --cluster existing (a stand-in for the GPU pool)."""
    yield from running_local_cluster("pool")


def _locust_environments(stop: threading.Event, seen: list[bytes]) -> None:
    """Collect the environment of every Locust process that runs until ``stop`` (the gate's load test)."""
    while not stop.wait(0.2):
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if b"locustfile.py" in cmdline.read_bytes():
                    seen.append((cmdline.parent / "environ").read_bytes())
            except OSError:
                continue


@pytest.mark.parametrize("form", ["url", "query", "keyword"])
def test_planted_secrets_reach_no_output_report_junit_helm_values_or_locust(tmp_path, pool, postgres, form):
    password = f"Pl4nted-{form}-pw"
    token = "hf_" + "S3cr3t" * 6
    # A Prometheus behind basic auth (nothing listens there); '#' and '/' defeat URL parsers' user-info.
    prometheus_password = "Pr0m#/" + "b4sic" * 4
    host, port = "127.0.0.1", postgres.port
    dsn = {"url": f"postgresql://gate:{password}@{host}:{port}/registry",
           "query": f"postgresql://gate@{host}:{port}/registry?password={password}&connect_timeout=5",
           "keyword": f"host={host} port={port} dbname=registry user=gate password='{password}'"}[form]
    stop, environments = threading.Event(), []
    watcher = threading.Thread(target=_locust_environments, args=(stop, environments), daemon=True)
    watcher.start()
    try:
        cmd = gate_command(tmp_path, *SHORT_LOAD, "--showlocals", "-vv", "--junitxml", str(tmp_path / "junit.xml"),
                           "--keep-on-failure", "-k", "registry or health or slo")
        cmd[cmd.index("local")] = "existing"
        result = subprocess.run([*cmd, "--kubeconfig", str(pool.kubeconfig)], capture_output=True, text=True,
                                timeout=GATE_TIMEOUT_S, env=gate_env(
                                    HF_TOKEN=token, IAS_DATABASE_URL=dsn,
                                    VLLM_GATE_PROMETHEUS_URL=f"http://gate:{prometheus_password}@127.0.0.1:{free_port()}"),
                                cwd=PROJECT_ROOT, check=False)
    finally:
        stop.set()
        watcher.join(5)
    output = result.stdout + result.stderr
    # The DSN was read and shown (redacted): the late-found rehearsal left the given registry alone.
    assert re.search(r"the registry you gave \(.*\*\*\*.*\) was not touched", output), output
    assert environments, f"no Locust process was seen: the load test did not run\n{output}"
    kept = re.search(r"helm: (llama3-[0-9a-f]{6}) revision 1", output)  # the candidate --keep-on-failure kept
    assert kept, output
    helm = subprocess.run([str(require_tool("helm")), "--kubeconfig", str(pool.kubeconfig), "get", "values",
                           kept.group(1), "-n", "ias-production", "--all", "-o", "yaml"], capture_output=True,
                          text=True, timeout=60, check=True).stdout
    subprocess.run([str(require_tool("helm")), "--kubeconfig", str(pool.kubeconfig), "uninstall", kept.group(1), "-n",
                    "ias-production", "--wait"], capture_output=True, timeout=120, check=True)
    places = {"terminal": output, "HTML report": (tmp_path / "report.html").read_text(),
              "JUnit XML": (tmp_path / "junit.xml").read_text(), "Helm values": helm,
              "Locust environment": b"\n".join(environments).decode(errors="replace")}
    for where, text in places.items():
        assert password not in text, f"the DSN password is in the {where}"
        assert token not in text, f"the HF token is in the {where}"
        assert prometheus_password not in text, f"the Prometheus password is in the {where}"
    # Said once, redacted: its user-info's '#' makes it no URL a client can use (percent-encoded, it would be tried).
    assert re.search(r"monitoring: Prometheus http://\*\*\*@127\.0\.0\.1:\d+ is not a usable URL \(InvalidURL\): "
                     "percent-encode", output), output


def test_a_deploy_that_fails_before_helm_removes_the_namespace_it_created(tmp_path, pool):
    cmd = gate_command(tmp_path, "-k", "health", "--set", "namespace=gate-made")  # no HF token Secret there
    cmd[cmd.index("local")] = "existing"
    result = subprocess.run([*cmd, "--kubeconfig", str(pool.kubeconfig)], capture_output=True, text=True,
                            timeout=GATE_TIMEOUT_S, env=gate_env(), cwd=PROJECT_ROOT, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "no HF token: set $HF_TOKEN or create Secret gate-made/hf-token (key token)" in output
    assert re.search(r"nothing deployed; deleted namespace gate-made \(gone after \d+ s\)", output), output
    core = client.CoreV1Api(api_client(pool.kubeconfig, pool.context))
    assert core.list_namespace(field_selector="metadata.name=gate-made").items == []


# curl paces itself (--rate) through one URL glob of many transfers; the image has no sleep.
TRAFFIC = ("exec curl -s -o /dev/null -m 10 --rate 5/s -w '%{http_code}\\n' -H 'Content-Type: application/json' "
           "-d '{\"model\": \"llama3\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
           "\"max_tokens\": 2}' \"$ROUTER/v1/chat/completions?n=[1-1000000]\"")


def _traffic_pod(core: client.CoreV1Api) -> str:
    """A client of the router (no router labels: it calls the router, not the model) that asks for llama3 through
    the API-router stand-in five times a second and logs each answer's status."""
    name = "router-traffic"
    core.create_namespaced_pod("ias-production", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "real-0"}, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "curl", "image": chart_images()["tests"], "command": ["sh", "-c", TRAFFIC],
                                 "env": [{"name": "ROUTER",
                                          "value": "http://router-standin.ias-production.svc.cluster.local:8080"}]}]}})
    deadline = time.monotonic() + 60
    while core.read_namespaced_pod(name, "ias-production").status.phase != "Running":
        assert time.monotonic() < deadline, "the router's traffic pod did not start"
        time.sleep(0.5)
    return name


def _router_stats(kubeconfig: str) -> dict[str, Any]:
    """The API-router stand-in's own account: per backend, requests, failures, first and last sent; its table."""
    with PortForward("ias-production", "svc/router-standin", router_standin.PORT, kubeconfig=Path(kubeconfig),
                     context=None) as forward:
        return httpx.get(f"{forward.url}/stats", timeout=10).json()


def _promoted(result: subprocess.CompletedProcess[str], tmp_path: Path) -> dict[str, object]:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "REHEARSAL PASSED (simulator: vllm-sim-standin)" in output, output
    return json.loads((tmp_path / "report" / "summary.json").read_text())["models"][0]["promotion"]


@pytest.mark.real_node
def test_rehearsals_on_a_standing_cluster_switch_the_router_only_to_a_candidate_that_passed(tmp_path, monkeypatch):
    skip_unless_node_can_run()
    # vllm-gate cluster up, then --cluster existing: the rehearsal registry of its own state directory (which the
    # PostgreSQL account must enter), read by the API-router stand-in the first run starts.
    monkeypatch.delenv("VLLM_GATE_REHEARSAL_DATABASE_URL")
    state = Path(tempfile.mkdtemp(prefix="vllm-gate-state-"))
    state.chmod(0o711)
    env = gate_env(VLLM_GATE_STATE=str(state))
    cli = [str(Path(sys.executable).with_name("vllm-gate")), "cluster"]
    up = subprocess.run([*cli, "up", "--name", "standing", "--gpu-nodes", "1", "--node", "real"], capture_output=True,
                        text=True, timeout=300, env=env, cwd=PROJECT_ROOT, check=False)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        exports = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
        kubeconfig = exports["KUBECONFIG"]
        env["VLLM_GATE_PROMETHEUS_URL"] = exports["VLLM_GATE_PROMETHEUS_URL"]  # the cluster's own Prometheus
        core = client.CoreV1Api(api_client(Path(kubeconfig), None))

        def rehearse(run: str, *sets: str) -> subprocess.CompletedProcess[str]:
            (tmp_path / run).mkdir()
            cmd = gate_command(tmp_path / run, *SHORT_LOAD, "--set", "engine=sim", "--set", "promotion.drain_s=3",
                               *sets)
            cmd[cmd.index("local")] = "existing"
            return subprocess.run([*cmd, "--kubeconfig", kubeconfig], capture_output=True, text=True,
                                  timeout=GATE_TIMEOUT_S, env=env, cwd=PROJECT_ROOT, check=False)

        first = _promoted(rehearse("first"), tmp_path / "first")
        assert first["live_before"] is None
        assert first["switched_at"]
        assert "the router named the candidate's backend (x-router-backend)" in first["router"]
        traffic = _traffic_pod(core)
        # A changed image tag: the live revision serves the router's traffic while the candidate takes the load test,
        # so the exact counter checks pass beside that traffic.
        second_run = rehearse("second", "--set", "image.tag=v0.11.1")
        second = _promoted(second_run, tmp_path / "second")
        assert "suite metrics: passed" in second_run.stdout
        assert second["live_before"] == first["live_after"] != second["live_after"]
        assert "the router named the candidate's backend (x-router-backend)" in second["router"]
        old_release = re.search(r"candidate: ias-production/(\S+) ", "\n".join(first["lines"])).group(1)
        assert f"uninstalled the previous revision ias-production/{old_release} (drained 3 s after the switch)" in (
            second_run.stdout)
        # A planted bad candidate: an SLO it cannot meet. Not promoted: the row and the live revision untouched.
        third_run = rehearse("third", "--set", "slo.ttft_ms.p50=1")
        output = third_run.stdout + third_run.stderr
        assert third_run.returncode == 1, output
        assert "REHEARSAL FAILED (simulator: vllm-sim-standin)" in output
        third = json.loads((tmp_path / "third" / "report" / "summary.json").read_text())["models"][0]["promotion"]
        assert third["live_before"] == third["live_after"] == second["live_after"]
        assert third["switched_at"] is None
        statuses = core.read_namespaced_pod_log(traffic, "ias-production").split()
        stats = _router_stats(kubeconfig)
        (tmp_path / "router-stats.json").write_text(json.dumps(stats, indent=2))  # beside the three runs' reports
        releases = subprocess.run([str(require_tool("helm")), "--kubeconfig", kubeconfig, "list", "-n",
                                   "ias-production", "-q"], capture_output=True, text=True, timeout=60,
                                  check=True).stdout.split()
    finally:
        subprocess.run([*cli, "down", "--name", "standing"], capture_output=True, timeout=300, env=env, check=False)
        shutil.rmtree(state, ignore_errors=True)
    switched = datetime.fromisoformat(second["switched_at"])
    assert stats["table"]["llama3"]["backend_url"] == second["live_after"]  # the bad candidate left the row alone
    backends = stats["backends"]
    old, new = backends[first["live_after"]], backends[second["live_after"]]
    assert set(backends) == {first["live_after"], second["live_after"]}, backends  # never the bad candidate
    assert set(statuses) <= {"200"}, statuses  # what the client saw (curl's lines flushed so far)
    assert old["failures"] == new["failures"] == 0, backends
    assert min(old["requests"], new["requests"]) > 0, backends
    # Nothing reached the candidate before the row named it; once the router had read the row, only the candidate.
    assert datetime.fromisoformat(new["first"]) >= switched, (backends, switched)
    assert datetime.fromisoformat(old["last"]) <= switched + timedelta(seconds=router_standin.REFRESH_S + 1), (
        backends, switched)
    new_release = re.search(r"candidate: ias-production/(\S+) ", "\n".join(second["lines"])).group(1)
    assert releases == [new_release], releases  # the first one retired after its drain, the bad one undone
