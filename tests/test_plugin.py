"""The gate as users run it (pytest suites/ ...), in a separate pytest process via pytester."""

from __future__ import annotations

import base64
import os
import re
import threading
import time

import httpx
import pytest
from kubernetes import client

from tests.conftest import require
from tests.standin import UNPINNED_CANARY, VLLM_VERSION
from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import MODELS_DIR, PROJECT_ROOT
from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.cluster.local import GpuPool, LocalCluster
from vllm_gate.spec import load_spec
from vllm_gate.verdict.contract import known_checks

SUITES = str(PROJECT_ROOT / "suites")
SHORT_LOAD = ["--set", "load.profile.duration_s=3", "--set", "load.profile.users=2", *UNPINNED_CANARY]



@pytest.fixture(autouse=True)
def _own_rehearsal_registry(rehearsal_registry: str) -> None:
    """Each gate run compares with and records into a rehearsal registry of its own test."""

@pytest.fixture
def gate(pytester: pytest.Pytester, tmp_path):
    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(SUITES, "-p", "no:cacheprovider", "--rootdir", str(PROJECT_ROOT),
                                             "--gate-report", str(tmp_path / "report.html"), *args, timeout=300)
    return run


@pytest.fixture
def sim():
    require("vllm-sim-standin")
    with SimServer(model="meta-llama/Meta-Llama-3-8B-Instruct", max_model_len=8192, ttft_ms=20, itl_ms=2,
                   vllm_version=VLLM_VERSION) as server:
        yield server


def test_suites_without_model_are_a_usage_error(gate):
    result = gate()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*the gate suites need --model NAME_OR_PATH (e.g. --model llama3)*"])


def test_invalid_spec_fails_before_anything_with_file_and_field(gate):
    result = gate("--model", "llama3", "--set", "resources.gpus=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*models/llama3.yaml (with --set resources.gpus=0): resources.gpus: Input should "
                                 "be greater than or equal to 1"])


def test_bad_cluster_choice_is_a_usage_error(gate):
    result = gate("--model", "llama3", "--cluster", "minikube")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --cluster: invalid choice: 'minikube'*"])


def test_endpoint_mode_passes_a_healthy_server_and_skips_kubernetes_checks(gate, sim, tmp_path):
    result = gate("--model", "llama3", "--endpoint-url", sim.url, *SHORT_LOAD)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines([
        "vllm-gate: sizing (estimate): llama3 on rtx-6000-ada: KV cache * GiB = * tokens *",
        # The server is not known to be the stand-in: its KV cache is held to the estimate for the spec's GPU, and
        # the stand-in's llm-d default (1,024 blocks of 16) is reported as far from it.
        "vllm-gate: KV cache: predicted * blocks x 16 = * tokens (estimate for llama3 on rtx-6000-ada, vllm-gate size)",
        "vllm-gate: KV cache: reported num_gpu_blocks: predicted *, reported 1,024 (-9*%); kv_cache_size_tokens: "
        "predicted *, reported 16,384 (-9*%); gpu_memory_utilization: predicted 0.95, reported 0.9 (-5.3%)*",
        "*vllm-gate verdict*",
        "*ENDPOINT CHECKS PASSED — not a certification: the gate did not deploy this server",
        "*SKIPPED exposure/test_every_service_is_cluster_ip: needs Kubernetes; this run checks --endpoint-url*",
        "*SLO PASS ttft p95*",
        "*the gate deployed nothing in this run: nothing rolled back*",
        "*not registered: an --endpoint-url run never registers*",
    ])
    assert "CERTIFIED" not in result.stdout.str().replace("NOT CERTIFIED", "")
    assert "vllm-gate verdict" in (tmp_path / "report.html").read_text()


def test_endpoint_mode_with_wrong_served_name_fails_health_and_x_names_what_did_not_run(gate, sim):
    result = gate("--model", "llama3", "--endpoint-url", sim.url, "--set", "served_model_name=llama-3", "-x")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*is healthy but /v1/models lists ?'meta-llama/Meta-Llama-3-8B-Instruct'?, "
                                 "not 'llama-3'*",
                                 "*ENDPOINT CHECKS FAILED — not a certification*",
                                 "*DID NOT RUN load/test_slo?ttft p50?*"])


