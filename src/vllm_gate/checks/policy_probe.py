"""The active NetworkPolicy probe: is the model's policy enforced, not only written?

From the router's namespace a pod with the router's labels must reach the model's Service (cluster DNS name,
serving port, /health: 200) and then one without them must be refused. Both always run, so a probe that cannot
connect at all (no DNS, no endpoints, an egress policy) fails rather than passes. When the pod without the labels
gets through, the failure names every NetworkPolicy that selects the model pods and admits it, or says that none
selects them, or that none admits it (then the cluster's network does not enforce NetworkPolicy).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.base.errors import ClusterError
from vllm_gate.checks.exposure import (
    AllowedIngress,
    covers_serving_port,
    label_selector_matches,
    selects_for_ingress,
    show_peer,
)
from vllm_gate.checks.probe_pod import (
    Outcome,
    ProbeResult,
    ProbeTemplate,
    chart_template,
    remove_leftover_probes,
    run_probe,
)
from vllm_gate.deploy.target import Target
from vllm_gate.spec import ModelSpec

RETRIES = 5  # a second apart: a refusal that outlasts them is a refusal (an enforcer may admit a new pod late)
REQUEST_TIMEOUT_S = 5
HEALTH_PATH = "/health"
REQUEST_LIMIT_S = 15  # one Kubernetes API call


@dataclass(frozen=True)
class PolicyProbe:
    """The two probe pods' results (None: the pod could not be created) and every problem they showed."""

    router: ProbeResult | None
    other: ProbeResult | None
    problems: tuple[str, ...]
    leftovers_removed: tuple[str, ...] = ()

    @property
    def enforced(self) -> bool | None:
        """True: the router got 200 and the other pod was refused; False: the other pod got through; None: the
        probe could not tell (a pod did not run, or the router was refused too)."""
        if self.other is not None and self.other.outcome is Outcome.ANSWERED:
            return False
        if self.router is not None and self.router.outcome is Outcome.ANSWERED and self.router.status == 200 and \
                self.other is not None and self.other.outcome is Outcome.NO_CONNECTION:
            return True
        return None


def probe_network_policy(api: client.ApiClient, spec: ModelSpec, target: Target,
                         template: ProbeTemplate | None = None, *, retries: int = RETRIES,
                         request_timeout_s: float = REQUEST_TIMEOUT_S) -> PolicyProbe:
    """Run the router-labelled probe pod, then the unlabelled one, from the router's namespace, against ``target``'s
    Service, and judge both."""
    core = client.CoreV1Api(api)
    namespace = spec.network.router_namespace or spec.namespace
    try:
        core.read_namespace(namespace, _request_timeout=REQUEST_LIMIT_S)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return PolicyProbe(None, None, (f"the router's namespace {namespace} does not exist on this cluster: no probe "
                                        "pod can run where the router sits, so enforcement was not exercised",))
    removed = tuple(remove_leftover_probes(api, namespace))
    template = template or chart_template(spec)
    url = f"{target.url}{HEALTH_PATH}"
    router_labels = dict(spec.network.router_pod_labels)
    problems: list[str] = []

    def run(labels: Mapping[str, str], prefix: str, who: str) -> ProbeResult | None:
        try:
            return run_probe(api, namespace, url, labels=labels, template=template, retries=retries,
                             request_timeout_s=request_timeout_s, name_prefix=prefix)
        except ClusterError as exc:
            problems.append(f"the probe pod {who} could not be created: {exc.summary}")
            return None

    router = run(router_labels, "vllm-gate-probe-router", f"with the router's labels {router_labels}")
    other = run({}, "vllm-gate-probe-other", "without the router's labels")
    if router is not None:
        problems += router_problems(router, router_labels, url)
    if other is not None:
        problems += other_problems(api, spec, target, other, url)
    return PolicyProbe(router, other, tuple(problems), removed)


def router_problems(router: ProbeResult, labels: Mapping[str, str], url: str) -> list[str]:
    """What is wrong when the pod with the router's ``labels`` did not get 200 from the model."""
    labels = dict(labels)
    if router.outcome is Outcome.ANSWERED:
        return [] if router.status == 200 else [
            f"the probe pod with the router's labels {labels} reached {url} but it answered HTTP {router.status}, "
            "not 200"]
    if router.outcome is Outcome.NO_CONNECTION:
        return [f"a pod with the router's labels {labels} could not connect to {url}, so the probe cannot tell a "
                f"refusal from a broken path: {router.describe()}. The NetworkPolicy refuses the router too, an egress "
                f"policy in {router.namespace} blocks it, or the Service has no ready endpoint"]
    return [f"the probe pod with the router's labels {labels} did not get an answer from {url}, so the probe cannot "
            f"tell whether policy is enforced: {router.describe()}"]


