"""The preflight's pure computation: which nodes count, what fits per node, when an upgrade may surge."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from kubernetes import client

from tests.conftest import require
from vllm_gate.base.errors import GateError, SpecError
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.deploy.preflight import (
    Need,
    NodeInfo,
    PodUse,
    PreflightFailed,
    Taint,
    Toleration,
    autoscaling_room,
    cache_surge_blocker,
    decide,
    fits,
    need_of,
    pod_requests,
    pod_uses,
    unusable_because,
)
from vllm_gate.deploy.values import chart_values
from vllm_gate.spec import load_spec

GI = 2**30
GPU = "nvidia.com/gpu"
GPU_TAINT = Taint(GPU, "present", "NoSchedule")


@pytest.fixture(scope="module")
def sim_need() -> Need:
    require("helm")
    return need_of(load_spec("llama3", MODELS_DIR, ["engine=sim"]))


@pytest.fixture
def need(sim_need: Need) -> Need:
    """llama3 on the simulator: 1 GPU, 4 cpu, 20Gi memory per pod, one replica, the chart's GPU toleration."""
    return sim_need


def node(name: str, gpus: int, *, memory_gi: int = 256, gpu_type: str = "rtx-6000-ada", cordoned: bool = False,
         taints: tuple[Taint, ...] = (), extra: dict[str, Decimal] | None = None) -> NodeInfo:
    return NodeInfo(name, {"gpu-type": gpu_type}, cordoned, (GPU_TAINT, *taints),
                    {GPU: Decimal(gpus), "memory": Decimal(memory_gi * GI), "cpu": Decimal(32), **(extra or {})})


def model_pod(node_name: str, *, own: bool, gpus: int = 1) -> PodUse:
    return PodUse(node_name, {GPU: Decimal(gpus), "memory": Decimal(20 * GI), "cpu": Decimal(4)}, own)


def failure(need: Need, nodes: list[NodeInfo], pods: list[PodUse] | None = None) -> str:
    with pytest.raises(PreflightFailed) as info:
        decide(need, nodes, pods or [])
    assert isinstance(info.value, GateError)
    assert "\n" not in str(info.value), "the failure is one line"
    return info.value.summary


def test_need_comes_from_the_deployment_the_chart_renders(need):
    assert need.per_pod == {GPU: Decimal(1), "memory": Decimal(20 * GI), "cpu": Decimal(4)}
    assert need.replicas == 1, "the chart's default replicaCount"
    assert need.node_selector == {"gpu-type": "rtx-6000-ada"}
    assert need.tolerations == (Toleration(GPU, "Exists", "", "NoSchedule"),)
    assert need.choice == "auto"


def test_an_emptydir_cache_needs_node_disk_and_a_claim_does_not():
    vllm = need_of(load_spec("llama3", MODELS_DIR, ["rollout.strategy=rolling"]))
    assert vllm.per_pod["ephemeral-storage"] == Decimal(100 * GI), "the chart requests the emptyDir cache's size"
    assert vllm.choice == "rolling"
    claim = need_of(load_spec("llama3", MODELS_DIR, ["model_cache.kind=pvc"]))
    assert "ephemeral-storage" not in claim.per_pod


def test_spec_refuses_an_unknown_rollout_strategy():
    with pytest.raises(SpecError) as info:
        load_spec("llama3", MODELS_DIR, ["rollout.strategy=blue-green"])
    assert "rollout.strategy" in info.value.summary


