"""Fail-fast diagnosis of pod states the local cluster cannot produce (no kubelet pulls or runs images).

The pod statuses here are constructed by hand: a fake of what a kubelet reports, named as such.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client

from vllm_gate.base.errors import RolloutFailed
from vllm_gate.deploy.rollout import deployment_complete, pod_failure

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def fake_pod(*, conditions=None, statuses=None) -> client.V1Pod:
    return client.V1Pod(metadata=client.V1ObjectMeta(name="llama3-vllm-abc", namespace="ias-production"),
                        spec=client.V1PodSpec(containers=[client.V1Container(name="vllm")]),
                        status=client.V1PodStatus(phase="Pending", conditions=conditions,
                                                  container_statuses=statuses))


def waiting(reason: str, last_terminated: str | None = None) -> list[client.V1ContainerStatus]:
    last = client.V1ContainerState(terminated=client.V1ContainerStateTerminated(exit_code=137, reason=last_terminated)
                                   ) if last_terminated else None
    return [client.V1ContainerStatus(name="vllm", image="vllm/vllm-openai:v0.11.0", image_id="", ready=False,
                                     restart_count=3, last_state=last,
                                     state=client.V1ContainerState(waiting=client.V1ContainerStateWaiting(
                                         reason=reason, message=f"{reason} message")))]


@pytest.mark.parametrize(("statuses", "reason"), [
    (waiting("ImagePullBackOff"), "ImagePullBackOff"),
    (waiting("ErrImagePull"), "ErrImagePull"),
    (waiting("CrashLoopBackOff"), "CrashLoopBackOff"),
    (waiting("CrashLoopBackOff", last_terminated="OOMKilled"), "OOMKilled"),
    (waiting("CreateContainerConfigError"), "CreateContainerConfigError"),
])
def test_fatal_container_states_fail_at_once(statuses, reason):
    assert pod_failure(fake_pod(statuses=statuses), NOW.timestamp())[0] == reason


def test_container_creating_is_not_a_failure():
    assert pod_failure(fake_pod(statuses=waiting("ContainerCreating")), NOW.timestamp()) is None


def test_unschedulable_fails_only_after_the_grace_period():
    cond = [client.V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable",
                                  message="0/3 nodes are available", last_transition_time=NOW)]
    pod = fake_pod(conditions=cond)
    assert pod_failure(pod, (NOW + timedelta(seconds=5)).timestamp(), unschedulable_grace_s=15) is None
    assert pod_failure(pod, (NOW + timedelta(seconds=20)).timestamp(), unschedulable_grace_s=15) == (
        "Unschedulable", "0/3 nodes are available")


def deployment(*, generation=2, observed=2, replicas=1, updated=1, total=1, available=1, conditions=None):
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name="llama3-vllm", generation=generation),
        spec=client.V1DeploymentSpec(replicas=replicas, selector=client.V1LabelSelector(),
                                     template=client.V1PodTemplateSpec()),
        status=client.V1DeploymentStatus(observed_generation=observed, updated_replicas=updated, replicas=total,
                                         available_replicas=available, conditions=conditions))


@pytest.mark.parametrize(("dep", "done", "waiting_for"), [
    (deployment(observed=1), False, "waiting for the controller to observe the new spec"),
    (deployment(updated=0, available=0), False, "0/1 replicas updated"),
    (deployment(total=2), False, "1 old replicas terminating"),
    (deployment(available=0), False, "0/1 replicas available"),
    (deployment(), True, "1/1 ready"),
])
def test_deployment_complete_follows_kubectl(dep, done, waiting_for):
    assert deployment_complete(dep) == (done, waiting_for)


def test_progress_deadline_exceeded_fails():
    cond = [client.V1DeploymentCondition(type="Progressing", status="False", reason="ProgressDeadlineExceeded",
                                         message="ReplicaSet has timed out progressing.")]
    with pytest.raises(RolloutFailed, match="ProgressDeadlineExceeded; the rollout exceeded its deadline"):
        deployment_complete(deployment(available=0, conditions=cond))