def test_counters_that_disagree_with_the_client_fail_the_metrics_suite(gate, sim):
    stop = threading.Event()

    def other_client() -> None:  # traffic the load generator does not know about
        while not stop.is_set():
            httpx.post(f"{sim.url}/v1/chat/completions", timeout=10, json={
                "model": "meta-llama/Meta-Llama-3-8B-Instruct", "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}]})
            time.sleep(0.05)

    thread = threading.Thread(target=other_client, daemon=True)
    thread.start()
    try:
        result = gate("--model", "llama3", "--endpoint-url", sim.url, *SHORT_LOAD, "-k", "counters")
    finally:
        stop.set()
        thread.join(10)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*vllm:request_success grew by *, the load client measured * successful requests*"])


def test_a_max_model_len_its_gpu_type_cannot_hold_is_refused_before_any_cluster_naming_what_fits(gate, tmp_path):
    # Llama 3.1's 131,072 positions on Llama 3 8B's architecture: the 24 GB card's KV cache is the limit.
    result = gate("--model", "llama3", "--cluster", "local", "--set", "vllm.max_model_len=131072",
                  "--set", "resources.gpu_type=l4", "--set", "architecture.max_position_embeddings=131072")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*preflight: vllm.max_model_len 131072 does not fit one request on l4: the KV cache "
                                 "gets * GiB = * tokens*set vllm.max_model_len to at most *"])
    assert "local cluster" not in result.stdout.str() + result.stderr.str()  # no cluster was started
    assert not (tmp_path / "report.html").exists()  # nothing half-written


