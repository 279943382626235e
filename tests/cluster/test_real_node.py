"""The local cluster's real node: kubelet probes, a Service through kube-proxy and CoreDNS, NetworkPolicy
enforced by kube-router, a crashing container seen for real — and a host left exactly as it was found."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from kubernetes import client

from tests.chart.strict_yaml import helm
from tests.cluster.host_network import host_network_state
from tests.cluster.hpa import evaluated_hpa
from tests.conftest import skip_without_real_node
from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import CHART_DIR, MODELS_DIR
from vllm_gate.checks.autoscaling import hpa_problems
from vllm_gate.checks.probe_pod import Outcome, ProbeTemplate, chart_template, run_probe
from vllm_gate.cluster.dataplane.served_pods import MODEL_POD_SELECTOR
from vllm_gate.cluster.local import GpuPool, LocalCluster
from vllm_gate.cluster.node.images import chart_images
from vllm_gate.cluster.node.namespace import host_link_name
from vllm_gate.cluster.node.real_node import NODE_KIND_LABEL, NODE_NAME
from vllm_gate.deploy.rollout import pod_failure
from vllm_gate.deploy.values import chart_values, release_fullname
from vllm_gate.monitoring import checks
from vllm_gate.monitoring.load_watch import ModelPods
from vllm_gate.monitoring.prometheus import Prometheus, wait_for_targets
from vllm_gate.spec import ModelSpec, load_spec
from vllm_gate.verdict.serving import observe

pytestmark = pytest.mark.real_node

NS = "real-node-test"
ROUTER = {"app.kubernetes.io/name": "ias-router"}
SIM_LABELS = {"app": "sim"}
WAIT_S = 90


def _sim_image() -> str:
    return chart_images()["sim"]


def skip_unless_node_can_run() -> None:
    skip_without_real_node("kubelet probes, kube-proxy and NetworkPolicy enforcement")


@pytest.fixture(scope="module")
def before() -> dict[str, object]:
    """The host's network state before any real node of this module started."""
    skip_unless_node_can_run()
    return host_network_state()


@pytest.fixture(scope="module")
def cluster(before: dict[str, object]) -> Iterator[LocalCluster]:
    local = LocalCluster(name=f"realnode-{os.getpid()}", pool=GpuPool(nodes=1), real_node=True,
                         progress=lambda _m: None)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def probe_template() -> ProbeTemplate:
    """The chart's helm test image and security contexts, as the gate's probe pods run them."""
    return chart_template(load_spec("llama3", MODELS_DIR, ["engine=sim"]))


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    api = api_client(cluster.kubeconfig, cluster.context)
    client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
    return api


def _sim_pod(name: str, *args: str, labels: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or SIM_LABELS},
        "spec": {
            "automountServiceAccountToken": False, "enableServiceLinks": False, "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "sim", "image": _sim_image(), "imagePullPolicy": "Never",
                "args": ["--model", "m", "--port", "8000", *args],
                "ports": [{"name": "http", "containerPort": 8000}],
                "readinessProbe": {"httpGet": {"path": "/health/ready", "port": "http"}, "periodSeconds": 1,
                                   "failureThreshold": 1},
            }],
        },
    }