def test_chart_values_carry_the_decided_strategy():
    spec = load_spec("llama3", MODELS_DIR)
    assert chart_values(spec)["strategy"] == {"type": "Recreate"}
    assert chart_values(spec, "RollingUpdate")["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


@pytest.mark.parametrize(("toleration", "taint", "tolerated"), [
    (Toleration(GPU, "Exists", "", "NoSchedule"), GPU_TAINT, True),
    (Toleration(GPU, "Exists", "", "NoSchedule"), Taint(GPU, "present", "NoExecute"), False),
    (Toleration(GPU, "Exists", "", ""), Taint(GPU, "present", "NoExecute"), True),
    (Toleration("dedicated", "Equal", "llm", "NoSchedule"), Taint("dedicated", "llm", "NoSchedule"), True),
    (Toleration("dedicated", "Equal", "llm", "NoSchedule"), Taint("dedicated", "batch", "NoSchedule"), False),
    (Toleration("", "Exists", "", ""), Taint("anything", "x", "NoExecute"), True),
    (Toleration("other", "Exists", "", ""), GPU_TAINT, False),
])
def test_toleration_matching_follows_kubernetes(toleration, taint, tolerated):
    assert toleration.tolerates(taint) is tolerated


def test_only_hard_untolerated_taints_and_cordons_make_a_node_unusable(need):
    assert unusable_because(node("a", 1), need.tolerations) is None
    assert unusable_because(node("a", 1, taints=(Taint("spot", "", "PreferNoSchedule"),)), need.tolerations) is None
    assert unusable_because(node("a", 1, cordoned=True), need.tolerations) == "cordoned"
    assert (unusable_because(node("a", 1, taints=(Taint("dedicated", "batch", "NoExecute"),)), need.tolerations)
            == "taint dedicated=batch:NoExecute not tolerated")


def test_excluded_nodes_are_named_when_nothing_else_is_left(need):
    message = failure(need, [node("gpu-0", 4, cordoned=True),
                             node("gpu-1", 4, taints=(Taint("dedicated", "batch", "NoSchedule"),))])
    assert message == ("preflight: 1 pod of (1 nvidia.com/gpu + 4 cpu + 20Gi memory) needed, but no schedulable "
                       "node has gpu-type=rtx-6000-ada; not usable: gpu-0 cordoned, "
                       "gpu-1 taint dedicated=batch:NoSchedule not tolerated")


def test_a_gpu_type_the_pool_lacks_names_the_types_it_has(need):
    message = failure(dataclasses.replace(need, gpu_type="h100-sxm", node_selector={"gpu-type": "h100-sxm"}),
                      [node("gpu-0", 4), node("gpu-1", 4), node("a-0", 8, gpu_type="a100")])
    assert message == ("preflight: 1 pod of (1 nvidia.com/gpu + 4 cpu + 20Gi memory) needed, but no schedulable "
                       "node has gpu-type=h100-sxm; the cluster has gpu-type a100 (a-0), rtx-6000-ada (gpu-0, gpu-1)")


def test_a_pod_needs_its_gpus_on_one_node(need):
    two = dataclasses.replace(need, per_pod={**need.per_pod, GPU: Decimal(2)})
    message = failure(two, [node("gpu-0", 1), node("gpu-1", 1)])
    assert message == ("preflight: 1 pod of (2 nvidia.com/gpu + 4 cpu + 20Gi memory) needed on one node of "
                       "gpu-type=rtx-6000-ada, 0 fit; free nvidia.com/gpu: gpu-0 1, gpu-1 1 "
                       "(no other node has gpu-type=rtx-6000-ada)")
    assert decide(two, [node("gpu-0", 1), node("gpu-1", 2)], []).strategy == "Recreate"


def test_gpus_taken_by_other_pods_are_not_free(need):
    message = failure(need, [node("gpu-0", 1), node("gpu-1", 1)],
                      [model_pod("gpu-0", own=False), model_pod("gpu-1", own=False)])
    assert "0 fit; free nvidia.com/gpu: gpu-0 0, gpu-1 0" in message


def test_memory_is_counted_per_node_and_named_when_short(need):
    message = failure(need, [node("gpu-0", 1, memory_gi=12), node("gpu-1", 0)])
    assert message.endswith("0 fit; free: gpu-0 1 nvidia.com/gpu + 12Gi memory, gpu-1 0 nvidia.com/gpu + 256Gi "
                            "memory (no other node has gpu-type=rtx-6000-ada)")


def test_ephemeral_storage_counts_when_the_pod_requests_it(need):
    storage = dataclasses.replace(need, per_pod={**need.per_pod, "ephemeral-storage": Decimal(100 * GI)})
    small = {"ephemeral-storage": Decimal(50 * GI)}
    message = failure(storage, [node("gpu-0", 4, extra=small)])
    assert "free: gpu-0 4 nvidia.com/gpu + 50Gi ephemeral-storage" in message
    assert "100Gi ephemeral-storage" in message
    assert decide(need, [node("gpu-0", 4, extra=small)], []).strategy == "RollingUpdate", \
        "a pod that requests no ephemeral storage is not limited by it"


def test_replicas_each_need_a_node_fit(need):
    three = dataclasses.replace(need, replicas=3, choice="recreate")
    message = failure(three, [node("gpu-0", 2), node("gpu-1", 0)])
    assert "3 pods of (1 nvidia.com/gpu + 4 cpu + 20Gi memory) needed, each on one node of" in message
    assert ", 2 fit;" in message


def test_upgrade_with_a_spare_gpu_set_surges(need):
    decision = decide(need, [node("gpu-0", 1), node("gpu-1", 1)], [model_pod("gpu-0", own=True)])
    assert decision.strategy == "RollingUpdate"
    assert decision.reason == (
        "preflight: RollingUpdate (maxSurge 1, maxUnavailable 0): a spare (1 nvidia.com/gpu + 4 cpu + 20Gi memory) "
        "on gpu-type=rtx-6000-ada for the surge pod, so the old pod serves until the new one is Ready: room for "
        "1 more pod beside the release's 1 current pod, 1 fit; free nvidia.com/gpu: gpu-0 0, gpu-1 1 "
        "(no other node has gpu-type=rtx-6000-ada)")


def test_upgrade_without_a_spare_recreates_and_says_why(need):
    # One GPU set in the pool, held by the release itself: Recreate frees it, a surge pod has nowhere to go.
    decision = decide(need, [node("gpu-0", 1)], [model_pod("gpu-0", own=True)])
    assert decision.strategy == "Recreate"
    assert decision.reason.startswith("preflight: Recreate: no spare (1 nvidia.com/gpu + 4 cpu + 20Gi memory) on "
                                      "gpu-type=rtx-6000-ada for a surge pod, so an upgrade stops the old pod")
    assert "room for 1 more pod beside the release's 1 current pod, 0 fit; free nvidia.com/gpu: gpu-0 0" \
        in decision.reason


def test_the_releases_own_pods_are_free_only_for_recreate(need):
    pods = [model_pod("gpu-0", own=True), model_pod("gpu-1", own=False)]
    nodes = [node("gpu-0", 1), node("gpu-1", 1)]
    assert decide(need, nodes, pods).strategy == "Recreate"
    message = failure(need, nodes, [model_pod("gpu-0", own=False), *pods[1:]])
    assert "0 fit" in message, "another release's pod is not freed by this upgrade"


def test_rolling_fails_without_a_spare_and_recreate_ignores_one(need):
    message = failure(dataclasses.replace(need, choice="rolling"), [node("gpu-0", 1)], [model_pod("gpu-0", own=True)])
    assert message.startswith("preflight: rollout.strategy rolling needs a spare (1 nvidia.com/gpu + 4 cpu + "
                              "20Gi memory) on gpu-type=rtx-6000-ada for the surge pod: room for 1 more pod")
    recreate = decide(dataclasses.replace(need, choice="recreate"), [node("gpu-0", 1), node("gpu-1", 1)],
                      [model_pod("gpu-0", own=True)])
    assert recreate.strategy == "Recreate"
    assert recreate.reason.startswith("preflight: Recreate (rollout.strategy: recreate): 1 pod of")
    assert "free nvidia.com/gpu: gpu-0 1, gpu-1 1, counting the release's 1 current pod as stopped" in recreate.reason


def test_a_fresh_install_surges_only_with_a_spare_set(need):
    assert decide(need, [node("gpu-0", 1)], []).strategy == "Recreate"
    decision = decide(need, [node("gpu-0", 2)], [])
    assert decision.strategy == "RollingUpdate"
    assert "room for 2 pods (1 new + 1 spare: no current pods), 2 fit" in decision.reason


def test_fits_counts_whole_pods_per_node():
    per_pod = {GPU: Decimal(2), "memory": Decimal(20 * GI)}
    assert fits({GPU: Decimal(5), "memory": Decimal(100 * GI)}, per_pod) == 2
    assert fits({GPU: Decimal(5), "memory": Decimal(30 * GI)}, per_pod) == 1
    assert fits({GPU: Decimal(-1), "memory": Decimal(30 * GI)}, per_pod) == 0
    assert fits({"memory": Decimal(100 * GI)}, per_pod) == 0, "a node without the GPU resource fits none"


def _container(name: str, cpu: str, memory: str, restart_policy: str | None = None) -> dict:
    container = {"name": name, "resources": {"requests": {"cpu": cpu, "memory": memory}}}
    return {**container, "restartPolicy": restart_policy} if restart_policy else container


def test_pod_request_counts_init_containers_sidecars_and_overhead():
    pod = {"containers": [_container("a", "1", "1Gi"), _container("b", "500m", "1Gi")],
           "initContainers": [_container("big-init", "4", "1Gi"), _container("sidecar", "250m", "512Mi", "Always"),
                              _container("late-init", "100m", "3Gi")],
           "overhead": {"cpu": "100m", "memory": "64Mi"}}
    # cpu: max(1 + 0.5 + 0.25, 4, 0.25 + 0.1) + 0.1; memory: max(2Gi + 512Mi, 1Gi, 512Mi + 3Gi) + 64Mi.
    assert pod_requests(pod) == {"cpu": Decimal("4.1"), "memory": Decimal((3 * 1024 + 512 + 64) * 2**20)}


def _pod(name: str, namespace: str, node_name: str | None, phase: str, labels: dict[str, str]) -> dict:
    """A live pod as the client returns it, serialized the way the preflight reads it."""
    container = client.V1Container(name="c", resources=client.V1ResourceRequirements(
        requests={"cpu": "1", "memory": "1Gi"}))
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
                       spec=client.V1PodSpec(node_name=node_name, containers=[container]),
                       status=client.V1PodStatus(phase=phase))
    return client.ApiClient().sanitize_for_serialization(pod)