@pytest.mark.parametrize(("args", "message"), [
    (["--find-capacity", "--promotion", "in-place"], "with --promotion in-place the candidate is the live revision"),
    (["--endpoint-url", "http://127.0.0.1:1", "--set", "capacity.enabled=true"],
     "give --find-capacity to confirm for a server the gate did not deploy"),
])
def test_a_capacity_search_that_would_load_a_serving_revision_is_refused(gate, args, message):
    result = gate("--model", "llama3", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_a_model_that_cannot_fit_fails_before_deploying_says_it_once_and_registers_nothing(gate):
    for tool in ("kwokctl", "kube-apiserver", "helm", "kubectl"):
        require(tool)
    result = gate("--model", "llama3", "--cluster", "local", "--set", "resources.gpu_type=h100-sxm", "-k", "health")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    cause = ("preflight: 1 pod of (1 nvidia.com/gpu + 4 cpu + 20Gi memory) needed, but no schedulable node has "
             "gpu-type=h100-sxm; the cluster has gpu-type rtx-6000-ada (gpu-0, gpu-1)")
    result.stdout.fnmatch_lines([
        "*REHEARSAL FAILED (simulator: *) — not a certification*",
        f"*FAILED setup/suites/test_health.py::test_health_endpoint_answers_200: {cause}",
        f"*NOT RUN 7 checks: {cause}",
        "*the gate deployed nothing in this run: nothing rolled back*",
        "*not registered; rehearsal_failed certification 1 recorded in the rehearsal registry at postgresql://*",
    ])
    output = result.stdout.str()
    # Said in full once; every other check that needed the deployment says so in one line.
    assert output.count(f"\n{cause}\n") == 1, output
    assert sum(line.startswith("not run: preflight") for line in result.outlines) == 6, output


def test_existing_cluster_gets_the_vllm_engine_and_the_token_only_as_a_secret(gate, tmp_path, monkeypatch):
    for tool in ("kwokctl", "kube-apiserver", "helm", "kubectl"):
        require(tool)
    token = "hf_" + "Q" * 34
    monkeypatch.setenv("HF_TOKEN", token)
    # The local cluster stands in for the GPU pool; its data plane answers for the vLLM pod.
    local = LocalCluster(name=f"existing-{os.getpid()}", pool=GpuPool(nodes=1), real_node=False,
                         progress=lambda _m: None)
    local.start()
    try:
        result = gate("--model", "llama3", "--cluster", "existing", "--kubeconfig", str(local.kubeconfig),
                      "--keep-on-failure", "-k", "health", *SHORT_LOAD)
        api = api_client(local.kubeconfig, local.context)
        secret = client.CoreV1Api(api).read_namespaced_secret("hf-token", "ias-production")
        # --keep-on-failure kept the candidate: its own release, named for the model and a revision id.
        deployment, = [d for d in client.AppsV1Api(api).list_namespaced_deployment("ias-production").items
                       if re.fullmatch(r"llama3-[0-9a-f]{6}-vllm", d.metadata.name)]
    finally:
        local.stop()
    # Pods on KWOK nodes: whatever answers is a simulator, so this is a rehearsal, and -k makes it partial.
    assert result.ret == 6, result.stdout.str()
    result.stdout.fnmatch_lines(["*engine vllm*", "*created Secret ias-production/hf-token from $HF_TOKEN*",
                                 "*REHEARSAL PARTIAL (KWOK node gpu-0 *) — not a certification*"])
    assert base64.b64decode(secret.data["token"]).decode() == token
    container = deployment.spec.template.spec.containers[0]
    assert container.command == ["vllm", "serve"]
    assert container.env[-1].value_from.secret_key_ref.name == "hf-token"
    assert token not in result.stdout.str() + result.stderr.str() + (tmp_path / "report.html").read_text()


SHOW_TIMEOUTS = '''
def pytest_collection_finish(session):
    for item in session.items:
        marker = item.get_closest_marker("timeout")
        print("TIMEOUT", item.nodeid, marker.args[0] if marker else "default")
'''


def collect_on_a_pool(pytester: pytest.Pytester, tmp_path, *args: str) -> pytest.RunResult:
    """``pytest suites/ --collect-only`` against an existing cluster that collection never reaches."""
    pytester.makepyfile(show_timeouts=SHOW_TIMEOUTS)
    kubeconfig = tmp_path / "kubeconfig"  # read for its context only: collection reaches no cluster
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: pool\ncontexts:\n- name: pool\n"
                          "  context: {cluster: pool, user: u}\nclusters:\n- name: pool\n  cluster: "
                          "{server: 'https://127.0.0.1:9'}\nusers:\n- name: u\n  user: {}\n")
    return pytester.runpytest_subprocess(SUITES, "-p", "no:cacheprovider", "-p", "show_timeouts", "--rootdir",
                                         str(PROJECT_ROOT), "--collect-only", "-q", "-s", "--timeout", "900",
                                         "--cluster", "existing",
                                         "--kubeconfig", str(kubeconfig), *args)


def test_the_deploying_and_the_loading_tests_get_their_budgets_as_timeouts(pytester: pytest.Pytester, tmp_path):
    """pytest-timeout's 900 s would kill a real first deploy (llama3 allows 1800 s to download and load) and a
    10-minute soak: the check that deploys gets the startup budget, the first that needs the load test its budget."""
    result = collect_on_a_pool(pytester, tmp_path, "--model", "llama3", "--set", "startup.timeout_s=2400",
                               "--set", "load.profile.duration_s=600")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    timeouts = dict(line.removeprefix("TIMEOUT ").rsplit(" ", 1) for line in result.outlines
                    if line.startswith("TIMEOUT "))
    first, loading = next(iter(timeouts)), "suites/test_gpu.py::test_gpu_busy_under_load"
    assert timeouts.pop(first) == str(2400 + 900)
    # The in-cluster load's budget (workers connecting 120 s, the run 600 s, its end 120 s, copying out 300 s), and
    # waiting for Prometheus and the counters around it (300 s).
    assert timeouts.pop(loading) == str(120.0 + 600 + 120 + 300 + 300)
    assert set(timeouts.values()) == {"default"}
    assert len(timeouts) + 2 == len(known_checks(load_spec("llama3", MODELS_DIR).slo))  # every check, once
    # Timeouts off (--timeout 0): none turned on; a larger one given: never lowered.
    for off_or_larger in ("0", "5000"):
        result = collect_on_a_pool(pytester, tmp_path, "--model", "llama3", "--set", "load.profile.duration_s=600",
                                   "--timeout", off_or_larger)
        assert result.ret == pytest.ExitCode.OK, result.stdout.str()
        assert {line.rsplit(" ", 1)[1] for line in result.outlines if line.startswith("TIMEOUT ")} == {"default"}