def _wait(what: str, check, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_the_real_node_is_ready_with_fake_gpus_beside_kwok_nodes(cluster, api):
    nodes = {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    real = nodes[NODE_NAME]
    assert real.metadata.labels[NODE_KIND_LABEL] == "real"
    assert real.metadata.labels["gpu-type"] == cluster.pool.gpu_type
    assert real.status.allocatable["nvidia.com/gpu"] == str(cluster.pool.gpus_per_node)
    assert real.status.node_info.container_runtime_version.startswith("containerd://2.")
    assert {n.metadata.labels.get(NODE_KIND_LABEL) for n in nodes.values()} == {"real", "kwok"}
    # The pool's machine, not this one (the spec's requests must fit as on a GPU node).
    assert real.status.capacity["cpu"] == cluster.pool.cpu
    assert cluster.capabilities.runs_containers


def test_the_api_server_beyond_loopback_refuses_anonymous_requests(cluster):
    # It listens on every address now (the node reaches it on its veth): no anonymous access there.
    port = urlsplit(yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]).port
    answer = httpx.get(f"https://{cluster.network.host_address}:{port}/api/v1/namespaces", verify=False,  # noqa: S501 - the answer's status is the point
                       timeout=10)
    assert answer.status_code == 401


def _endpoints(api: client.ApiClient, service: str) -> dict[str, bool]:
    """Each endpoint address of ``service`` and whether it is ready."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        NS, label_selector=f"kubernetes.io/service-name={service}").items
    return {address: bool(e.conditions and e.conditions.ready)
            for s in slices for e in s.endpoints or [] for address in e.addresses}


def test_readiness_probe_gates_the_pod_and_its_endpoints(api):
    core = client.CoreV1Api(api)
    core.create_namespaced_service(NS, {"metadata": {"name": "slow"}, "spec": {
        "selector": {"app": "slow"}, "ports": [{"port": 8000, "targetPort": "http"}]}})
    # /health/ready answers 503 for 8 s: the kubelet's probe must hold it out of Ready and the endpoints that long.
    core.create_namespaced_pod(NS, _sim_pod("slow", "--startup-duration", "8s", labels={"app": "slow"}))
    ip = _wait("slow pod has an address", lambda: core.read_namespaced_pod("slow", NS).status.pod_ip)
    assert _wait("endpoint listed, not ready", lambda: _endpoints(api, "slow").get(ip) is False)
    assert _wait("endpoint ready", lambda: _endpoints(api, "slow").get(ip))
    pod = core.read_namespaced_pod("slow", NS)
    started = pod.status.container_statuses[0].state.running.started_at
    ready_at = next(c.last_transition_time for c in pod.status.conditions if c.type == "Ready")
    assert (ready_at - started).total_seconds() >= 5  # not Ready while it answered 503 (8 s; kubelet's clock)
    events = core.list_namespaced_event(NS, field_selector="involvedObject.name=slow").items
    assert any(e.reason == "Unhealthy" and "Readiness probe failed" in e.message for e in events)


def test_a_crashing_container_is_crash_loop_back_off_for_the_rollout(api):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, _sim_pod("crash", "--no-such-flag", labels={"app": "crash"}))

    def diagnosed() -> tuple[str, str] | None:
        return pod_failure(core.read_namespaced_pod("crash", NS), time.time())

    _reason, message = _wait("CrashLoopBackOff", lambda: (r := diagnosed()) and r[0] == "CrashLoopBackOff" and r)
    assert "restarting failed container=sim" in message
    status = core.read_namespaced_pod("crash", NS).status.container_statuses[0]
    assert status.last_state.terminated.exit_code != 0  # the stand-in really exited on the unknown flag


def test_network_policy_admits_the_router_and_refuses_other_pods_through_the_service(api, probe_template):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, _sim_pod("model"))
    core.create_namespaced_service(NS, {"metadata": {"name": "model"}, "spec": {
        "selector": SIM_LABELS, "ports": [{"port": 8000, "targetPort": "http"}]}})
    _wait("model Ready", lambda: _ready(core.read_namespaced_pod("model", NS)))
    url = f"http://model.{NS}.svc.cluster.local:8000/health"
    # Before any policy both reach it: the refusal below is the policy's doing, not a broken probe.
    before = run_probe(api, NS, url, labels={}, template=probe_template)
    assert (before.outcome, before.status) == (Outcome.ANSWERED, 200), before.describe()
    client.NetworkingV1Api(api).create_namespaced_network_policy(NS, {
        "metadata": {"name": "model-router-only"},
        "spec": {"podSelector": {"matchLabels": SIM_LABELS}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": ROUTER}}],
                              "ports": [{"port": 8000, "protocol": "TCP"}]}]}})
    # Both retry a refused connection 5 times (a new pod's address reaches kube-router a moment after it starts).
    admitted = run_probe(api, NS, url, labels=ROUTER, template=probe_template, request_timeout_s=2, retries=5)
    refused = run_probe(api, NS, url, labels={}, template=probe_template, request_timeout_s=2, retries=5)
    assert refused.outcome is Outcome.NO_CONNECTION, refused.describe()
    assert (admitted.outcome, admitted.status) == (Outcome.ANSWERED, 200), admitted.describe()
    assert admitted.node == refused.node == NODE_NAME


def test_the_hosts_network_is_untouched_while_the_node_runs(cluster, api, before):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, _sim_pod("networked", labels={"app": "networked"}))
    _wait("a pod networked", lambda: _ready(core.read_namespaced_pod("networked", NS)))
    during = host_network_state(ignore_links=frozenset({host_link_name(cluster.name)}))
    assert during == before


# --- the cluster's Prometheus finds the chart's pods by Kubernetes service discovery --------------------------------

# A new pod: the watch, the discovery manager's 5 s batching, a 1 s scrape, on a busy machine. A planted fault gets
# as long to come right (it must not), so that a slow discovery cannot pass for one.
DISCOVERY_S = 30


def _install(cluster: LocalCluster, namespace: str, chart: Path, spec: ModelSpec) -> str:
    """helm install ``chart`` for ``spec`` into ``namespace`` and wait for its pod; the pod's name."""
    proc = helm("install", spec.name, str(chart), "--namespace", namespace, "--create-namespace", "--wait",
                "--timeout", f"{WAIT_S}s", "--kubeconfig", str(cluster.kubeconfig), "--kube-context",
                str(cluster.context), "--values", "-", stdin=yaml.safe_dump(chart_values(spec)))
    assert proc.returncode == 0, proc.stderr
    api = api_client(cluster.kubeconfig, cluster.context)
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=MODEL_POD_SELECTOR).items
    assert [p.spec.node_name for p in pods] == [NODE_NAME]
    return pods[0].metadata.name