def test_pod_uses_keep_bound_live_pods_and_mark_the_releases_own():
    mine = {"app.kubernetes.io/instance": "llama3", "app.kubernetes.io/name": "vllm"}
    uses = pod_uses([
        _pod("own", "ias", "gpu-0", "Running", mine),
        _pod("same-release-other-namespace", "other", "gpu-0", "Running", mine),
        _pod("other-chart", "ias", "gpu-1", "Pending", {**mine, "app.kubernetes.io/name": "router"}),
        _pod("done", "ias", "gpu-0", "Succeeded", mine),
        _pod("failed", "ias", "gpu-0", "Failed", {}),
        _pod("unbound", "ias", None, "Pending", mine),
    ], "ias", "llama3")
    assert [(u.node, u.own) for u in uses] == [("gpu-0", True), ("gpu-0", False), ("gpu-1", False)]
    assert uses[0].requests == {"cpu": Decimal(1), "memory": Decimal(GI)}


@pytest.mark.parametrize(("overrides", "blocked"), [
    (["model_cache.kind=pvc"], "is ReadWriteOnce, not ReadWriteMany"),
    (["model_cache.kind=pvc", "model_cache.access_mode=ReadWriteOncePod"], "is ReadWriteOncePod, not ReadWriteMany"),
    (["model_cache.kind=pvc", "model_cache.access_mode=ReadWriteMany"], None),
], ids=["rwo", "rwop", "rwx"])
def test_a_single_node_cache_claim_rules_out_the_surge_pod(overrides, blocked):
    require("helm")
    auto = need_of(load_spec("llama3", MODELS_DIR, ["engine=sim", *overrides]))
    roomy = [node("gpu-0", 4), node("gpu-1", 4)]
    decision = decide(auto, roomy, [model_pod("gpu-0", own=True)])
    if blocked is None:
        assert decision.strategy == "RollingUpdate"
        return
    assert decision.strategy == "Recreate"
    assert blocked in decision.reason
    assert "a surge pod on another node could not mount it" in decision.reason
    rolling = dataclasses.replace(auto, choice="rolling")
    assert blocked in failure(rolling, roomy, [model_pod("gpu-0", own=True)])


