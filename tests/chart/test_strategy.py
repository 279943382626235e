"""The Deployment's strategy comes from the value the preflight decided, and the schema keeps it sound."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.chart.test_render import K8S_VERSION, only
from tests.conftest import require
from vllm_gate.base.errors import RenderError
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.deploy.render import render_manifests
from vllm_gate.deploy.values import chart_values
from vllm_gate.spec import load_spec


@pytest.fixture(autouse=True)
def _helm():
    require("helm")


@pytest.mark.parametrize(("strategy", "expected"), [
    ("Recreate", {"type": "Recreate"}),
    ("RollingUpdate", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
])
def test_deployment_strategy_is_the_decided_one(strategy, expected):
    spec = load_spec("llama3", MODELS_DIR)
    docs = render_manifests(spec, chart_values(spec, strategy))
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["strategy"] == expected
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_default_strategy_is_recreate():
    spec = load_spec("llama3", MODELS_DIR)
    values = chart_values(spec)
    del values["strategy"]
    assert only(render_manifests(spec, values), "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("strategy", [
    {"type": "Recreate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},  # the API server refuses it
    {"type": "RollingUpdate"},  # Kubernetes' default 25%/25% would take the only pod down
    {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "one", "maxUnavailable": 0}},
    {"type": "BlueGreen"},
])
def test_schema_refuses_an_unsound_strategy(strategy):
    spec = load_spec("llama3", MODELS_DIR)
    values = chart_values(spec)
    values["strategy"] = strategy
    with pytest.raises(RenderError) as info:
        render_manifests(spec, values)
    assert "/strategy" in str(info.value)
