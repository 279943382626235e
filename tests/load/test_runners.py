"""Both load runners behind the one ``LoadRunner`` interface the plugin calls: ``describe()`` and ``run()``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import require
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.load.incluster import InClusterLoad, InClusterRun
from vllm_gate.load.local import LocalLoad
from vllm_gate.load.samples import LoadRun, LoadRunner, RequestSample
from vllm_gate.spec import Load, load_spec


def test_the_local_runner_returns_the_raw_samples_of_its_locust_process(tmp_path: Path):
    require("vllm-sim-standin")
    load = Load.model_validate({"profile": {"kind": "users", "users": 2, "duration_s": 3}, "prompt_tokens": 16,
                                "output_tokens": 4})
    with SimServer(model="m", ttft_ms=20, itl_ms=2) as sim:
        runner: LoadRunner = LocalLoad(sim.url, "m", load, tmp_path, lambda _m: None, where="load: from here")
        run = runner.run()
    assert runner.describe() == "load: from here"
    assert run.samples
    assert all(sample.ok and sample.output_tokens == 4 for sample in run.samples)


def test_the_incluster_runner_runs_and_returns_what_its_pods_collected(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    # The pods themselves are tested on the real node (tests/load/test_incluster_load.py); here only the interface:
    # run() is a method (not shadowed by the runner's state) and hands back the collected samples.
    spec = load_spec("llama3", MODELS_DIR)
    runner: LoadRunner = InClusterLoad(client.ApiClient(), spec, spec.in_cluster_url, image="locustio/locust:test",
                                       workdir=tmp_path, progress=lambda _m: None, kubeconfig=None, context=None)
    assert isinstance(runner, InClusterLoad)
    sample = RequestSample(0.0, 0.1, [0.01], 0.2, 16, 2, None)
    collected = InClusterRun(LoadRun([sample], 1.0, math.nan, tmp_path / "locust.log"), runner.plan)
    monkeypatch.setattr(runner, "start_and_collect", lambda: collected)
    assert runner.run().samples == [sample]
    assert runner.describe() == runner.plan.describe()
    assert "ias-production" in runner.describe()
