"""The nvidia-smi fallback's sampling through the load test, with a FAKE GPU: no GPU (and no container to exec
into) exists here, so `now()` returns rows of the real H200 capture instead of running nvidia-smi in a pod."""

from __future__ import annotations

import time

import pytest

from tests.monitoring.captures import H200
from vllm_gate.base.errors import GateError
from vllm_gate.monitoring import gpu_source
from vllm_gate.monitoring.gpu import GpuReading, TelemetryError
from vllm_gate.monitoring.nvidia_smi import parse_query

LOAD = parse_query((H200 / "query_load_nounits.csv").read_text())


class FakeGpuExec(gpu_source.ExecSource):
    """A fake GPU: answers what nvidia-smi printed on the real H200, or fails like a refused exec."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(api=None, namespace="ns", container="vllm")  # type: ignore[arg-type]
        self.fail = fail
        self.calls = 0

    def now(self, pod: str) -> list[GpuReading]:
        self.calls += 1
        if self.fail:
            raise TelemetryError(f"nvidia-smi in pod ns/{pod} (container vllm): exec refused: HTTP 403 Forbidden")
        return [LOAD[self.calls % len(LOAD)]]


@pytest.fixture(autouse=True)
def _fast_sampling(monkeypatch):
    monkeypatch.setattr(gpu_source, "EXEC_SAMPLE_EVERY_S", 0.05)


def test_samples_are_taken_through_the_load_and_only_the_loads_window_counts():
    source = FakeGpuExec()
    source.begin(["p"])
    time.sleep(0.3)
    start = time.time()
    time.sleep(0.3)
    end = time.time()
    time.sleep(0.3)
    during = source.during("p", start, end)
    calls = source.calls
    time.sleep(0.2)
    assert source.calls == calls, "the sampler kept running after during()"
    assert 2 <= len(during) < calls  # samples before start and after end are left out
    assert {r.uuid for r in during} == {LOAD[0].uuid}


def test_a_source_whose_exec_always_fails_says_why():
    source = FakeGpuExec(fail=True)
    source.begin(["p"])
    time.sleep(0.2)
    with pytest.raises(GateError, match=r"no nvidia-smi reading of pod p during the load test: nvidia-smi in pod "
                                        r"ns/p \(container vllm\): exec refused: HTTP 403 Forbidden"):
        source.during("p", 0, time.time())