def _uninstall(cluster: LocalCluster, namespace: str, spec: ModelSpec) -> None:
    """Uninstall the release and remove its namespace (the real node's GPUs are few: the next test needs them)."""
    proc = helm("uninstall", spec.name, "--namespace", namespace, "--wait", "--kubeconfig", str(cluster.kubeconfig),
                "--kube-context", str(cluster.context))
    assert proc.returncode == 0, proc.stderr
    client.CoreV1Api(api_client(cluster.kubeconfig, cluster.context)).delete_namespace(namespace)


def _scrape_problems(cluster: LocalCluster, namespace: str, pod: str, timeout_s: float) -> list[str]:
    """What the monitoring suite's first check says, once discovery had ``timeout_s`` to come right."""
    assert cluster.prometheus_url is not None
    prom = Prometheus(cluster.prometheus_url)
    wait_for_targets(prom, namespace, [pod], timeout_s)
    return checks.scrape_targets(prom, ModelPods(namespace, (pod,), "vllm", "m"))


@pytest.fixture
def sim_spec() -> ModelSpec:
    return load_spec("llama3", MODELS_DIR, ["engine=sim"])


def _unwired_chart(tmp_path: Path) -> Path:
    """A copy of the chart whose Deployment lost its prometheus.io/* annotations (planted)."""
    chart = tmp_path / "vllm"
    shutil.copytree(CHART_DIR, chart)
    deployment = chart / "templates" / "deployment.yaml"
    lines = deployment.read_text().splitlines(keepends=True)
    wiring = [line for line in lines if 'merge (dict "prometheus.io/scrape"' in line]
    assert len(wiring) == 1, "the chart's scrape annotations moved: plant their removal anew"
    deployment.write_text("".join(line for line in lines if line not in wiring))
    return chart


def _health(cluster: LocalCluster, namespace: str, pod: str) -> str:
    """The health of the pod's scrape target once Prometheus has tried it (up or down), within DISCOVERY_S."""
    assert cluster.prometheus_url is not None
    prom = Prometheus(cluster.prometheus_url)
    deadline = time.monotonic() + DISCOVERY_S
    health = "not a target"
    while time.monotonic() < deadline:
        found = [t for t in prom.active_targets() if t["labels"].get("pod") == pod]
        health = found[0]["health"] if found else "not a target"
        if health in ("up", "down"):
            return health
        time.sleep(0.5)
    return health


