"""How Prometheus finds the model: a ServiceMonitor or PodMonitor where the cluster serves that kind, else pod
annotations; rendered by the real helm, with and without ``--api-versions`` for the Prometheus Operator's kinds.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client

from tests.chart.strict_yaml import dry_run_notes, template, template_error
from tests.conftest import require
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.checks.exposure import label_selector_matches
from vllm_gate.deploy.values import chart_values, release_fullname
from vllm_gate.spec import ModelSpec, load_spec

K8S_VERSION = "1.35.0"
SERVICE_MONITOR = "monitoring.coreos.com/v1/ServiceMonitor"
POD_MONITOR = "monitoring.coreos.com/v1/PodMonitor"
MONITOR_KINDS = {"ServiceMonitor", "PodMonitor"}
SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
EXTRA_LABELS = 'monitoring.labels={"release": "kube-prometheus-stack"}'


@pytest.fixture(autouse=True)
def _helm() -> None:
    require("helm")


def render(spec: ModelSpec, *api_versions: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return template(values if values is not None else chart_values(spec), release=spec.name,
                    namespace=spec.namespace, api_versions=api_versions)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and "helm.sh/hook" not in d["metadata"].get("annotations", {})]


def pod_template(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(docs, "Deployment")
    return deployment["spec"]["template"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return label_selector_matches(client.V1LabelSelector(match_labels=selector["matchLabels"]), labels)


def scrape_annotations(docs: list[dict[str, Any]]) -> dict[str, str]:
    annotations = pod_template(docs)["metadata"].get("annotations", {})
    return {key: value for key, value in annotations.items() if key.startswith("prometheus.io/")}


# (case id, spec's monitoring.scrape, kinds the cluster serves, what must be rendered)
WIRING = [
    ("servicemonitor-with-crd", "servicemonitor", (SERVICE_MONITOR,), "ServiceMonitor"),
    ("servicemonitor-with-both-crds", "servicemonitor", (SERVICE_MONITOR, POD_MONITOR), "ServiceMonitor"),
    ("servicemonitor-without-crd", "servicemonitor", (), "annotations"),
    ("servicemonitor-with-only-podmonitor-crd", "servicemonitor", (POD_MONITOR,), "annotations"),
    ("podmonitor-with-crd", "podmonitor", (POD_MONITOR,), "PodMonitor"),
    ("podmonitor-without-crd", "podmonitor", (), "annotations"),
    ("podmonitor-with-only-servicemonitor-crd", "podmonitor", (SERVICE_MONITOR,), "annotations"),
    ("annotations-chosen", "annotations", (SERVICE_MONITOR, POD_MONITOR), "annotations"),
]


@pytest.mark.parametrize(("scrape", "api_versions", "rendered"), [c[1:] for c in WIRING], ids=[c[0] for c in WIRING])
def test_one_scrape_wiring_per_spec_and_cluster(spec: ModelSpec, scrape: str, api_versions: tuple[str, ...],
                                                rendered: str):
    monitored = load_spec(spec.name, MODELS_DIR, [f"monitoring.scrape={scrape}"])
    docs = render(monitored, *api_versions)
    monitors = [d["kind"] for d in docs if d["kind"] in MONITOR_KINDS]
    annotations = scrape_annotations(docs)
    if rendered == "annotations":
        assert monitors == []
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.service.port),
                               "prometheus.io/path": "/metrics"}
    else:
        assert monitors == [rendered]
        assert annotations == {}, "a Prometheus Operator object and the annotations would scrape the pod twice"
    for doc in docs:
        if doc["kind"] not in MONITOR_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_service_monitor_scrapes_the_service_on_its_http_port():
    spec = load_spec("llama3", MODELS_DIR, [EXTRA_LABELS, "monitoring.interval=15s"])
    docs = render(spec, SERVICE_MONITOR)
    (monitor,) = of_kind(docs, "ServiceMonitor")
    (service,) = of_kind(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"] == release_fullname(spec.name)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/instance"] == spec.name
    # Exactly these fields: the kind is a CRD, which no local schema checks.
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert "http" in [port["name"] for port in service["spec"]["ports"]]
    others = [d for d in docs if d["kind"] == "Service" and d is not service]
    assert not others, "the selector must meet the model's Service alone"


def test_pod_monitor_scrapes_the_model_pods_not_the_test_pod():
    spec = load_spec("llama3", MODELS_DIR, ["monitoring.scrape=podmonitor", EXTRA_LABELS])
    docs = render(spec, POD_MONITOR)
    (monitor,) = of_kind(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert set(monitor["spec"]) == {"selector", "podMetricsEndpoints"}
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics",
                                                      "interval": spec.monitoring.interval}]
    pod = pod_template(docs)
    assert selects(monitor["spec"]["selector"], pod["metadata"]["labels"])
    assert "http" in [port["name"] for port in pod["spec"]["containers"][0]["ports"]]
    (test_pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert not selects(monitor["spec"]["selector"], test_pod["metadata"]["labels"])


@pytest.mark.parametrize(("kind", "api_version", "endpoints"), [
    ("ServiceMonitor", SERVICE_MONITOR, "endpoints"),
    ("PodMonitor", POD_MONITOR, "podMetricsEndpoints"),
])
def test_a_scrape_timeout_is_rendered_only_when_set(kind: str, api_version: str, endpoints: str):
    spec = load_spec("llama3", MODELS_DIR, [f"monitoring.scrape={kind.lower()}"])
    values = chart_values(spec)
    (endpoint,) = of_kind(render(spec, api_version, values=values), kind)[0]["spec"][endpoints]
    assert "scrapeTimeout" not in endpoint, "empty: Prometheus' default, capped at the interval"
    values["monitoring"]["scrapeTimeout"] = "10s"
    (endpoint,) = of_kind(render(spec, api_version, values=values), kind)[0]["spec"][endpoints]
    assert endpoint["scrapeTimeout"] == "10s"


def test_monitor_labels_never_repeat_a_chart_label():
    spec = load_spec("llama3", MODELS_DIR, ['monitoring.labels={"app.kubernetes.io/part-of": "platform", '
                                            '"release": "kps"}'])
    (monitor,) = of_kind(render(spec, SERVICE_MONITOR), "ServiceMonitor")  # the strict loader refuses a repeat
    assert monitor["metadata"]["labels"]["app.kubernetes.io/part-of"] == "vllm-gate", "the chart's own label wins"
    assert monitor["metadata"]["labels"]["release"] == "kps"


def test_scrape_annotations_keep_other_pod_annotations():
    spec = load_spec("llama3", MODELS_DIR, ["monitoring.scrape=annotations", "service.port=8080"])
    values = chart_values(spec)
    values["podAnnotations"] = {"team": "inference", "prometheus.io/scrape": "false"}
    annotations = pod_template(render(spec, values=values))["metadata"]["annotations"]
    assert annotations == {"team": "inference", "prometheus.io/scrape": "true", "prometheus.io/port": "8080",
                           "prometheus.io/path": "/metrics"}


def test_the_spec_reaches_the_chart_values():
    spec = load_spec("llama3", MODELS_DIR, ["monitoring.scrape=podmonitor", "monitoring.namespace=observability",
                                            'monitoring.prometheus_pod_labels={"app": "prom"}', EXTRA_LABELS,
                                            "monitoring.interval=1m30s"])
    values = chart_values(spec)
    assert values["monitoring"] == {"scrape": "podmonitor", "interval": "1m30s", "scrapeTimeout": "",
                                    "labels": {"release": "kube-prometheus-stack"}}
    assert (values["networkPolicy"]["monitoringNamespace"], values["networkPolicy"]["prometheusPodLabels"]) == (
        "observability", {"app": "prom"})
    (policy,) = of_kind(render(spec), "NetworkPolicy")
    assert policy["spec"]["ingress"][-1]["from"] == [{
        "podSelector": {"matchLabels": {"app": "prom"}},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]


@pytest.mark.parametrize(("path", "value", "message"), [
    (("monitoring", "scrape"), "servicemonitors", "at '/monitoring/scrape'"),
    (("monitoring", "interval"), "0s", "at '/monitoring/interval'"),
    (("monitoring", "interval"), "30", "at '/monitoring/interval'"),
    (("monitoring", "interval"), "", "at '/monitoring/interval'"),
    (("monitoring", "scrapeTimeout"), "0s", "at '/monitoring/scrapeTimeout'"),
    (("monitoring", "enabled"), True, "additional properties 'enabled' not allowed"),
    (("serviceMonitor", "enabled"), True, "additional properties 'serviceMonitor' not allowed"),
    (("networkPolicy", "prometheusPodLabels"), {"app": 1}, "at '/networkPolicy/prometheusPodLabels/app'"),
])
def test_schema_refuses_bad_monitoring_values(path: tuple[str, str], value: Any, message: str):
    values = chart_values(load_spec("llama3", MODELS_DIR))
    values.setdefault(path[0], {})[path[1]] = value
    assert message in template_error(values)


@pytest.mark.parametrize("labels", [{}, None], ids=["empty", "null"])
def test_no_prometheus_labels_mean_the_default_ones_never_the_whole_namespace(labels: dict[str, str] | None):
    values = chart_values(load_spec("llama3", MODELS_DIR))
    values["networkPolicy"]["prometheusPodLabels"] = labels
    (policy,) = of_kind(render(load_spec("llama3", MODELS_DIR), values=values), "NetworkPolicy")
    assert policy["spec"]["ingress"][-1]["from"][0]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "prometheus"}}


def notes(*sets: str) -> str:
    """NOTES.txt as helm install prints it on a cluster without the operator's kinds."""
    return dry_run_notes(chart_values(load_spec("llama3", MODELS_DIR, list(sets))))


@pytest.mark.parametrize(("scrape", "reason"), [
    ("servicemonitor", " (monitoring.scrape is servicemonitor, but the cluster has no monitoring.coreos.com/v1 "
                       "ServiceMonitor)"),
    ("podmonitor", " (monitoring.scrape is podmonitor, but the cluster has no monitoring.coreos.com/v1 PodMonitor)"),
    ("annotations", ""),
])
def test_notes_say_the_annotations_were_rendered_and_why(scrape: str, reason: str):
    text = notes(f"monitoring.scrape={scrape}", 'monitoring.prometheus_pod_labels={"app": "prom", "tier": "obs"}')
    assert ("Prometheus scrapes /metrics (port http) through the pod annotations prometheus.io/scrape, "
            f"prometheus.io/port and prometheus.io/path{reason}.\n") in text
    assert "Only pods labelled app=prom,tier=obs in namespace monitoring may scrape it." in text