def test_an_existing_claims_access_modes_decide_the_surge():
    spec = load_spec("llama3", MODELS_DIR, ["model_cache.kind=existingClaim", "model_cache.claim_name=weights"])
    assert cache_surge_blocker(spec, ["ReadWriteMany"]) is None
    assert "claim weights is ReadWriteOnce, not ReadWriteMany" in cache_surge_blocker(spec, ["ReadWriteOnce"])
    assert "of unknown access mode" in cache_surge_blocker(spec, [])


def test_a_pool_that_cannot_hold_max_replicas_is_said_or_fails_as_the_spec_says(need):
    scaling = dataclasses.replace(need, max_replicas=4)
    nodes = [node("gpu-0", 2), node("gpu-1", 1)]
    busy = [model_pod("gpu-1", own=False)]  # another model's pod holds gpu-1's GPU
    line = autoscaling_room(scaling, nodes, busy)
    assert line.startswith("preflight: WARNING autoscaling.max_replicas 4 needs 4 pods of (1 nvidia.com/gpu")
    assert "the pool holds 2 beside what runs there: the autoscaler would leave 2 pods Pending" in line
    with pytest.raises(PreflightFailed, match=r"autoscaling.max_replicas 4 .* \(autoscaling.pool: fail\)"):
        autoscaling_room(dataclasses.replace(scaling, room_or_fail="fail"), nodes, busy)
    roomy = autoscaling_room(scaling, [*nodes, node("gpu-2", 4)], busy)
    assert roomy.startswith("preflight: autoscaling: room for 6 pods of")
    assert autoscaling_room(need, nodes, busy) == ""  # no autoscaler, nothing to say


def test_the_rendered_hpa_sets_what_the_preflight_counts():
    scaling = need_of(load_spec("llama3", MODELS_DIR, ["engine=sim", "autoscaling.enabled=true",
                                                       "autoscaling.min_replicas=2", "autoscaling.max_replicas=5"]))
    assert (scaling.replicas, scaling.max_replicas) == (2, 5)