def test_the_clusters_prometheus_finds_the_charts_pods_by_discovery_and_not_the_planted_ones(cluster, sim_spec,
                                                                                               tmp_path):
    """Three releases at once: a chart without its scrape annotations, a spec whose policy admits another
    Prometheus (both planted), and the chart as shipped, installed last: once discovery found that one, it has
    seen the other two."""
    refusing = load_spec("llama3", MODELS_DIR, ["engine=sim",
                                                "monitoring.prometheus_pod_labels={app.kubernetes.io/name: vmagent}"])
    releases = [("scrape-unwired", _unwired_chart(tmp_path), sim_spec), ("scrape-refused", CHART_DIR, refusing),
                ("scrape-ok", CHART_DIR, sim_spec)]
    pods = {}
    try:
        for namespace, chart, spec in releases:
            pods[namespace] = _install(cluster, namespace, chart, spec)
        assert _scrape_problems(cluster, "scrape-ok", pods["scrape-ok"], DISCOVERY_S) == []
        target = next(t for t in Prometheus(cluster.prometheus_url).active_targets()
                      if t["labels"].get("pod") == pods["scrape-ok"])
        # Found by Kubernetes discovery (the pod's own address, the annotated port and path), not written by the gate.
        assert target["discoveredLabels"]["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
        ip = client.CoreV1Api(api_client(cluster.kubeconfig, cluster.context)).read_namespaced_pod(
            pods["scrape-ok"], "scrape-ok").status.pod_ip
        assert target["scrapeUrl"] == f"http://{ip}:8000/metrics"

        unwired = pods["scrape-unwired"]
        assert _scrape_problems(cluster, "scrape-unwired", unwired, 0) == [
            f"pod scrape-unwired/{unwired} is not a scrape target (no active target labelled "
            f'namespace="scrape-unwired", pod="{unwired}")']

        refused = pods["scrape-refused"]
        assert _health(cluster, "scrape-refused", refused) == "down"
        (problem,) = _scrape_problems(cluster, "scrape-refused", refused, 0)
        assert re.fullmatch(rf"target http://\S+:8000/metrics of pod scrape-refused/{refused} is down: .+", problem)
    finally:
        for namespace, _, spec in releases:
            if namespace in pods:
                _uninstall(cluster, namespace, spec)


def test_observe_sees_the_kubelet_run_the_charts_container_on_the_real_node(cluster, sim_spec):
    pod = _install(cluster, "observed", CHART_DIR, sim_spec)
    try:
        core = client.CoreV1Api(api_client(cluster.kubeconfig, cluster.context))
        serving = observe(core, "observed", f"app.kubernetes.io/instance={sim_spec.name}")
        assert serving.containers_run
        assert serving.names == (pod,)
        assert serving.placement == (f"pod {pod} on node {NODE_NAME} (its kubelet ran the container)",)
        assert serving.image_ids  # the kubelet reported the image it ran
        # What keeps it from certifying is the engine alone (the chart's engine: sim), never the node.
        assert serving.simulated == f"engine: sim in pod {pod}"
    finally:
        _uninstall(cluster, "observed", sim_spec)


# --- the custom metrics API: the real HPA controller asks the local prometheus-adapter ------------------------------

def test_an_hpa_on_a_metric_no_adapter_rule_serves_fails_naming_it(cluster):
    """Planted: a policy on a name no rule of charts/prometheus-adapter-values.yaml exposes (the adapter has run its
    rules since the cluster started). The served queue is read for real in the gate's own rehearsal
    (tests/test_gate_runs.py)."""
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", "autoscaling.enabled=true", "autoscaling.max_replicas=2",
                                            "autoscaling.metric_name=vllm_num_requests_queued"])
    api = api_client(cluster.kubeconfig, cluster.context)
    proc = helm("install", spec.name, str(CHART_DIR), "--namespace", "hpa-unserved", "--create-namespace",
                "--kubeconfig", str(cluster.kubeconfig), "--kube-context", str(cluster.context), "--values", "-",
                stdin=yaml.safe_dump(chart_values(spec)))
    assert proc.returncode == 0, proc.stderr
    try:
        name = release_fullname(spec.name)
        hpa = evaluated_hpa(api, "hpa-unserved", name)
        (problem,) = hpa_problems(hpa, "vllm_num_requests_queued")
        assert problem.startswith(f"HorizontalPodAutoscaler hpa-unserved/{name} cannot scale on metric "
                                  "vllm_num_requests_queued: ScalingActive False (FailedGetPodsMetric)"), problem
        # The adapter answered (no "no custom metrics API registered"): it serves no such metric.
        assert "vllm_num_requests_queued" in problem
        assert "no custom metrics API" not in problem
    finally:
        _uninstall(cluster, "hpa-unserved", spec)
