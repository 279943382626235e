"""Is the model private? Host networking and the NetworkPolicy of a live release (what reaches it: reach.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kubernetes import client

from vllm_gate.spec import ModelSpec

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # the API server sets it on every namespace
HELM_TEST_LABEL = "vllm-gate/helm-test"  # the chart's helm test pod carries it, valued with the release name


def host_network_problems(pods: list[client.V1Pod]) -> list[str]:
    problems = []
    for pod in pods:
        if pod.spec.host_network:
            problems.append(f"pod {pod.metadata.name} uses hostNetwork")
        problems += [f"pod {pod.metadata.name} container {c.name} has hostPort {p.host_port}"
                     for c in pod.spec.containers for p in c.ports or [] if p.host_port]
    return problems


@dataclass(frozen=True)
class AllowedIngress:
    """The only traffic the model pods may take: the router and the Prometheus pods, on the serving port."""

    router_labels: Mapping[str, str]
    router_namespace: str | None  # None: the model's own namespace
    monitoring_namespace: str
    prometheus_labels: Mapping[str, str]  # the Prometheus pods' labels, in monitoring_namespace
    serving_port: int
    port_name: str = "http"  # the container port's name, which a policy may use instead of the number
    # With the router in another namespace: the exact labels of the release's helm test pod, which the policy
    # may admit from the model's own namespace (None: no such rule is allowed).
    test_pod_labels: Mapping[str, str] | None = None

    @classmethod
    def for_spec(cls, spec: ModelSpec, release: str | None = None) -> AllowedIngress:
        """What the chart's NetworkPolicy admits for ``spec``'s ``release`` (default: the release the spec names)."""
        net = spec.network
        elsewhere = net.router_namespace not in (None, spec.namespace)
        test_pod = {**net.router_pod_labels, HELM_TEST_LABEL: release or spec.name} if elsewhere else None
        return cls(router_labels=dict(net.router_pod_labels), router_namespace=net.router_namespace,
                   monitoring_namespace=spec.monitoring.namespace,
                   prometheus_labels=dict(spec.monitoring.prometheus_pod_labels), serving_port=spec.service.port,
                   test_pod_labels=test_pod)


def label_selector_matches(selector: client.V1LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes semantics: every matchLabels pair and every matchExpression must hold; ``{}`` matches all."""
    if any(labels.get(key) != value for key, value in (selector.match_labels or {}).items()):
        return False
    return all(_requirement_holds(req, labels) for req in selector.match_expressions or [])


