"""Preflight on the local cluster: fail before any Helm release when the model cannot fit; surge only with a spare.

The pool is two KWOK nodes with one nvidia.com/gpu each (fake GPUs: nothing here has one); the scheduler,
the deployment controller and Helm are real. Pods become Ready through KWOK, without a simulator behind them
(the data plane is off: these tests watch the rollout through the API, not the model's answers).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from kubernetes import client, watch

from tests.conftest import require
from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.cluster.local import GpuPool, LocalCluster
from vllm_gate.deploy.preflight import Decision, PreflightFailed, check_pool
from vllm_gate.deploy.release import Release, current_revision, ensure_namespace, install_or_upgrade, roll_back
from vllm_gate.deploy.render import helm_client
from vllm_gate.deploy.rollout import RolloutTarget, wait_ready
from vllm_gate.deploy.target import in_place
from vllm_gate.deploy.values import release_fullname
from vllm_gate.gate.promotion import plan_target
from vllm_gate.gate.run import Live
from vllm_gate.spec import ModelSpec, load_spec

TOOLS = ("kwokctl", "kwok", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm")
ROLLOUT_TIMEOUT_S = 120
POOL = "gpu-type=rtx-6000-ada"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    for tool in TOOLS:
        require(tool)
    local = LocalCluster(name=f"preflight-{os.getpid()}", pool=GpuPool(nodes=2, gpus_per_node=1),
                         data_plane=False, real_node=False, progress=lambda _m: None)
    local.start()
    try:
        wait_nodes_untainted(api_client(local.kubeconfig, local.context))
        yield local
    finally:
        local.stop()


def wait_nodes_untainted(api: client.ApiClient) -> None:
    """Wait until the node lifecycle controller has lifted the not-ready taint it puts on new nodes.

    Until then the scheduler places nothing there, and the preflight says so; the tests want the settled pool.
    """
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
    while True:
        tainted = [n.metadata.name for n in core.list_node().items
                   if any(t.key == NOT_READY_TAINT for t in n.spec.taints or [])]
        if not tainted:
            return
        assert time.monotonic() < deadline, f"{tainted} still tainted {NOT_READY_TAINT} after {ROLLOUT_TIMEOUT_S} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    return api_client(cluster.kubeconfig, cluster.context)


def sim_spec(namespace: str, *overrides: str) -> ModelSpec:
    return load_spec("llama3", MODELS_DIR, ["engine=sim", f"namespace={namespace}", *overrides])


@pytest.fixture
def releases(cluster: LocalCluster) -> Iterator[list[Release]]:
    """Releases a test installs; uninstalled with their namespace afterwards, so the GPUs are free again."""
    made: list[Release] = []
    yield made
    for release in made:
        roll_back(Release(release.name, release.namespace, release.revision, None, "", True),
                  cluster.kubeconfig, cluster.context, timeout_s=ROLLOUT_TIMEOUT_S)


def deploy(cluster: LocalCluster, api: client.ApiClient, spec: ModelSpec, decision: Decision,
           releases: list[Release]) -> Release:
    created = ensure_namespace(client.CoreV1Api(api), spec.namespace)
    release = install_or_upgrade(spec, in_place(spec), cluster.kubeconfig, cluster.context, created_namespace=created,
                                 strategy=decision.strategy)
    if release.previous_revision is None:
        releases.append(release)
    return release


def wait_release_ready(api: client.ApiClient, spec: ModelSpec) -> None:
    target = RolloutTarget(spec.namespace, release_fullname(spec.name), f"app.kubernetes.io/instance={spec.name}")
    wait_ready(api, target, ROLLOUT_TIMEOUT_S, progress=lambda _m: None)


def refused(cluster: LocalCluster, spec: ModelSpec, revision: int | None = None) -> str:
    """Preflight of ``spec`` fails, and Helm was not called: the release is still at ``revision`` (None: none)."""
    with pytest.raises(PreflightFailed) as info:
        check_pool(spec, api_client(cluster.kubeconfig, cluster.context))
    assert current_revision(helm_client(cluster.kubeconfig, cluster.context), spec.name, spec.namespace) == revision
    return info.value.summary


def test_a_pod_that_needs_more_gpus_than_one_node_has_fails_before_helm(cluster):
    # Two GPUs are free in the pool, but one on each node: a pod cannot span nodes.
    message = refused(cluster, sim_spec("pf-too-big", "resources.gpus=2", "vllm.tensor_parallel_size=2"))
    assert message == ("preflight: 1 pod of (2 nvidia.com/gpu + 4 cpu + 20Gi memory) needed on one node of "
                       f"{POOL}, 0 fit; free nvidia.com/gpu: gpu-0 1, gpu-1 1 (no other node has {POOL})")


def test_a_gpu_type_the_pool_lacks_fails_before_helm(cluster):
    message = refused(cluster, sim_spec("pf-no-type", "resources.gpu_type=h100-sxm"))
    assert message == ("preflight: 1 pod of (1 nvidia.com/gpu + 4 cpu + 20Gi memory) needed, but no schedulable "
                       "node has gpu-type=h100-sxm; the cluster has gpu-type rtx-6000-ada (gpu-0, gpu-1)")


@pytest.fixture
def gpus_taken(api: client.ApiClient) -> Iterator[None]:
    """Another workload holding every GPU of the pool (one pod per node), removed afterwards."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    name, selector = "other-gpu-job", "app=other-gpu-job"
    pod_spec = {"nodeSelector": {"gpu-type": "rtx-6000-ada"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{"name": "c", "image": "example.invalid/gpu-job:v1",
                                "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    apps.create_namespaced_deployment("default", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}}})
    try:
        wait_ready(api, RolloutTarget("default", name, selector), ROLLOUT_TIMEOUT_S, progress=lambda _m: None)
        yield
    finally:
        apps.delete_namespaced_deployment(name, "default")
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
        while core.list_namespaced_pod("default", label_selector=selector).items:
            assert time.monotonic() < deadline, f"pods of {name} still there after {ROLLOUT_TIMEOUT_S} s"
            time.sleep(0.5)


@pytest.mark.usefixtures("gpus_taken")
def test_gpus_held_by_other_pods_fail_before_helm(cluster):
    message = refused(cluster, sim_spec("pf-taken"))
    assert message == ("preflight: 1 pod of (1 nvidia.com/gpu + 4 cpu + 20Gi memory) needed on one node of "
                       f"{POOL}, 0 fit; free nvidia.com/gpu: gpu-0 0, gpu-1 0 (no other node has {POOL})")


@dataclass
class PodTimeline:
    """Pod events of one namespace in the API's order: (pod, ready, gone) after each event."""

    events: list[tuple[str, bool, bool]] = field(default_factory=list)

    def first(self, names: set[str], *, ready: bool) -> int:
        """Index of the first event where one of ``names`` is ready (ready=True) or not serving (ready=False)."""
        for i, (name, is_ready, gone) in enumerate(self.events):
            if name in names and (is_ready if ready else (gone or not is_ready)):
                return i
        raise AssertionError(f"no event with {sorted(names)} {'ready' if ready else 'down'}: {self.events}")


def _serving(pod: client.V1Pod) -> bool:
    if pod.metadata.deletion_timestamp or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def upgrade_watched(cluster: LocalCluster, api: client.ApiClient, spec: ModelSpec, decision: Decision,
                    releases: list[Release]) -> tuple[PodTimeline, set[str], set[str]]:
    """Upgrade while watching the release's pods from before helm runs until the old pods are gone.

    Returns the timeline, the old pods' names and the new pods' names.
    """
    core = client.CoreV1Api(api)
    selector = f"app.kubernetes.io/instance={spec.name}"
    before = core.list_namespaced_pod(spec.namespace, label_selector=selector)
    old = {p.metadata.name for p in before.items}
    assert old, "the release should have pods before the upgrade"
    assert all(_serving(p) for p in before.items), "the release should be serving before the upgrade"
    deploy(cluster, api, spec, decision, releases)
    timeline, alive, new = PodTimeline(), set(old), set()
    version = before.metadata.resource_version
    deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
    while alive or not any(name in new for name, ready, _ in timeline.events if ready):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"upgrade not done within {ROLLOUT_TIMEOUT_S} s: {timeline.events}"
        stream = watch.Watch().stream(core.list_namespaced_pod, spec.namespace, label_selector=selector,
                                      resource_version=version, timeout_seconds=max(1, int(min(remaining, 10))))
        for event in stream:
            pod = event["object"]
            version = pod.metadata.resource_version
            name, gone = pod.metadata.name, event["type"] == "DELETED"
            if name not in old:
                new.add(name)
            if gone:
                alive.discard(name)
            timeline.events.append((name, not gone and _serving(pod), gone))
    return timeline, old, new


def test_an_upgrade_with_a_spare_gpu_surges_and_the_old_pod_serves_until_the_new_one_is_ready(
        cluster, api, releases):
    first = sim_spec("pf-rolling")
    decision = check_pool(first, api_client(cluster.kubeconfig, cluster.context))
    assert decision.strategy == "RollingUpdate", decision.reason
    deploy(cluster, api, first, decision, releases)
    wait_release_ready(api, first)

    upgrade = sim_spec("pf-rolling", "vllm.max_model_len=4096")
    decision = check_pool(upgrade, api_client(cluster.kubeconfig, cluster.context))
    assert decision.strategy == "RollingUpdate", decision.reason
    assert re.fullmatch(r"preflight: RollingUpdate \(maxSurge 1, maxUnavailable 0\): a spare \(1 nvidia.com/gpu "
                        r"\+ 4 cpu \+ 20Gi memory\) on gpu-type=rtx-6000-ada for the surge pod, so the old pod serves "
                        r"until the new one is Ready: room for 1 more pod beside the release's 1 current pod, 1 fit; "
                        r"free nvidia.com/gpu: gpu-0 [01], gpu-1 [01] \(no other node has gpu-type=rtx-6000-ada\)",
                        decision.reason), decision.reason
    timeline, old, new = upgrade_watched(cluster, api, upgrade, decision, releases)
    assert len(new) == 1, f"one new pod replaces the old one: {timeline.events}"
    assert timeline.first(new, ready=True) < timeline.first(old, ready=False), \
        f"the old pod stopped serving before the new one was Ready: {timeline.events}"
    strategy = client.AppsV1Api(api).read_namespaced_deployment(release_fullname(upgrade.name), upgrade.namespace)
    assert strategy.spec.strategy.type == "RollingUpdate"
    assert (strategy.spec.strategy.rolling_update.max_surge, strategy.spec.strategy.rolling_update.max_unavailable) \
        == (1, 0)


@pytest.fixture
def one_gpu_set(api: client.ApiClient) -> Iterator[None]:
    """Cordon gpu-1, leaving a pool of exactly one GPU set (gpu-0); uncordoned afterwards."""
    core = client.CoreV1Api(api)
    core.patch_node("gpu-1", {"spec": {"unschedulable": True}})
    try:
        yield
    finally:
        core.patch_node("gpu-1", {"spec": {"unschedulable": False}})


@pytest.mark.usefixtures("one_gpu_set")
def test_without_a_spare_gpu_preflight_picks_recreate_and_says_so(cluster, api, releases):
    first = sim_spec("pf-recreate")
    decision = check_pool(first, api_client(cluster.kubeconfig, cluster.context))
    assert decision == Decision("Recreate", (
        "preflight: Recreate: no spare (1 nvidia.com/gpu + 4 cpu + 20Gi memory) on gpu-type=rtx-6000-ada for a "
        "surge pod, so an upgrade stops the old pod before the new one starts (an outage): room for 2 pods (1 new "
        "+ 1 spare: no current pods), 1 fit; free nvidia.com/gpu: gpu-0 1; not usable: gpu-1 cordoned"))
    deploy(cluster, api, first, decision, releases)
    wait_release_ready(api, first)
    # A candidate beside the live release needs a GPU of its own: none is left, so the run fails before Helm, naming
    # the choice; in place, the live release's own GPU counts as freed.
    live = Live(None, in_place(first), "the live release")
    with pytest.raises(PreflightFailed) as beside:
        plan_target(first, api, "candidate", live)
    assert beside.value.summary.startswith("preflight: 1 pod of (1 nvidia.com/gpu + 4 cpu + 20Gi memory) needed on "
                                           "one node of gpu-type=rtx-6000-ada, 0 fit"), beside.value.summary
    assert beside.value.summary.endswith(
        ". The pool cannot hold a candidate beside the live revision llama3: run with --promotion in-place to upgrade "
        "it in place (llama3 is then out of rotation during the run)"), beside.value.summary
    target, in_place_decision = plan_target(first, api, "in-place", live)
    assert (target, in_place_decision.strategy) == (in_place(first), "Recreate")

    upgrade = sim_spec("pf-recreate", "vllm.max_model_len=4096")
    rolling = sim_spec("pf-recreate", "vllm.max_model_len=4096", "rollout.strategy=rolling")
    assert refused(cluster, rolling, revision=1).startswith(
        "preflight: rollout.strategy rolling needs a spare (1 nvidia.com/gpu + 4 cpu + 20Gi memory) on "
        "gpu-type=rtx-6000-ada for the surge pod: room for 1 more pod beside the release's 1 current pod, 0 fit")
    decision = check_pool(upgrade, api_client(cluster.kubeconfig, cluster.context))
    assert decision == Decision("Recreate", (
        "preflight: Recreate: no spare (1 nvidia.com/gpu + 4 cpu + 20Gi memory) on gpu-type=rtx-6000-ada for a "
        "surge pod, so an upgrade stops the old pod before the new one starts (an outage): room for 1 more pod "
        "beside the release's 1 current pod, 0 fit; free nvidia.com/gpu: gpu-0 0; not usable: gpu-1 cordoned"))
    # The same watch that saw the surge sees Recreate's outage: the old pod goes before the new one is Ready,
    # and the new one gets the GPU the old one freed.
    timeline, old, new = upgrade_watched(cluster, api, upgrade, decision, releases)
    assert timeline.first(old, ready=False) < timeline.first(new, ready=True), timeline.events
    wait_release_ready(api, upgrade)