def test_a_suite_check_missing_from_the_contract_is_a_usage_error(pytester: pytest.Pytester):
    suite = pytester.mkdir("suites")
    (suite / "test_extra.py").write_text("def test_new_check(gate_spec):\n    assert gate_spec\n")
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(PROJECT_ROOT)!r})\n"
                          "pytest_plugins = ['fixtures.plugin']\n")
    result = pytester.runpytest_subprocess(str(suite), "-p", "no:cacheprovider", "--model", "llama3",
                                           "--endpoint-url", "http://127.0.0.1:9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*suites/test_extra.py::test_new_check is not in the certification contract: add "
                                 "it to CHECKS in src/vllm_gate/verdict/contract.py*"])


def test_several_models_are_checked_one_after_another_each_check_once_per_model(pytester: pytest.Pytester, tmp_path):
    result = collect_on_a_pool(pytester, tmp_path, "--model", "all", "--set", "mistral-7b:startup.timeout_s=2400")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    collected = [line.split(" ", 1)[1].rsplit(" ", 1)[0] for line in result.outlines if line.startswith("TIMEOUT ")]
    checks = len(known_checks(load_spec("llama3", MODELS_DIR).slo))
    # Every check of llama3, then every check of mistral-7b (each in file and definition order): never interleaved.
    assert ["llama3" if "[llama3" in nodeid else "mistral-7b" for nodeid in collected] == (
        ["llama3"] * checks + ["mistral-7b"] * checks), collected
    assert collected[:checks] == [nodeid.replace("[mistral-7b", "[llama3") for nodeid in collected[checks:]]
    assert "suites/test_health.py::test_chat_completion[llama3]" in collected
    assert "suites/test_load.py::test_slo[mistral-7b-ttft p95]" in collected
    # Each model's deploying test gets that model's startup budget.
    timeouts = [line.split()[-1] for line in result.outlines if line.startswith("TIMEOUT ")]
    assert (timeouts[0], timeouts[checks]) == (str(1800 + 900), str(2400 + 900))
    assert set(timeouts[1:checks] + timeouts[checks + 1:]) == {"default"}


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "all", "--endpoint-url", "http://127.0.0.1:9"],
     "*--endpoint-url checks one server, so one model; --model chose 2: llama3, mistral-7b*"),
    (["--model", "llama3", "--set", "mistral-7b:resources.gpus=2"],
     "*--set mistral-7b:resources.gpus=2: 'mistral-7b' is not a model of this run (models: llama3)*"),
], ids=["endpoint with several models", "set for a model not in the run"])
def test_a_run_of_several_models_refuses_what_it_cannot_do_before_anything(gate, args, message):
    result = gate(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_the_environment_rows_move_below_the_verdict_and_stay_redacted(gate, sim, tmp_path):
    result = gate("--model", "llama3", "--endpoint-url", sim.url, *SHORT_LOAD, "-k", "health",
                  "--metadata", "SECRET_BUILD_TOKEN", "planted-metadata-value", "--metadata", "Build", "nightly-42",
                  "-o", "environment_table_redact_list=^SECRET_")
    assert result.ret == 6, result.stdout.str()  # -k health: partial
    report = (tmp_path / "report.html").read_text()
    assert "planted-metadata-value" not in report
    # pytest-html's own table (drawn above the summary) is empty; the rows follow the sign-off.
    assert "&#34;environment&#34;: {}" in report
    environment = report.index('<h3>Environment</h3>')
    assert report.index("ENDPOINT CHECKS PARTIAL") < environment
    assert "<tr><th>SECRET_BUILD_TOKEN</th><td>***</td></tr>" in report[environment:]
    assert "<tr><th>Build</th><td>nightly-42</td></tr>" in report[environment:]