def _requirement_holds(req: client.V1LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    values = req.values or []
    if req.operator == "In":
        return req.key in labels and labels[req.key] in values
    if req.operator == "NotIn":
        return req.key not in labels or labels[req.key] not in values  # an absent label is "not in"
    if req.operator == "Exists":
        return req.key in labels
    if req.operator == "DoesNotExist":
        return req.key not in labels
    raise ValueError(f"unknown label selector operator {req.operator!r}")


def _show(selector: client.V1LabelSelector) -> str:
    parts = [f"{key}={value}" for key, value in sorted((selector.match_labels or {}).items())]
    parts += [f"{req.key} {req.operator} {req.values}" if req.values else f"{req.key} {req.operator}"
              for req in selector.match_expressions or []]
    return "{" + ", ".join(parts) + "}"


def show_peer(peer: client.V1NetworkPolicyPeer) -> str:
    parts = [f"podSelector {_show(peer.pod_selector)}"] if peer.pod_selector is not None else []
    if peer.namespace_selector is not None:
        parts.append(f"namespaceSelector {_show(peer.namespace_selector)}")
    return " ".join(parts) or "{}"


def _exact_namespace(selector: client.V1LabelSelector) -> str | None:
    """The one namespace a namespaceSelector names by its metadata.name label, else None."""
    labels = selector.match_labels or {}
    if selector.match_expressions or set(labels) != {NAMESPACE_NAME_LABEL}:
        return None
    return labels[NAMESPACE_NAME_LABEL]


def _is_router(peer: client.V1NetworkPolicyPeer, policy_namespace: str, allowed: AllowedIngress) -> bool:
    pods = peer.pod_selector
    if peer.ip_block is not None or pods is None or pods.match_expressions:
        return False
    # Without a namespaceSelector a podSelector peer means pods of the policy's own namespace.
    namespace = policy_namespace if peer.namespace_selector is None else _exact_namespace(peer.namespace_selector)
    return (pods.match_labels or {}) == dict(allowed.router_labels) and \
        namespace == (allowed.router_namespace or policy_namespace)


def _is_test_pod(peer: client.V1NetworkPolicyPeer, policy_namespace: str, allowed: AllowedIngress) -> bool:
    """Exactly the release's helm test pod labels, in the policy's (the model's) own namespace."""
    pods = peer.pod_selector
    if allowed.test_pod_labels is None or peer.ip_block is not None or pods is None or pods.match_expressions:
        return False
    namespace = policy_namespace if peer.namespace_selector is None else _exact_namespace(peer.namespace_selector)
    return (pods.match_labels or {}) == dict(allowed.test_pod_labels) and namespace == policy_namespace


def _requires_prometheus_labels(selector: client.V1LabelSelector, allowed: AllowedIngress) -> bool:
    """Does every pod the selector matches carry all the Prometheus labels (further terms only narrow it)?"""
    labels = selector.match_labels or {}
    return all(labels.get(key) == value for key, value in allowed.prometheus_labels.items())


def _peer_namespace(peer: client.V1NetworkPolicyPeer, policy_namespace: str) -> str | None:
    """The one namespace a pod peer draws from: its exact namespaceSelector, or the policy's own without one."""
    return policy_namespace if peer.namespace_selector is None else _exact_namespace(peer.namespace_selector)


def _is_prometheus(peer: client.V1NetworkPolicyPeer, policy_namespace: str, allowed: AllowedIngress) -> bool:
    """Prometheus-labelled pods of the monitoring namespace alone: both selectors in the one peer."""
    return peer.ip_block is None and peer.pod_selector is not None and \
        _requires_prometheus_labels(peer.pod_selector, allowed) and \
        _peer_namespace(peer, policy_namespace) == allowed.monitoring_namespace


def _monitoring_peer_problem(peer: client.V1NetworkPolicyPeer, policy_namespace: str,
                             allowed: AllowedIngress) -> str | None:
    """Why a peer aimed at Prometheus (its namespace or its labels) admits more than the Prometheus pods."""
    shown, monitoring = show_peer(peer), allowed.monitoring_namespace
    prometheus = dict(allowed.prometheus_labels)
    namespace = _peer_namespace(peer, policy_namespace)
    if peer.pod_selector is None:
        if namespace == monitoring:
            return (f"peer {shown} admits every pod of namespace {monitoring}, not only the Prometheus pods "
                    f"{prometheus}: the peer needs the podSelector too")
        return (f"peer {shown}: the namespaceSelector is not exactly {NAMESPACE_NAME_LABEL}={monitoring}, "
                "and it admits every pod of the namespaces it selects")
    if namespace == monitoring and namespace != (allowed.router_namespace or policy_namespace):
        return (f"peer {shown}: podSelector does not require the Prometheus pod labels {prometheus}, so it "
                f"admits other pods of namespace {monitoring}")
    if _requires_prometheus_labels(peer.pod_selector, allowed) and namespace != monitoring:
        where = f"namespace {policy_namespace}" if peer.namespace_selector is None else "its namespaceSelector"
        return f"peer {shown} admits Prometheus-labelled pods in {where}, not namespace {monitoring} alone"
    return None


def _peer_problem(peer: client.V1NetworkPolicyPeer, policy_namespace: str, allowed: AllowedIngress) -> str | None:
    """Why a peer admits more than the router or the Prometheus pods; None when it does not."""
    if peer.ip_block is not None:
        excepted = f" except {peer.ip_block._except}" if peer.ip_block._except else ""
        return f"ipBlock {peer.ip_block.cidr}{excepted} admits addresses, not the router"
    if _is_router(peer, policy_namespace, allowed) or _is_prometheus(peer, policy_namespace, allowed) or \
            _is_test_pod(peer, policy_namespace, allowed):
        return None
    shown = show_peer(peer)
    if peer.namespace_selector is not None and _show(peer.namespace_selector) == "{}":
        return f"peer {shown}: an empty namespaceSelector admits every namespace"
    if problem := _monitoring_peer_problem(peer, policy_namespace, allowed):
        return problem
    router = allowed.router_namespace or policy_namespace
    if peer.pod_selector.match_expressions or (peer.pod_selector.match_labels or {}) != dict(allowed.router_labels):
        return f"peer {shown}: podSelector is not exactly the router labels {dict(allowed.router_labels)}"
    where = f"namespace {policy_namespace}" if peer.namespace_selector is None else "its namespaceSelector"
    return f"peer {shown} admits router-labelled pods in {where}, not namespace {router} alone"


def _port_problem(port: client.V1NetworkPolicyPort, allowed: AllowedIngress) -> str | None:
    """Why a port entry admits more than the serving port; None when it does not."""
    if port.port is None:
        return "a port entry without a port admits every port"
    if port.end_port is not None:
        return f"port range {port.port}-{port.end_port}"
    if port.protocol not in (None, "TCP"):
        return f"port {port.port}/{port.protocol} is not TCP"
    if port.port not in (allowed.serving_port, allowed.port_name):
        return f"port {port.port} is not the serving port ({allowed.port_name} / {allowed.serving_port})"
    return None


def _sources(rule: client.V1NetworkPolicyIngressRule) -> str:
    """Whom a rule admits, for naming it beside a port it opens too wide."""
    if not rule.var_from:
        return "every source"
    return "; ".join("ipBlock " + peer.ip_block.cidr if peer.ip_block is not None else "peer " + show_peer(peer)
                     for peer in rule.var_from)


def ingress_rule_problems(policy: client.V1NetworkPolicy, allowed: AllowedIngress) -> list[str]:
    """Every source or port one policy's ingress rules admit beyond the router and Prometheus on the serving port."""
    name, namespace = policy.metadata.name, policy.metadata.namespace
    problems = []
    for index, rule in enumerate(policy.spec.ingress or []):
        where = f"NetworkPolicy {name} ingress[{index}]"
        if not rule.var_from:
            problems.append(f"{where} has no `from`: it admits every source")
        problems += [f"{where} {problem}" for peer in rule.var_from or []
                     if (problem := _peer_problem(peer, namespace, allowed))]
        # Name the peers too: a wrong port on the Prometheus rule opens more than /metrics to Prometheus.
        if not rule.ports:
            problems.append(f"{where} lists no ports: it admits every port to {_sources(rule)}")
        problems += [f"{where} {problem}, admitted to {_sources(rule)}" for port in rule.ports or []
                     if (problem := _port_problem(port, allowed))]
    return problems


def _covers_pods(peer: client.V1NetworkPolicyPeer, policy_namespace: str, labels: Mapping[str, str],
                 namespace: str) -> bool:
    """Does the peer include pods with ``labels`` in ``namespace``, as far as their labels and namespace name tell?"""
    if peer.ip_block is not None:
        return False  # addresses, not pods: whether they are these pods' is unknowable here
    if peer.namespace_selector is None:
        in_namespace = namespace == policy_namespace
    else:
        in_namespace = label_selector_matches(peer.namespace_selector, {NAMESPACE_NAME_LABEL: namespace})
    return in_namespace and label_selector_matches(peer.pod_selector or client.V1LabelSelector(), labels)


def covers_serving_port(port: client.V1NetworkPolicyPort, allowed: AllowedIngress) -> bool:
    """Does the port entry include the serving port (by number, by name, in a range, or every port)?"""
    if port.protocol not in (None, "TCP"):
        return False
    if port.port is None or port.port in (allowed.serving_port, allowed.port_name):
        return True
    return port.end_port is not None and isinstance(port.port, int) and \
        port.port <= allowed.serving_port <= port.end_port


def _admits(policy: client.V1NetworkPolicy, allowed: AllowedIngress, labels: Mapping[str, str],
            namespace: str) -> bool:
    """Can pods with ``labels`` in ``namespace`` reach the serving port through some rule of the policy?"""
    own = policy.metadata.namespace
    return any((not rule.var_from or any(_covers_pods(peer, own, labels, namespace) for peer in rule.var_from))
               and (not rule.ports or any(covers_serving_port(port, allowed) for port in rule.ports))
               for rule in policy.spec.ingress or [])


def selects_for_ingress(policy: client.V1NetworkPolicy, pod_labels: Mapping[str, str]) -> bool:
    """Does the policy govern ingress to pods with these labels (policies are additive: every such one counts)?"""
    # An absent policyTypes means Ingress (plus Egress when egress rules are present).
    if "Ingress" not in (policy.spec.policy_types or ["Ingress"]):
        return False
    # An absent podSelector is the empty one: every pod of the namespace.
    return label_selector_matches(policy.spec.pod_selector or client.V1LabelSelector(), pod_labels)


def network_policy_problems(api: client.ApiClient, namespace: str, pod_labels: Mapping[str, str],
                            allowed: AllowedIngress) -> list[str]:
    """The union of the policies selecting the model pods must admit the router and Prometheus, nothing else."""
    policies = client.NetworkingV1Api(api).list_namespaced_network_policy(namespace, _request_timeout=15).items
    selecting = [p for p in policies if selects_for_ingress(p, pod_labels)]
    if not selecting:
        return [f"no NetworkPolicy in {namespace} selects the model pods {dict(sorted(pod_labels.items()))} for "
                "Ingress: every pod of the cluster can reach them"]
    problems = [problem for policy in selecting for problem in ingress_rule_problems(policy, allowed)]
    router = allowed.router_namespace or namespace
    if not any(_admits(policy, allowed, allowed.router_labels, router) for policy in selecting):
        problems.append(f"no NetworkPolicy in {namespace} admits the router {dict(allowed.router_labels)} "
                        f"(namespace {router}) on port {allowed.port_name} / {allowed.serving_port}")
    # Without it Prometheus cannot scrape /metrics, and the model is not monitored.
    if not any(_admits(policy, allowed, allowed.prometheus_labels, allowed.monitoring_namespace)
               for policy in selecting):
        problems.append(f"no NetworkPolicy in {namespace} admits the Prometheus pods {dict(allowed.prometheus_labels)} "
                        f"(namespace {allowed.monitoring_namespace}) on port {allowed.port_name} / "
                        f"{allowed.serving_port}")
    return problems
