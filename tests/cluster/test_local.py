"""The local cluster: real scheduling onto fake GPU nodes, a simulator behind port-forward, clean stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml
from kubernetes import client

from tests.conftest import running_local_cluster
from vllm_gate.base.errors import ClusterError, RolloutFailed
from vllm_gate.base.kube import api_client
from vllm_gate.base.ports import free_port, port_open
from vllm_gate.base.secret import Secret
from vllm_gate.base.tools import MODELS_DIR, PROJECT_ROOT
from vllm_gate.cluster.children import CHILD_PIDS_FILE
from vllm_gate.cluster.dataplane.portforward import PortForward
from vllm_gate.cluster.existing import ExistingCluster
from vllm_gate.cluster.local import GpuPool, LocalCluster, cluster_dir, component_pids, pid_alive
from vllm_gate.cluster.resolve import resolve_cluster
from vllm_gate.deploy.release import DeployFailed, current_revision, ensure_namespace, helm_test, install_or_upgrade
from vllm_gate.deploy.render import helm_client
from vllm_gate.deploy.rollout import RolloutTarget, wait_ready
from vllm_gate.deploy.target import in_place
from vllm_gate.deploy.values import release_fullname
from vllm_gate.gate.decision import finish
from vllm_gate.gate.run import NO_REGISTRY, Attempt, GateRun, Registry
from vllm_gate.monitoring.gpu import TelemetryError
from vllm_gate.monitoring.gpu_source import choose_gpu_source
from vllm_gate.monitoring.pod_exec import nvidia_smi_in_pod
from vllm_gate.registry import mappings
from vllm_gate.spec import load_spec
from vllm_gate.verdict.serving import fake_pool


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from running_local_cluster("test", GpuPool(nodes=2))


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    return api_client(cluster.kubeconfig, cluster.context)


def gpu_deployment(name: str, gpu_type: str, *, tolerate: bool = True) -> dict:
    pod_spec = {
        "nodeSelector": {"gpu-type": gpu_type},
        "containers": [{"name": "c", "image": "example.invalid/gpu-job:v1",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}}],
    }
    if tolerate:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}}}


def test_gpu_deployment_is_scheduled_onto_a_gpu_node_and_becomes_ready(api):
    client.AppsV1Api(api).create_namespaced_deployment("default", gpu_deployment("gpu-ok", "rtx-6000-ada"))
    wait_ready(api, RolloutTarget("default", "gpu-ok", "app=gpu-ok"), 60, progress=lambda _m: None)
    pod = client.CoreV1Api(api).list_namespaced_pod("default", label_selector="app=gpu-ok").items[0]
    node = client.CoreV1Api(api).read_node(pod.spec.node_name)
    assert node.metadata.labels["gpu-type"] == "rtx-6000-ada"
    assert pod.status.phase == "Running"
    # The gpu suite's fallback without dcgm-exporter: nvidia-smi through the exec API. KWOK's nodes have no
    # kubelet to run it (and no GPU exists here), so the real API server's refusal must come back as one line.
    with pytest.raises(TelemetryError, match=rf"^nvidia-smi in pod default/{pod.metadata.name} \(container c\): "
                                             r"exec (refused|failed)"):
        nvidia_smi_in_pod(api, "default", pod.metadata.name, "c")
    reason = choose_gpu_source(None, api, "default", [pod.metadata.name], "c", step_s=15, live_pods=True,
                               recorded=False)
    assert isinstance(reason, str)
    assert reason.startswith("no Prometheus (--prometheus-url) to read dcgm-exporter series from; nvidia-smi in pod")


@pytest.mark.parametrize(("name", "gpu_type", "tolerate"), [
    ("gpu-missing-type", "h100-sxm", True),
    ("gpu-no-toleration", "rtx-6000-ada", False),
])
def test_unsatisfiable_gpu_request_stays_pending_unschedulable(api, name, gpu_type, tolerate):
    client.AppsV1Api(api).create_namespaced_deployment("default", gpu_deployment(name, gpu_type, tolerate=tolerate))
    with pytest.raises(RolloutFailed) as info:
        wait_ready(api, RolloutTarget("default", name, f"app={name}"), 60, progress=lambda _m: None,
                   unschedulable_grace_s=2)
    assert "Unschedulable" in info.value.summary
    pod = client.CoreV1Api(api).list_namespaced_pod("default", label_selector=f"app={name}").items[0]
    assert pod.status.phase == "Pending"
    scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")


def test_port_forward_to_the_service_reaches_the_simulator(cluster, api):
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", "namespace=pf-test"])
    created = ensure_namespace(client.CoreV1Api(api), spec.namespace)
    install_or_upgrade(spec, in_place(spec), cluster.kubeconfig, cluster.context, created_namespace=created)
    target = RolloutTarget(spec.namespace, release_fullname(spec.name), f"app.kubernetes.io/instance={spec.name}")
    wait_ready(api, target, 60, progress=lambda _m: None)
    with PortForward(spec.namespace, f"svc/{spec.service.name}", spec.service.port, kubeconfig=cluster.kubeconfig,
                     context=cluster.context) as forward:
        deadline = time.monotonic() + 30
        while True:  # the data plane starts the simulator once the pod is Ready
            try:
                models = httpx.get(f"{forward.url}/v1/models", timeout=5)
                if models.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no answer through kubectl port-forward within 30 s"
            time.sleep(0.5)
    served = models.json()["data"][0]
    assert served["id"] == spec.served_name
    assert served["max_model_len"] == spec.vllm.max_model_len


def _listening_ports(pids: list[int]) -> set[int]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines()
            if any(f"pid={p}," in line for p in pids)}


def _children(name: str) -> list[int]:
    """The processes the cluster started beside its components (here: its Prometheus)."""
    return [int(line.partition(":")[0]) for line in (cluster_dir(name) / CHILD_PIDS_FILE).read_text().split()]


def test_stop_leaves_no_process_and_frees_the_ports():
    local = LocalCluster(name=f"stop-{os.getpid()}", pool=GpuPool(nodes=1), real_node=False,
                         progress=lambda _m: None)
    local.start()
    assert httpx.get(f"{local.prometheus_url}/-/ready", timeout=5).status_code == 200
    pids = component_pids(local.name) + _children(local.name)
    ports = _listening_ports(pids)
    assert len(pids) == 6
    assert int(local.prometheus_url.rsplit(":", 1)[1]) in ports
    local.stop()
    assert [p for p in pids if pid_alive(p)] == []
    assert [p for p in ports if port_open(p)] == []
    assert not cluster_dir(local.name).exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_cluster_is_cleaned_up_when_its_owner_dies(sig):
    name = f"crash-{os.getpid()}-{sig.name.lower()}"
    # A foreground process gets Python's KeyboardInterrupt on SIGINT; a background one (CI) inherits
    # SIGINT ignored, so the owner restores the terminal behaviour itself.
    script = ("import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "from vllm_gate.cluster.local import LocalCluster, GpuPool; "
              f"c = LocalCluster(name={name!r}, pool=GpuPool(nodes=1), real_node=False); c.start(); "
              "print('up', flush=True); "
              "time.sleep(300)")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        assert owner.stdout.readline().strip() == "up"
        pids = component_pids(name) + _children(name)
        assert len(pids) == 6  # the five components and Prometheus
        owner.send_signal(sig)
        owner.wait(30)
        deadline = time.monotonic() + 60
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [p for p in pids if pid_alive(p)] == []
        while cluster_dir(name).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not cluster_dir(name).exists()
    finally:
        if owner.poll() is None:
            owner.kill()


def _gate_run(spec, passed: bool, dsn: str | None = None) -> GateRun:
    # A run the contract would certify: the engine observation is set by hand (this cluster has no vLLM),
    # so finish() acts on a certification's verdict; the contract itself is tested in tests/verdict/test_contract.py.
    run = GateRun(spec=spec, cluster="local test", capabilities=None, report_path=Path("report.html"),
                  required=["health/test_x"], engine_observed=True,
                  registry=Registry(Secret(dsn), "the test registry") if dsn else NO_REGISTRY)
    run.record("health/test_x", "passed" if passed else "failed", "" if passed else "boom")
    return run


def _deploy(cluster, api, spec, dsn: str | None = None) -> GateRun:
    run = _gate_run(spec, passed=True, dsn=dsn)
    run.kubeconfig, run.context = cluster.kubeconfig, cluster.context
    created = ensure_namespace(client.CoreV1Api(api), spec.namespace)
    run.release = install_or_upgrade(spec, in_place(spec), cluster.kubeconfig, cluster.context,
                                     created_namespace=created)
    return run


def test_failed_fresh_install_is_uninstalled_and_not_registered(cluster, api, postgres, dsn):
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", "namespace=fresh-fail"])
    run = _deploy(cluster, api, spec, dsn)
    run.record("load/test_slo[ttft p95]", "failed", "FAIL ttft p95")
    finish(run, keep_on_failure=False)
    assert re.fullmatch(r"uninstalled fresh-fail/llama3 \(a fresh install\); deleted namespace fresh-fail "
                        r"\(gone after \d+ s\)", run.decision[0]), run.decision[0]
    assert client.CoreV1Api(api).list_namespace(field_selector="metadata.name=fresh-fail").items == []
    assert current_revision(helm_client(cluster.kubeconfig, cluster.context), "llama3", "fresh-fail") is None
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM model_mappings").fetchone()[0] == 0
        assert conn.execute("SELECT verdict FROM certifications").fetchall() == [("not_certified",)]


def test_a_certified_install_that_cannot_register_is_uninstalled_and_not_certified(cluster, api, postgres):
    # Every check passed; the registry then refuses the write (wrong password): not certified, so undone too.
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", "namespace=no-register"])
    run = _deploy(cluster, api, spec, postgres.dsn.replace(postgres.password, "Wr0ng-pw"))
    assert run.settle().certified
    finish(run, keep_on_failure=False)
    assert run.settle().headline == "NOT CERTIFIED: every required check passed, but registration failed"
    assert run.decision[0].startswith("REGISTRATION FAILED: ")
    assert [line for line in run.decision if line.startswith("uninstalled")] == [run.decision[1]], run.decision
    assert current_revision(helm_client(cluster.kubeconfig, cluster.context), "llama3", "no-register") is None


def test_failed_upgrade_rolls_back_to_the_previous_revision(cluster, api, dsn):
    good = load_spec("llama3", MODELS_DIR, ["engine=sim", "namespace=upgrade-fail"])
    first = _deploy(cluster, api, good, dsn)
    with psycopg.connect(dsn) as conn, conn.transaction():  # what a promotion of the first left in the registry
        mappings.upsert(conn, first.mapping())
    bad = load_spec("llama3", MODELS_DIR, ["engine=sim", "namespace=upgrade-fail", "vllm.max_model_len=4096"])
    second = _deploy(cluster, api, bad, dsn)
    second.record("health/test_y", "failed", "boom")
    assert second.release.previous_revision == first.release.revision
    finish(second, keep_on_failure=False)
    assert re.fullmatch(rf"rolled upgrade-fail/llama3 back to revision {first.release.revision}; "
                        r"its pods are Ready again \(\d+ s\)", second.decision[0]), second.decision[0]
    deployment = client.AppsV1Api(api).read_namespaced_deployment("llama3-vllm", "upgrade-fail")
    args = deployment.spec.template.spec.containers[0].args
    assert args[args.index("--max-model-len") + 1] == "8192"
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT max_tokens FROM model_mappings WHERE name = 'llama3'").fetchone()
        assert row == (8192,), "a failed run must not touch the registered mapping"


def test_keep_on_failure_leaves_the_release(cluster, api):
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", "namespace=keep-fail"])
    run = _deploy(cluster, api, spec)
    run.record("health/test_x", "failed", "boom")
    finish(run, keep_on_failure=True)
    assert run.decision == ["kept the release keep-fail/llama3 (--keep-on-failure)",
                            "not registered: no --database-url given"]
    assert current_revision(helm_client(cluster.kubeconfig, cluster.context), "llama3", "keep-fail") == 1


def test_existing_provider_follows_the_kubeconfig_context(cluster):
    existing = resolve_cluster("auto", kubeconfig=cluster.kubeconfig, context=None, gpu_nodes=1, kind_name="x",
                               kind_bin=None, keep_kind=False, progress=lambda _m: None)
    assert isinstance(existing, ExistingCluster)
    assert existing.context == cluster.context
    existing.start()
    assert existing.describe() == f"existing (context {cluster.context}, Kubernetes v1.35.4)"


def test_auto_without_kubeconfig_is_the_local_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    chosen = resolve_cluster("auto", kubeconfig=None, context=None, gpu_nodes=1, kind_name="x", kind_bin=None,
                             keep_kind=False, progress=lambda _m: None)
    assert isinstance(chosen, LocalCluster)


def test_unreachable_cluster_is_one_line_naming_the_server(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "dead",
        "clusters": [{"name": "dead", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}]}))
    with pytest.raises(ClusterError) as info:
        ExistingCluster(kubeconfig, None).start()
    assert info.value.summary.startswith("cannot reach the Kubernetes API at https://127.0.0.1:")
    assert "\n" not in info.value.summary


def test_a_revision_the_gate_never_heard_of_is_undone(cluster, api):
    """An interrupt during `helm upgrade --install` leaves a revision the gate has no Release for."""
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", "namespace=half-done"])
    run = _gate_run(spec, passed=True)
    run.kubeconfig, run.context = cluster.kubeconfig, cluster.context
    created = ensure_namespace(client.CoreV1Api(api), spec.namespace)
    run.attempt = Attempt(spec.name, spec.namespace, None, created)
    # The result is never seen: the decision must find what helm left behind.
    install_or_upgrade(spec, in_place(spec), cluster.kubeconfig, cluster.context, created_namespace=created)
    run.interrupted = "SIGINT"
    finish(run, keep_on_failure=False)
    assert re.fullmatch(r"uninstalled half-done/llama3 \(a fresh install\); deleted namespace half-done "
                        r"\(gone after \d+ s\)", run.decision[0]), run.decision
    assert current_revision(helm_client(cluster.kubeconfig, cluster.context), "llama3", "half-done") is None


def test_helm_test_whose_pod_never_succeeds_fails_naming_helms_reason(cluster, api):
    """The failure path of the helm-test check, on KWOK's recorded behaviour (not a real run): KWOK never runs
    the test pod to completion, as a test pod that cannot reach the model never completes on a real cluster.
    """
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", "namespace=helm-test"])
    created = ensure_namespace(client.CoreV1Api(api), spec.namespace)
    release = install_or_upgrade(spec, in_place(spec), cluster.kubeconfig, cluster.context, created_namespace=created)
    with pytest.raises(DeployFailed) as failed:
        helm_test(release, cluster.kubeconfig, cluster.context, timeout_s=10)
    assert failed.value.summary == "helm test llama3 -n helm-test: context deadline exceeded"
    assert "Phase:          Failed" in failed.value.detail
    assert "test pod llama3-vllm-test-health" in failed.value.detail


def test_a_pool_of_kwok_nodes_is_known_before_deploying(api):
    core = client.CoreV1Api(api)
    assert fake_pool(core, "rtx-6000-ada") == "KWOK node gpu-0, gpu-1 (no container runs there)"
    assert fake_pool(core, "h100-sxm") is None, "no node of that type: nothing to call fake"


def test_an_undo_that_cannot_ask_helm_says_so_and_deletes_nothing(cluster, api):
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", "namespace=cannot-tell"])
    run = _gate_run(spec, passed=False)
    run.kubeconfig, run.context = cluster.kubeconfig, "no-such-context"  # planted: helm cannot reach the cluster
    created = ensure_namespace(client.CoreV1Api(api), spec.namespace)
    run.attempt = Attempt(spec.name, spec.namespace, None, created)
    finish(run, keep_on_failure=False)
    assert run.decision_failed
    assert run.decision[0].startswith("UNDO NOT CONFIRMED: could not ask helm what this run left behind: ")
    assert client.CoreV1Api(api).read_namespace("cannot-tell").metadata.name == "cannot-tell"
