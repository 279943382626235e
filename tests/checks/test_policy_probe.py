"""The probe pods' curl command read back from real curl runs, the chart's test pod as their template, and which
NetworkPolicy rules admit a probe pod that got through. On a real node: tests/cluster/test_network_policy_probe.py.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.conftest import require
from vllm_gate.base.errors import RenderError
from vllm_gate.base.pod_owner import NOT_LISTENING_PORT
from vllm_gate.base.ports import free_port
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.checks.exposure import AllowedIngress
from vllm_gate.checks.policy_probe import PolicyProbe, admitting_rules
from vllm_gate.checks.probe_pod import (
    PROBE_LABEL,
    Outcome,
    ProbeResult,
    chart_template,
    classify,
    curl_args,
    probe_pod_manifest,
    template_from_manifests,
)
from vllm_gate.cluster.node.images import chart_images
from vllm_gate.spec import load_spec

CURL_TIMEOUT_S = 60
SPEC = load_spec("llama3", MODELS_DIR, ["engine=sim"])
ALLOWED = AllowedIngress.for_spec(SPEC)


# --- curl's outcomes, from real curl runs -------------------------------------------------------------------

class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        """Quiet: the test reads curl's output, not the server's."""


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def silent() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/health"


def curl(url: str, *, prefix: tuple[str, ...] = (), retries: int = 0, timeout_s: float = 2
         ) -> tuple[Outcome, int | None, str]:
    """Run the probe pod's exact command here (the image's curl is this host's) and read it as the pod's log."""
    require("curl")
    args = curl_args(url, request_timeout_s=timeout_s, retries=retries)
    args[0] = shutil.which("curl") or "curl"
    done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=CURL_TIMEOUT_S, check=False)
    return classify(done.returncode, done.stdout + done.stderr)


def test_an_answer_is_read_with_its_status(server):
    assert curl(f"{server}/health") == (Outcome.ANSWERED, 200, "")
    assert curl(f"{server}/elsewhere") == (Outcome.ANSWERED, 404, "")


def test_a_refused_connection_is_no_connection_even_after_retries():
    outcome, status, detail = curl(f"http://127.0.0.1:{free_port()}/health", retries=1)
    assert (outcome, status) == (Outcome.NO_CONNECTION, None)
    assert "Failed to connect" in detail


def test_a_connection_without_an_answer_is_a_failure_not_a_refusal(silent):
    # It connected: whatever stopped the answer, it was not a policy refusing the connection.
    outcome, _, detail = curl(silent, timeout_s=1)
    assert outcome is Outcome.FAILED
    assert "timed out" in detail


def test_a_name_that_does_not_resolve_is_a_failure_not_a_refusal():
    outcome, _, detail = curl("http://no-such-service.invalid:8000/health")
    assert outcome is Outcome.FAILED
    assert "resolve" in detail


def test_dropped_packets_are_no_connection():
    # Enforcers that drop rather than reject (Calico, Cilium): curl times out before any connection. A network
    # namespace of the test's own with a DROP rule, so the host's rules are untouched.
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace that drops packets: not exercised")
    missing = [tool for tool in ("unshare", "ip", "iptables") if shutil.which(tool) is None]
    if missing:  # tests never skip a missing tool
        pytest.fail(f"{', '.join(missing)} not installed (Debian packages util-linux, iproute2, iptables); run "
                    "scripts/setup.sh")
    port = free_port()
    setup = f"ip link set lo up && iptables -A INPUT -p tcp --dport {port} -j DROP && exec \"$@\""
    outcome, _, detail = curl(f"http://127.0.0.1:{port}/health", timeout_s=1,
                              prefix=("unshare", "--net", "sh", "-c", setup, "probe"))
    assert outcome is Outcome.NO_CONNECTION, detail
    assert "timed out" in detail


def test_a_container_that_never_ran_curl_is_a_failure():
    outcome, status, detail = classify(127, "exec: curl: not found\n")
    assert (outcome, status) == (Outcome.FAILED, None)
    assert "without curl's result" in detail
    assert "not found" in detail


# --- the chart's helm test pod as the template -----------------------------------------------------------

def test_probe_pods_run_the_charts_test_image_as_curl_user_under_its_restricted_contexts():
    require("helm")
    template = chart_template(SPEC)
    assert template.image == chart_images()["tests"]
    assert template.pod_security_context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert template.container_security_context["runAsUser"] == 100
    assert template.container_security_context["runAsNonRoot"] is True
    assert template.container_security_context["allowPrivilegeEscalation"] is False
    assert template.container_security_context["capabilities"] == {"drop": ["ALL"]}
    pod = probe_pod_manifest("p", "ns", "http://svc:8000/health", labels={"app": "router"}, template=template,
                             request_timeout_s=5, retries=3, lifetime_s=29.5)
    (container,) = pod["spec"]["containers"]
    # Never Ready (the router's labels would make it the router Service's endpoint): a TCP check of a port nothing
    # listens on, first run after the pod's whole life.
    assert container["readinessProbe"] == {"tcpSocket": {"port": NOT_LISTENING_PORT}, "initialDelaySeconds": 31}
    assert pod["metadata"]["labels"] == {"app": "router", PROBE_LABEL: "true"}
    assert container["image"] == template.image
    assert container["command"] == curl_args("http://svc:8000/health", request_timeout_s=5, retries=3)
    assert container["command"][-1] == "http://svc:8000/health"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_no_test_pod_in_the_manifests_is_said():
    with pytest.raises(RenderError, match="no helm test pod"):
        template_from_manifests([{"kind": "Service", "metadata": {"name": "x"}}])


# --- which rules admit a probe pod that got through ----------------------------------------------------------

def source(labels: dict[str, str], namespace: str = "router", ip: str = "10.88.0.7") -> ProbeResult:
    return ProbeResult("probe", namespace, {**labels, PROBE_LABEL: "true"}, Outcome.ANSWERED, 200, pod_ip=ip)


def policy(*rules: dict) -> client.V1NetworkPolicy:
    """A NetworkPolicy in namespace ``model`` selecting every pod, read as the client reads one from the server."""
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "model"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": list(rules)}}
    return client.ApiClient().deserialize(json.dumps(body), "V1NetworkPolicy", "application/json")


ROUTER_NS = {"kubernetes.io/metadata.name": "router", "team": "ias"}


@pytest.mark.parametrize(("rule", "admits"), [
    ({}, ["ingress[0] (from every source, every port)"]),
    ({"ports": [{"port": "http"}]}, ["ingress[0] (from every source, port http / 8000)"]),
    ({"ports": [{"port": 9000}]}, []),
    ({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}, ["ingress[0] (ipBlock 0.0.0.0/0, every port)"]),
    ({"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.88.0.0/16"]}}]}, []),
    ({"from": [{"namespaceSelector": {"matchLabels": {"team": "ias"}}}]},
     ["ingress[0] (peer namespaceSelector {team=ias}, every port)"]),
    ({"from": [{"namespaceSelector": {"matchLabels": {"team": "other"}}}]}, []),
    ({"from": [{"podSelector": {}}]}, []),  # the model's own namespace, not the router's
    ({"from": [{"podSelector": {"matchExpressions": [{"key": PROBE_LABEL, "operator": "Exists"}]},
                "namespaceSelector": {}}]},
     [f"ingress[0] (peer podSelector {{{PROBE_LABEL} Exists}} namespaceSelector {{}}, every port)"]),
], ids=["all", "port-by-name", "other-port", "ip-block", "ip-block-except", "namespace-labels", "other-namespace",
        "own-namespace", "probe-label"])
def test_the_rules_that_admit_the_pod_are_named_by_its_labels_namespace_and_address(rule, admits):
    assert admitting_rules(policy(rule), ALLOWED, source({}), ROUTER_NS) == admits


def test_only_the_admitting_rules_of_a_policy_are_named():
    router_only = {"from": [{"podSelector": {"matchLabels": dict(ALLOWED.router_labels)},
                             "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "router"}}}]}
    broad = {"from": [{"namespaceSelector": {}}], "ports": [{"port": 8000}]}
    assert admitting_rules(policy(router_only, broad), ALLOWED, source({}), ROUTER_NS) == [
        "ingress[1] (peer namespaceSelector {}, port http / 8000)"]
    assert len(admitting_rules(policy(router_only, broad), ALLOWED, source(dict(ALLOWED.router_labels)),
                               ROUTER_NS)) == 2


# --- what the two results say together -----------------------------------------------------------------------

def result(outcome: Outcome, status: int | None = None) -> ProbeResult:
    return ProbeResult("p", "ns", {}, outcome, status)


@pytest.mark.parametrize(("router", "other", "enforced"), [
    (result(Outcome.ANSWERED, 200), result(Outcome.NO_CONNECTION), True),
    (result(Outcome.ANSWERED, 200), result(Outcome.ANSWERED, 200), False),
    (result(Outcome.NO_CONNECTION), result(Outcome.ANSWERED, 200), False),
    (result(Outcome.NO_CONNECTION), result(Outcome.NO_CONNECTION), None),  # everything refused: cannot tell
    (result(Outcome.ANSWERED, 503), result(Outcome.NO_CONNECTION), None),
    (result(Outcome.ANSWERED, 200), result(Outcome.FAILED), None),
    (None, result(Outcome.NO_CONNECTION), None),
    (result(Outcome.ANSWERED, 200), None, None),
])
def test_enforcement_is_known_only_from_both_probes(router, other, enforced):
    assert PolicyProbe(router, other, ()).enforced is enforced

