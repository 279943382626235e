"""The monitoring and gpu checks against a real Prometheus (Debian's) scraping the real simulator and the
recorded-telemetry dcgm-exporter stand-in: PromQL answers, and planted faults each named."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.monitoring.captures import H200
from vllm_gate.base.ports import free_port
from vllm_gate.checks import inference
from vllm_gate.checks.metrics import Counters, client_counters
from vllm_gate.cluster.dataplane.prometheus import DCGM_JOB, MODEL_JOB, LocalPrometheus
from vllm_gate.cluster.dataplane.recorded_dcgm import RecordedDcgmExporter
from vllm_gate.cluster.dataplane.served_pods import ServedPod
from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.load.local import run_load
from vllm_gate.monitoring import checks, dcgm
from vllm_gate.monitoring.gpu_source import DcgmSource
from vllm_gate.monitoring.load_watch import LoadWatch, ModelPods
from vllm_gate.monitoring.prometheus import Prometheus, wait_for_targets
from vllm_gate.monitoring.recorded import load_recorded
from vllm_gate.spec import Load

NS, POD, MODEL = "ias-production", "llama3-vllm-0", "llama3"
DISCOVERY_S = 30  # Prometheus hands discovered targets to its scrapers every 5 s


@dataclasses.dataclass
class Stack:
    prometheus: LocalPrometheus
    prom: Prometheus
    sim: SimServer
    pod: ServedPod
    pods: ModelPods

    def serve_dcgm(self, exporter: RecordedDcgmExporter, *, clash: bool = True) -> None:
        """Scrape the exporter as its own pod (its pod labels then arrive as exported_*), or without labels."""
        labels = {"namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-x"} if clash else {}
        self.prometheus.set_targets(DCGM_JOB, [(exporter.address, labels)])


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    require("vllm-sim-standin")
    require("prometheus")
    with SimServer(model=MODEL, ttft_ms=20, itl_ms=5) as sim, LocalPrometheus(tmp_path) as prometheus:
        pod = ServedPod(NS, POD, "vllm", "gpu-0", 1, f"127.0.0.1:{sim.port}")
        prometheus.set_targets(MODEL_JOB, [(f"127.0.0.1:{sim.port}", {"namespace": NS, "pod": POD,
                                                                      "container": "vllm"})])
        stack = Stack(prometheus, Prometheus(prometheus.url), sim, pod, ModelPods(NS, (POD,), "vllm", MODEL))
        assert wait_for_targets(stack.prom, NS, [POD], DISCOVERY_S) == []
        yield stack


@pytest.fixture
def exporter(stack: Stack) -> Iterator[RecordedDcgmExporter]:
    exporter = RecordedDcgmExporter(lambda: [stack.pod])
    exporter.start()
    stack.serve_dcgm(exporter)
    yield exporter
    exporter.stop()


def _load_read_from(stack: Stack, tmp_path: Path, exporter: RecordedDcgmExporter):
    """A load test whose GPU readings come from ``exporter`` (a planted fault) through Prometheus."""
    exporter.start()
    try:
        stack.serve_dcgm(exporter)
        assert dcgm.wait_for_series(stack.prom, NS, POD, DISCOVERY_S)
        return _load(stack, tmp_path, DcgmSource(stack.prom, NS, 1, recorded=True))
    finally:
        exporter.stop()


def _load(stack: Stack, tmp_path: Path, source: DcgmSource | None = None):
    load = Load.model_validate({"profile": {"kind": "users", "users": 3, "duration_s": 5},
                                "prompt_tokens": 16, "output_tokens": 8})
    watch = LoadWatch(stack.prom, source, stack.pods, lambda _m: None)
    watch.begin()
    run = run_load(stack.sim.url, MODEL, load, tmp_path / "load", lambda _m: None)
    return run, watch.end()


def test_the_simulator_is_a_target_that_is_up_and_its_series_carry_pod_and_model_labels(stack: Stack):
    inference.chat(stack.sim.url, MODEL, max_tokens=4)  # simulators create labelled series on first use
    deadline = time.monotonic() + DISCOVERY_S
    while (problems := checks.vllm_series(stack.prom, stack.pods)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert problems == []
    assert checks.scrape_targets(stack.prom, stack.pods) == []
    up = stack.prom.query(f'up{{namespace="{NS}",pod="{POD}"}}')
    assert [float(r["value"][1]) for r in up] == [1.0]


def test_a_pod_that_is_not_a_scrape_target_is_named(stack: Stack):
    problems = checks.scrape_targets(stack.prom, ModelPods(NS, (POD, "llama3-vllm-unscraped"), "vllm", MODEL))
    assert problems == [f'pod {NS}/llama3-vllm-unscraped is not a scrape target (no active target labelled '
                        f'namespace="{NS}", pod="llama3-vllm-unscraped")']


def test_a_target_whose_scrapes_fail_is_named_with_prometheus_error(stack: Stack):
    stack.sim.stop()  # the pod's /metrics stops answering
    deadline = time.monotonic() + DISCOVERY_S
    while not (problems := checks.scrape_targets(stack.prom, stack.pods)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(problems) == 1
    assert f"of pod {NS}/{POD} is down: " in problems[0]
    assert "connection refused" in problems[0]


def test_series_under_another_model_name_are_named(stack: Stack):
    inference.chat(stack.sim.url, MODEL, max_tokens=4)
    time.sleep(3)
    problems = checks.vllm_series(stack.prom, dataclasses.replace(stack.pods, model="mistral-7b"))
    assert len(problems) == 1
    assert 'with model_name="mistral-7b"; series carry model_name llama3' in problems[0]


def test_prometheus_rates_agree_with_the_load_client_and_a_planted_difference_fails(stack: Stack, tmp_path: Path):
    run, watched = _load(stack, tmp_path)
    client = client_counters(run.samples)
    assert client.requests > 0
    assert watched.counters is not None, watched.counters_error
    assert checks.rates(watched, client, run.wall_s) == []
    # What Prometheus saw grew exactly as the client counted: its window brackets the load test.
    assert watched.counters.after.requests - watched.counters.before.requests == client.requests
    doubled = Counters(client.requests * 2, client.prompt_tokens, client.generation_tokens)
    problems = checks.rates(watched, doubled, run.wall_s)
    assert len(problems) == 1
    assert problems[0].startswith("Prometheus: ")
    assert "successful requests/s" in problems[0]


def test_recorded_gpu_series_busy_under_load_without_xid(stack: Stack, exporter: RecordedDcgmExporter,
                                                         tmp_path: Path):
    assert dcgm.wait_for_series(stack.prom, NS, POD, DISCOVERY_S)
    source = DcgmSource(stack.prom, NS, 1, recorded=True)
    _run, watched = _load(stack, tmp_path, source)
    readings = watched.gpu_under_load[POD]
    assert readings
    assert {r.name for r in readings} == {"NVIDIA H100 80GB HBM3"}
    assert checks.gpu_busy(watched, stack.pods) == []
    assert checks.gpu_xid(watched, stack.pods) == []
    # Read through the exported_* labels: the exporter's own pod label was kept by Prometheus as "pod".
    series = stack.prom.query(dcgm.pod_series(dcgm.UTIL, NS, POD))
    assert {s["metric"]["exported_pod"] for s in series} == {POD}


def test_zero_utilization_under_load_fails(stack: Stack, tmp_path: Path):
    idle = RecordedDcgmExporter(lambda: [stack.pod], busy=lambda _pod: False)  # planted: a GPU doing nothing
    _run, watched = _load_read_from(stack, tmp_path, idle)
    problems = checks.gpu_busy(watched, stack.pods)
    assert problems
    assert all(p.startswith(f"pod {NS}/{POD}: ") for p in problems), problems
    assert all("0 %" in p for p in problems), problems


def test_a_non_zero_xid_during_the_run_fails_naming_it(stack: Stack, tmp_path: Path):
    card = load_recorded()
    faulty = dataclasses.replace(card, load=tuple(dataclasses.replace(r, xid=79.0) for r in card.load))
    exporter = RecordedDcgmExporter(lambda: [stack.pod], recorded=faulty)  # planted: XID 79 under load
    _run, watched = _load_read_from(stack, tmp_path, exporter)
    problems = checks.gpu_xid(watched, stack.pods)
    assert len(problems) == 1
    assert problems[0].startswith(f"pod {NS}/{POD}: ")
    assert "79" in problems[0]


@pytest.mark.parametrize(("capture", "fraction", "word"), [("h100", 0.95, "below"), ("h200", 0.8, "above")])
def test_gpu_memory_far_from_the_preallocation_fails_through_prometheus(stack: Stack, capture: str, fraction: float,
                                                                       word: str):
    card = load_recorded() if capture == "h100" else load_recorded(H200)
    # Busy: the captures' load rows hold the memory (H100: 20213 MiB of 81080; H200: 128265 of 143157).
    exporter = RecordedDcgmExporter(lambda: [stack.pod], recorded=card, busy=lambda _pod: True)
    exporter.start()
    try:
        stack.serve_dcgm(exporter)
        assert dcgm.wait_for_series(stack.prom, NS, POD, DISCOVERY_S)
        deadline = time.monotonic() + DISCOVERY_S
        source = DcgmSource(stack.prom, NS, 1, recorded=False)
        while ({r.name for r in source.now(POD)} != {card.idle.name}) and time.monotonic() < deadline:
            time.sleep(0.5)  # until the scrape of this exporter replaced the previous test's
        problems = checks.gpu_memory(source, stack.pods, fraction)
        assert checks.gpu_memory(source, stack.pods, card.load[0].mem_used_mib / card.load[0].capacity_mib) == []
    finally:
        exporter.stop()
    assert len(problems) == 1
    assert f"far {word}" in problems[0]


def test_two_gpus_under_kept_pod_labels_are_counted_and_a_wrong_count_or_type_is_named(stack: Stack):
    two = dataclasses.replace(stack.pod, gpus=2)
    exporter = RecordedDcgmExporter(lambda: [two], busy=lambda _pod: True)
    exporter.start()
    try:
        stack.serve_dcgm(exporter, clash=False)  # nothing to clash with: the series keep pod and namespace
        source = DcgmSource(stack.prom, NS, 1, recorded=False)
        deadline = time.monotonic() + DISCOVERY_S
        while len(source.now(POD)) != 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        series = stack.prom.query(dcgm.pod_series(dcgm.FB_USED, NS, POD))
        assert {(s["metric"].get("pod"), "exported_pod" in s["metric"]) for s in series} == {(POD, False)}
        assert checks.gpu_identity(source, stack.pods, 2, "h100") == []
        problems = checks.gpu_identity(source, stack.pods, 1, "rtx-6000-ada")
    finally:
        exporter.stop()
    assert len(problems) == 3  # one GPU too many, and each of the two is the wrong type
    assert problems[0].startswith(f"pod {NS}/{POD}: the pod sees 2 distinct GPU(s), it requested 1")
    assert all("the spec's gpu_type is 'rtx-6000-ada'" in p for p in problems[1:])


def test_a_prometheus_that_is_not_there_is_said_once_quickly_without_its_password(stack: Stack):
    assert stack.prom.unreachable() is None  # a real one answers
    port = free_port()
    said = Prometheus(f"http://gate:s3cret@127.0.0.1:{port}").unreachable()
    assert said == f"Prometheus http://***@127.0.0.1:{port} is unreachable (ConnectionError within 5 s)"