def other_problems(api: client.ApiClient, spec: ModelSpec, target: Target, other: ProbeResult,
                   url: str) -> list[str]:
    """What is wrong when the pod without the router's labels was not refused."""
    if other.outcome is Outcome.NO_CONNECTION:
        return []
    if other.outcome is Outcome.FAILED:
        return [f"the probe pod without the router's labels failed for another reason than a refused connection, so "
                f"whether the NetworkPolicy refuses it is unknown: {other.describe()}"]
    return [f"a pod without the router's labels reached the model ({url}): {other.describe()}; "
            f"{who_admits(api, spec, target, other)}"]


def who_admits(api: client.ApiClient, spec: ModelSpec, target: Target, source: ProbeResult) -> str:
    """Name every NetworkPolicy selecting ``target``'s pods that admits ``source``, or say why none refuses it."""
    core = client.CoreV1Api(api)
    pods = core.list_namespaced_pod(spec.namespace, label_selector=target.selector,
                                    _request_timeout=REQUEST_LIMIT_S).items
    if not pods:
        return f"the release has no pods in {spec.namespace} to read the policies' selection from"
    model_labels = pods[0].metadata.labels or {}
    policies = client.NetworkingV1Api(api).list_namespaced_network_policy(spec.namespace,
                                                                          _request_timeout=REQUEST_LIMIT_S).items
    selecting = [p for p in policies if selects_for_ingress(p, model_labels)]
    if not selecting:
        return (f"nothing refuses it: no NetworkPolicy in {spec.namespace} selects the model pods "
                f"{dict(sorted(model_labels.items()))} for Ingress")
    namespace_labels = core.read_namespace(source.namespace, _request_timeout=REQUEST_LIMIT_S).metadata.labels or {}
    allowed = AllowedIngress.for_spec(spec, target.release)
    admitting = [f"NetworkPolicy {policy.metadata.name} {rule}" for policy in selecting
                 for rule in admitting_rules(policy, allowed, source, namespace_labels)]
    if admitting:
        return "admitted by " + "; ".join(admitting)
    names = ", ".join(p.metadata.name for p in selecting)
    return (f"no NetworkPolicy selecting the model pods ({names}) admits it, yet it got through: this cluster's "
            "network does not enforce NetworkPolicy (its CNI ignores it)")


def admitting_rules(policy: client.V1NetworkPolicy, allowed: AllowedIngress, source: ProbeResult,
                    namespace_labels: Mapping[str, str]) -> list[str]:
    """Each ingress rule of ``policy`` that admits ``source`` to the serving port, as ``ingress[i] (whom, port)``."""
    found = []
    for index, rule in enumerate(policy.spec.ingress or []):
        if rule.ports and not any(covers_serving_port(port, allowed) for port in rule.ports):
            continue
        if not rule.var_from:
            whom = "from every source"
        else:
            peers = [peer for peer in rule.var_from
                     if _peer_covers(peer, policy.metadata.namespace, source, namespace_labels)]
            if not peers:
                continue
            whom = "; ".join(f"ipBlock {p.ip_block.cidr}" if p.ip_block is not None else f"peer {show_peer(p)}"
                             for p in peers)
        ports = "every port" if not rule.ports else f"port {allowed.port_name} / {allowed.serving_port}"
        found.append(f"ingress[{index}] ({whom}, {ports})")
    return found


def _peer_covers(peer: client.V1NetworkPolicyPeer, policy_namespace: str, source: ProbeResult,
                 namespace_labels: Mapping[str, str]) -> bool:
    """Does the peer include the probe pod: its address for an ipBlock, else its labels and its namespace's?"""
    if peer.ip_block is not None:
        if not source.pod_ip:
            return False
        address = ipaddress.ip_address(source.pod_ip)
        excepted = peer.ip_block._except or []  # `except` is a Python keyword: the client names it _except
        return _within(address, peer.ip_block.cidr) and not any(_within(address, c) for c in excepted)
    if peer.namespace_selector is None:
        in_namespace = source.namespace == policy_namespace
    else:
        in_namespace = label_selector_matches(peer.namespace_selector, namespace_labels)
    return in_namespace and label_selector_matches(peer.pod_selector or client.V1LabelSelector(), source.labels)


def _within(address: ipaddress.IPv4Address | ipaddress.IPv6Address, cidr: str) -> bool:
    return address in ipaddress.ip_network(cidr, strict=False)
