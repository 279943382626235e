"""The in-cluster load test: Locust's master and workers as pods where the router sits, their records back in the
gate, and nothing of theirs left behind — a dead worker, Ctrl-C and a crashed run's leftovers included.

The first part needs no cluster (sizing, manifests, the distributed locustfile as local processes); the second runs
for real on the local cluster's real node (kube-router enforcing the chart's NetworkPolicy)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from tests.conftest import require, running_local_cluster, skip_without_real_node
from vllm_gate.base.errors import GateError
from vllm_gate.base.kube import api_client
from vllm_gate.base.ports import free_port
from vllm_gate.base.tools import LOADTESTS_DIR, MODELS_DIR, PROJECT_ROOT
from vllm_gate.checks import metrics
from vllm_gate.cluster.dataplane.portforward import PortForward
from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.cluster.local import LocalCluster
from vllm_gate.cluster.node.locust_image import default_image, locust_version
from vllm_gate.cluster.node.real_node import NODE_NAME
from vllm_gate.deploy.release import ensure_namespace, install_or_upgrade
from vllm_gate.deploy.rollout import RolloutTarget, wait_ready
from vllm_gate.deploy.target import in_place
from vllm_gate.deploy.values import release_fullname
from vllm_gate.load.incluster import InClusterLoad, choose_load_from, remove_leftovers, run_incluster_load
from vllm_gate.load.pods import (
    EXPIRES_ANNOTATION,
    LOAD_LABEL,
    MASTER,
    ROLE_LABEL,
    TARGET_ANNOTATION,
    WORKER,
    LoadPlan,
    configmap_manifest,
    master_manifest,
    worker_count,
    worker_manifest,
)
from vllm_gate.load.samples import LoadFailed, read_samples
from vllm_gate.load.slo import load_stats
from vllm_gate.spec import Load, ModelSpec, load_spec

pytestmark = pytest.mark.real_node

ROUTER = {"app.kubernetes.io/name": "ias-router"}
LOCAL_RUN_TIMEOUT_S = 120
ROLLOUT_TIMEOUT_S = 180
GONE_TIMEOUT_S = 60
WATCH_TIMEOUT_S = 120
REQUEST_S = 15


def profile(kind: str, **fields: object) -> Load:
    return Load.model_validate({"profile": {"kind": kind, **fields}, "prompt_tokens": 16, "output_tokens": 8})


# --- sizing, choosing, manifests -----------------------------------------------------------------------------

@pytest.mark.parametrize(("load", "per_worker", "workers"), [
    (profile("users", users=8, duration_s=60), 128, 1),
    (profile("users", users=300, duration_s=60), 128, 3),
    (profile("users", users=4, duration_s=60), 2, 2),
    (profile("ramp", start_users=200, end_users=10, duration_s=60), 64, 4),
    (profile("rate", requests_per_s=5, duration_s=60, max_users=64), 16, 4),
])
def test_workers_are_sized_from_the_profiles_streams(load, per_worker, workers):
    assert worker_count(load, per_worker) == workers


def test_users_per_worker_below_one_is_refused():
    with pytest.raises(ValueError, match="1 or more"):
        worker_count(profile("users", users=8, duration_s=60), 0)


@pytest.mark.parametrize(("asked", "endpoint_only", "containers", "chosen"), [
    (None, False, True, "cluster"),  # the default where the model's pods run containers
    (None, False, False, "local"),  # KWOK: no Locust pod could run
    (None, True, False, "local"),  # --endpoint-url: no cluster of the gate's
    ("local", False, True, "local"),
    ("cluster", False, True, "cluster"),
])
def test_the_load_runs_from_the_cluster_where_pods_run_containers_else_locally(asked, endpoint_only, containers,
                                                                               chosen):
    assert choose_load_from(asked, endpoint_only=endpoint_only, containers=containers) == chosen


@pytest.mark.parametrize(("endpoint_only", "containers", "said"), [
    (False, False, "runs no containers"), (True, False, "needs the gate's cluster")])
def test_load_from_cluster_where_no_pod_can_run_is_refused_saying_why(endpoint_only, containers, said):
    with pytest.raises(GateError, match=said):
        choose_load_from("cluster", endpoint_only=endpoint_only, containers=containers)


def the_pin() -> str:
    dependencies = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if re.match(r"locust\b", d)]
    return pin


def test_the_default_image_is_upstreams_at_the_pinned_locust():
    # One Locust everywhere: the pin, the one installed (the local runner and the local node's image), the image.
    assert the_pin() == f"locust=={locust_version()}"
    assert default_image() == f"locustio/locust:{locust_version()}"


def plan_for(spec: ModelSpec, workers: int = 2) -> LoadPlan:
    return LoadPlan(run_id="abc123", namespace=spec.network.router_namespace or spec.namespace,
                    router_labels=spec.network.router_pod_labels, url=spec.in_cluster_url,
                    served_model=spec.served_name, load=spec.load, image="mirror.example/locust:1", workers=workers,
                    expires_at=2_000_000_000, active_deadline_s=600)


def test_the_pods_carry_the_router_labels_in_the_router_namespace_and_stop_by_themselves():
    spec = load_spec("llama3", MODELS_DIR, ["network.router_namespace=ias-router"])
    plan = plan_for(spec)
    master, worker = master_manifest(plan), worker_manifest(plan, plan.worker_names[0], "10.0.0.7")
    # The workers carry the router's labels (the NetworkPolicy admits them as the router); the master, which
    # never calls the model, does not.
    assert master["metadata"]["labels"] == {LOAD_LABEL: "abc123", ROLE_LABEL: MASTER}
    assert worker["metadata"]["labels"] == {**ROUTER, LOAD_LABEL: "abc123", ROLE_LABEL: WORKER}
    for pod in (master, worker):
        meta = pod["metadata"]
        assert meta["namespace"] == "ias-router"
        assert meta["annotations"] == {TARGET_ANNOTATION: spec.in_cluster_url, EXPIRES_ANNOTATION: "2000000000"}
        assert pod["spec"]["activeDeadlineSeconds"] == 600  # a crashed gate's load stops by itself
        locust = pod["spec"]["containers"][0]
        assert locust["image"] == "mirror.example/locust:1"
        assert "command" not in locust  # the image's entrypoint is locust, as upstream's
        assert locust["readinessProbe"]["initialDelaySeconds"] > 600  # never Ready: no router Service endpoint
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert master["spec"]["containers"][0]["args"] == ["--config", "/etc/vllm-gate/locust.conf", "--master"]
    assert [c["name"] for c in master["spec"]["containers"]] == ["locust", "records"]
    assert worker["spec"]["containers"][0]["args"][-4:] == ["--master-host", "10.0.0.7", "--master-port", "5557"]


def test_the_configmap_holds_the_locustfile_and_the_masters_settings():
    spec = load_spec("llama3", MODELS_DIR)
    data = configmap_manifest(plan_for(spec), spec.load.profile.duration_s)["data"]
    assert data["locustfile.py"] == (LOADTESTS_DIR / "locustfile.py").read_text()
    conf = dict(line.split(" = ", 1) for line in data["locust.conf"].splitlines())
    assert conf["host"] == spec.in_cluster_url  # the Service's cluster DNS name, as the registry's backend_url
    assert conf["served-model"] == spec.served_name
    assert (conf["users"], conf["expect-workers"], conf["run-seconds"]) == ("8", "2", "60")
    assert "run-time" not in conf  # the master ends the run itself, after the workers' last records
    assert json.loads(data["VLLM_GATE_PROFILE"]) == spec.load.profile.model_dump()
    assert data["VLLM_GATE_ARRIVAL_USERS"] == "1"


def test_a_rate_profile_gives_each_worker_one_arrival_user():
    spec = load_spec("llama3", MODELS_DIR, ["load.profile={kind: rate, requests_per_s: 20, duration_s: 30, "
                                            "max_users: 300}"])
    data = configmap_manifest(plan_for(spec, workers=3), 30)["data"]
    assert data["VLLM_GATE_ARRIVAL_USERS"] == "3"
    conf = dict(line.split(" = ", 1) for line in data["locust.conf"].splitlines())
    assert conf["users"] == "3"


# --- the distributed locustfile, as local processes ----------------------------------------------------------

def test_distributed_locust_returns_every_request_the_server_counted(tmp_path):
    # Master and two workers on this machine: the workers' records reach the master's file, the last ones too
    # (requests in flight when the run ends), so the server's counters grow by exactly what the records say.
    require("vllm-sim-standin")
    samples = tmp_path / "samples.jsonl"
    env = {**os.environ, "VLLM_GATE_PROFILE": json.dumps({"kind": "users", "users": 4, "duration_s": 5})}
    locust = [sys.executable, "-m", "locust", "-f", str(LOADTESTS_DIR / "locustfile.py")]
    port = str(free_port())
    with SimServer(model="m", ttft_ms=50, itl_ms=20) as sim:
        before = metrics.counters(metrics.parse(metrics.fetch(sim.url)), "m")
        master = subprocess.Popen([*locust, "--master", "--master-bind-port", port, "--headless", "--expect-workers",
                                   "2", "--host", sim.url, "-u", "4", "-r", "4", "--run-seconds", "5",
                                   "--served-model", "m", "--prompt-tokens", "16", "--output-tokens", "8",
                                   "--samples-file", str(samples), "--stop-timeout", "30", "--exit-code-on-error", "0"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        workers = [subprocess.Popen([*locust, "--worker", "--master-port", port], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for _ in range(2)]
        try:
            out, _ = master.communicate(timeout=LOCAL_RUN_TIMEOUT_S)
        finally:
            for proc in [master, *workers]:
                proc.kill()
                proc.wait(10)
        after = metrics.counters(metrics.parse(metrics.fetch(sim.url)), "m")
    assert master.returncode == 0, out[-2000:]
    records = read_samples(samples)
    assert metrics.counter_problems(before, after, metrics.client_counters(records)) == []
    (per_worker,) = [json.loads(line.partition(" ")[2]) for line in out.splitlines()
                     if line.startswith("vllm-gate-workers ")]
    assert len(per_worker) == 2
    assert all(n > 0 for n in per_worker.values()), per_worker
    assert sum(per_worker.values()) == len(records)
    assert re.search(r"^vllm-gate-progress \{.*\"requests\": \d+", out, re.MULTILINE), out[-2000:]


def test_users_that_cannot_connect_fail_the_run_instead_of_leaving_their_load_out(tmp_path):
    # A user whose first connection never succeeds dies in on_start: its share of the profile was never offered,
    # so Locust exits non-zero naming the exception (the gate's load test fails), rather than passing on the rest.
    env = {**os.environ, "VLLM_GATE_PROFILE": json.dumps({"kind": "users", "users": 2, "duration_s": 3})}
    done = subprocess.run([sys.executable, "-m", "locust", "-f", str(LOADTESTS_DIR / "locustfile.py"), "--headless",
                           "--host", f"http://127.0.0.1:{free_port()}", "-u", "2", "-r", "2", "-t", "3s",
                           "--connect-within", "1", "--samples-file", str(tmp_path / "samples.jsonl"),
                           "--exit-code-on-error", "0", "--only-summary"],
                          env=env, capture_output=True, text=True, timeout=LOCAL_RUN_TIMEOUT_S, check=False)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"vllm-gate: 2 user\(s\) on \S+ stopped on an exception: .*[Cc]onnection refused", done.stdout), \
        done.stdout[-2000:]


# --- for real, on the local cluster's real node --------------------------------------------------------------

NS = "incluster-load"
SHORT = ["engine=sim", f"namespace={NS}", "load.profile.users=4", "load.prompt_tokens=32", "load.output_tokens=16"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    skip_without_real_node("no Locust pod can run, so the in-cluster load test was")
    yield from running_local_cluster("incluster", data_plane=False, real_node=True)


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    return api_client(cluster.kubeconfig, cluster.context)


@pytest.fixture(scope="module")
def release(cluster: LocalCluster, api: client.ApiClient) -> ModelSpec:
    """The chart for llama3 (engine: sim; its NetworkPolicy admits the router's labels) Ready on the real node."""
    require("helm")
    spec = load_spec("llama3", MODELS_DIR, [*SHORT, "load.profile.duration_s=15"])
    created = ensure_namespace(client.CoreV1Api(api), spec.namespace)
    install_or_upgrade(spec, in_place(spec), cluster.kubeconfig, cluster.context, created_namespace=created)
    target = RolloutTarget(spec.namespace, release_fullname(spec.name), f"app.kubernetes.io/instance={spec.name}")
    wait_ready(api, target, ROLLOUT_TIMEOUT_S, progress=lambda _m: None)
    return spec


@pytest.fixture(scope="module")
def model_url(cluster: LocalCluster, release: ModelSpec) -> Iterator[str]:
    """The model's Service from here (its /metrics, the simulator's own counters)."""
    with PortForward(NS, f"svc/{release.service.name}", release.service.port, kubeconfig=cluster.kubeconfig,
                     context=cluster.context) as forward:
        yield forward.url


def load_objects(api: client.ApiClient) -> list[str]:
    core = client.CoreV1Api(api)
    pods = core.list_namespaced_pod(NS, label_selector=LOAD_LABEL, _request_timeout=REQUEST_S).items
    maps = core.list_namespaced_config_map(NS, label_selector=LOAD_LABEL, _request_timeout=REQUEST_S).items
    return [f"pod/{p.metadata.name}" for p in pods] + [f"configmap/{c.metadata.name}" for c in maps]


def wait_nothing_left(api: client.ApiClient) -> None:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while left := load_objects(api):
        assert time.monotonic() < deadline, f"load test objects left in {NS}: {left}"
        time.sleep(0.3)


class PodWatcher:
    """Lists the load test's pods every moment of a run: what ran, where, with which labels, in which phase."""

    def __init__(self, api: client.ApiClient, act: Callable[[list[client.V1Pod]], None] = lambda _p: None) -> None:
        self.core = client.CoreV1Api(api)
        self.seen: dict[str, client.V1Pod] = {}
        self.act = act
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        deadline = time.monotonic() + WATCH_TIMEOUT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            pods = self.core.list_namespaced_pod(NS, label_selector=LOAD_LABEL, _request_timeout=REQUEST_S).items
            for pod in pods:
                if pod.status.phase == "Running":
                    self.seen[pod.metadata.name] = pod
            self.act(pods)
            time.sleep(0.3)

    def __enter__(self) -> PodWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(WATCH_TIMEOUT_S)


def test_the_load_runs_as_router_labelled_pods_and_its_records_match_the_servers_counters(
        cluster, api, release, model_url, tmp_path):
    before = metrics.counters(metrics.parse(metrics.fetch(model_url)), release.served_name)
    lines: list[str] = []
    with PodWatcher(api) as watcher:
        run = run_incluster_load(api, release, release.in_cluster_url, image=default_image(), workdir=tmp_path,
                                 progress=lines.append, kubeconfig=cluster.kubeconfig, context=cluster.context,
                                 users_per_worker=2)
    after = metrics.counters(metrics.parse(metrics.fetch(model_url)), release.served_name)
    plan = run.plan
    # Master and two workers ran as pods, on the node that runs containers, in the router's namespace (the model's
    # own by default) with the router's labels: the chart's NetworkPolicy, enforced by kube-router, admitted them.
    assert plan.workers == 2
    assert set(watcher.seen) == {plan.master, *plan.worker_names}
    for pod in watcher.seen.values():
        assert pod.metadata.namespace == NS
        assert (ROUTER.items() <= pod.metadata.labels.items()) == (pod.metadata.name != plan.master)
        assert pod.spec.node_name == NODE_NAME
        # Owned by the run's ConfigMap: no router ReplicaSet adopts them, the garbage collector removes them.
        (owner,) = pod.metadata.owner_references
        assert (owner.kind, owner.name, owner.controller) == ("ConfigMap", plan.configmap, True)
    # The records are the server's: every successful request and token its own counters saw, no more.
    samples = run.load.samples
    assert metrics.counter_problems(before, after, metrics.client_counters(samples)) == []
    assert all(s.ok for s in samples), next(s.error for s in samples if not s.ok)
    assert sorted(run.records_by_worker) == plan.worker_names, run.load.log_path.read_text()[-3000:]
    assert all(n > 0 for n in run.records_by_worker.values()), run.records_by_worker
    assert sum(run.records_by_worker.values()) == len(samples)
    assert (tmp_path / "samples.jsonl").read_text().count("\n") == len(samples)
    # Latency as the simulator was told to answer, within 10 %: no tunnel in the way.
    stats = load_stats(samples)
    rehearsal = release.rehearsal
    assert stats.ttft_ms[50] == pytest.approx(rehearsal.ttft_ms, rel=0.10), stats.ttft_ms
    assert stats.itl_ms[50] == pytest.approx(rehearsal.itl_ms, rel=0.10), stats.itl_ms
    progress = [line for line in lines if re.match(r"load \S+ \(in-cluster, \d/2 workers\): \d+ requests, 0 errors",
                                                   line)]
    assert progress, lines
    wait_nothing_left(api)


def test_killing_a_worker_mid_run_fails_naming_it_and_cleans_up(cluster, api, release, tmp_path):
    spec = load_spec("llama3", MODELS_DIR, [*SHORT, "load.profile.duration_s=60"])
    core = client.CoreV1Api(api)
    killed: list[str] = []
    lines: list[str] = []

    def kill_once_loading(pods: list[client.V1Pod]) -> None:
        running = [p for p in pods if p.metadata.labels.get(ROLE_LABEL) == WORKER and p.status.phase == "Running"]
        if not killed and len(running) == 2 and any("requests" in line for line in lines):
            victim = sorted(p.metadata.name for p in running)[1]
            core.delete_namespaced_pod(victim, NS, grace_period_seconds=0, _request_timeout=REQUEST_S)
            killed.append(victim)

    with PodWatcher(api, kill_once_loading), pytest.raises(LoadFailed) as failed:
        run_incluster_load(api, spec, spec.in_cluster_url, image=default_image(), workdir=tmp_path,
                           progress=lines.append, kubeconfig=cluster.kubeconfig, context=cluster.context,
                           users_per_worker=2)
    assert killed, lines
    assert f"load worker {NS}/{killed[0]}" in failed.value.summary
    assert "mid-run" in failed.value.summary
    wait_nothing_left(api)


def test_an_interrupted_load_deletes_its_pods_and_configmap(cluster, api, release, tmp_path):
    spec = load_spec("llama3", MODELS_DIR, [*SHORT, "load.profile.duration_s=60"])
    sent: list[bool] = []

    def interrupt_once_running(pods: list[client.V1Pod]) -> None:
        if not sent and sum(p.status.phase == "Running" for p in pods) == 3:
            os.kill(os.getpid(), signal.SIGINT)
            sent.append(True)

    with PodWatcher(api, interrupt_once_running), pytest.raises(KeyboardInterrupt):
        run_incluster_load(api, spec, spec.in_cluster_url, image=default_image(), workdir=tmp_path,
                           progress=lambda _m: None, kubeconfig=cluster.kubeconfig, context=cluster.context,
                           users_per_worker=2)
    assert sent
    wait_nothing_left(api)


def test_without_the_router_labels_the_network_policy_refuses_the_load(cluster, api, release, tmp_path):
    # The in-cluster path goes through the policy (a port-forward would not): pods labelled as something other
    # than the router get no answer from the model, and the run says so.
    spec = load_spec("llama3", MODELS_DIR, [*SHORT, "load.profile.duration_s=5",
                                            "network.router_pod_labels={app.kubernetes.io/name: not-the-router}"])
    load = InClusterLoad(api, spec, spec.in_cluster_url, image=default_image(), workdir=tmp_path,
                         progress=lambda _m: None, kubeconfig=cluster.kubeconfig, context=cluster.context,
                         users_per_worker=2)
    with pytest.raises(LoadFailed) as failed:
        load.start_and_collect()
    assert re.match(r"the Locust master \S+ exited with status 3: \d user\(s\) on \S+-worker-\d_\w+.* stopped on an "
                    r"exception: ", failed.value.summary), failed.value.summary
    assert "Connection refused" in failed.value.detail  # kube-router rejects them; no request got through
    assert "vllm-gate-workers {}" in failed.value.detail
    wait_nothing_left(api)


def test_a_crashed_runs_leftovers_aimed_at_this_model_or_expired_are_removed(api, release):
    core = client.CoreV1Api(api)
    now = time.time()

    def plant(kind: str, name: str, target: str, expires: float) -> None:
        metadata = {"name": name, "labels": {LOAD_LABEL: "old"},
                    "annotations": {TARGET_ANNOTATION: target, EXPIRES_ANNOTATION: str(int(expires))}}
        if kind == "pod":  # never scheduled, as a crashed run's pod may be left in any state
            core.create_namespaced_pod(NS, {"metadata": metadata, "spec": {
                "nodeSelector": {"no-such-node": "x"}, "containers": [{"name": "c", "image": "example.invalid/x:1"}]}},
                _request_timeout=REQUEST_S)
        else:
            core.create_namespaced_config_map(NS, {"metadata": metadata}, _request_timeout=REQUEST_S)

    plant("pod", "ours-pod", release.in_cluster_url, now + 3600)
    plant("configmap", "ours-map", release.in_cluster_url, now + 3600)
    plant("configmap", "expired-map", "http://other.example:8000", now - 1)
    plant("configmap", "live-map", "http://other.example:8000", now + 3600)  # another model's run, still going
    try:
        removed = remove_leftovers(core, NS, release.in_cluster_url, time.time())
        assert sorted(removed) == ["configmap/expired-map", "configmap/ours-map", "pod/ours-pod"]
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while (left := load_objects(api)) != ["configmap/live-map"]:
            assert time.monotonic() < deadline, left
            time.sleep(0.3)
    finally:
        core.delete_namespaced_config_map("live-map", NS, _request_timeout=REQUEST_S)
