"""Checks that once could not fail, each failing on a planted bad server and naming the cause.

The bad server is tests/checks/planted.py: a proxy in front of a real simulator that forwards everything but one
fault (a fake only in that the fault is planted on purpose). The same proxy without a fault passes every
check, so each test can tell the fault from the check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.checks.planted import PLANTED_ROOT, PLANTED_VERSION, Fault, PlantedServer, plant_in_stream
from tests.conftest import require
from tests.standin import UNPINNED_CANARY, VLLM_VERSION
from vllm_gate.base.errors import EndpointError
from vllm_gate.base.tools import PROJECT_ROOT
from vllm_gate.checks import inference, metrics
from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.load.samples import RequestSample

MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"  # the served name of models/llama3.yaml
SUITES = str(PROJECT_ROOT / "suites")
SHORT_LOAD = ["--set", "load.profile.duration_s=3", "--set", "load.profile.users=2", *UNPINNED_CANARY]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    require("vllm-sim-standin")
    with SimServer(model=MODEL, max_model_len=8192, ttft_ms=5, itl_ms=1, vllm_version=VLLM_VERSION) as server:
        inference.wait_healthy(server.url, MODEL, 10)
        yield server


@pytest.fixture
def planted(sim: SimServer) -> Iterator[Callable[[Fault], str]]:
    """Start a planted server with the given fault in front of the simulator; return its URL."""
    started: list[PlantedServer] = []

    def plant(fault: Fault) -> str:
        started.append(PlantedServer(sim.url, fault).start())
        return started[-1].url

    yield plant
    for server in started:
        server.stop()


def _streamed_usage(url: str, n: int) -> metrics.Counters:
    """Send ``n`` streamed chats; count them and their usage as a load client would."""
    done = [inference.chat_stream(url, MODEL, max_tokens=8) for _ in range(n)]
    return metrics.Counters(n, sum(d.prompt_tokens for d in done), sum(d.completion_tokens for d in done))


# --- the library checks, straight against the planted server --------------------------------------------

def test_unplanted_proxy_passes_every_former_cant_fail_check(planted):
    url = planted(Fault.NONE)
    streamed = inference.chat_stream(url, MODEL, max_tokens=8)
    assert streamed.events[-1] == "[DONE]"
    assert streamed.content_chunks >= 1
    assert 0 < streamed.completion_tokens <= 8
    assert metrics.family_problems(metrics.scrape(url)) == []
    before = metrics.counters(metrics.scrape(url), MODEL)
    client = _streamed_usage(url, 3)
    after = metrics.counters(metrics.scrape(url), MODEL)
    assert metrics.counter_problems(before, after, client) == []


def test_type_only_metrics_fail_the_families_check_naming_each_family(planted, sim):
    inference.chat(sim.url, MODEL, max_tokens=4)  # every family carries samples upstream
    problems = metrics.family_problems(metrics.scrape(planted(Fault.METRICS_TYPE_ONLY)))
    assert "vllm:num_requests_running: declared but carries no samples" in problems
    assert "vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc: declared but carries no samples" in problems
    assert len(problems) == len(metrics.REQUIRED_FAMILIES)


def test_absent_family_is_named_absent():
    scraped = metrics.parse("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n")
    problems = metrics.family_problems(scraped)
    assert "vllm:num_requests_running: absent" not in problems
    assert "vllm:num_requests_waiting: absent" in problems


def test_metrics_404_fails_the_scrape(planted):
    url = planted(Fault.METRICS_404)
    with pytest.raises(EndpointError, match=r"GET http://127\.0\.0\.1:\d+/metrics answered 404"):
        metrics.scrape(url)


@pytest.mark.parametrize(("fault", "cause"), [
    (Fault.STREAM_ROLE_USAGE_ONLY,
     "stream had a role chunk and a usage chunk but no content chunk (role, usage, [DONE])"),
    (Fault.STREAM_NO_DONE, "stream ended without data: [DONE] (role, content x"),
    (Fault.STREAM_USAGE_FIRST, "stream sent its usage chunk before the last content chunk (role, usage, content x"),
], ids=["role-usage-only", "no-done", "usage-first"])
def test_bad_stream_fails_the_streamed_check_naming_the_cause(planted, fault, cause):
    url = planted(fault)
    with pytest.raises(EndpointError) as info:
        inference.chat_stream(url, MODEL, max_tokens=8)
    assert cause in info.value.summary


def test_failing_chat_is_named_with_its_status_and_message(planted):
    url = planted(Fault.CHAT_500)
    with pytest.raises(EndpointError, match=r"HTTP 500: planted fault: every chat completion fails"):
        inference.chat_stream(url, MODEL)


def test_all_requests_failing_fails_the_counters_check(planted):
    url = planted(Fault.CHAT_500)
    before = metrics.counters(metrics.scrape(url), MODEL)
    for _ in range(3):
        with pytest.raises(EndpointError):
            inference.chat_stream(url, MODEL)
    after = metrics.counters(metrics.scrape(url), MODEL)
    problems = metrics.counter_problems(before, after, metrics.Counters(0, 0, 0))
    assert problems[0] == "the load client saw no successful request: nothing to compare"
    assert any(p.startswith("vllm:request_success did not grow (stayed at ") for p in problems)


def test_traffic_the_client_did_not_send_is_named_per_counter(planted, sim):
    url = planted(Fault.NONE)
    before = metrics.counters(metrics.scrape(url), MODEL)
    client = _streamed_usage(url, 2)
    _streamed_usage(sim.url, 1)  # traffic the client does not know about
    after = metrics.counters(metrics.scrape(url), MODEL)
    problems = metrics.counter_problems(before, after, client)
    assert "vllm:request_success grew by 3, the load client measured 2 successful requests" in problems
    assert any(p.startswith("vllm:prompt_tokens grew by ") for p in problems)
    assert any(p.startswith("vllm:generation_tokens grew by ") for p in problems)


def test_counter_that_went_down_is_named():
    problems = metrics.counter_problems(metrics.Counters(5, 50, 50), metrics.Counters(1, 10, 10),
                                        metrics.Counters(1, 10, 10))
    assert "vllm:request_success went down from 5 to 1 (did the server restart?)" in problems


def test_client_counters_count_only_successes():
    samples = [RequestSample(0, 0.1, [], 0.2, 10, 5, None), RequestSample(0, None, [], 0.1, None, None, "HTTP 500"),
               RequestSample(0, 0.1, [], 0.2, 12, 7, None)]
    assert metrics.client_counters(samples) == metrics.Counters(2, 22, 12)


def test_planted_stream_rewrites_are_what_they_say():
    events = [b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}',
              b'data: {"choices":[{"delta":{"content":"hi"}}]}', b'data: {"choices":[],"usage":{"prompt_tokens":1}}',
              b"data: [DONE]"]
    assert plant_in_stream(Fault.STREAM_USAGE_FIRST, events) == [events[0], events[2], events[1], events[3]]
    assert plant_in_stream(Fault.STREAM_NO_DONE, events) == events[:3]
    assert plant_in_stream(Fault.STREAM_ROLE_USAGE_ONLY, events) == [events[0], events[2], events[3]]


# --- the gate's suites, in endpoint mode, against the planted server ----------------------------------------

@pytest.fixture
def gate(pytester: pytest.Pytester, tmp_path):
    def run(url: str, *args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            SUITES, "-p", "no:cacheprovider", "--rootdir", str(PROJECT_ROOT), "--gate-report",
            str(tmp_path / "report.html"), "--model", "llama3", "--endpoint-url", url, *args, timeout=300)
    return run


def test_unplanted_proxy_passes_the_former_cant_fail_checks_in_the_suites(gate, planted):
    result = gate(planted(Fault.NONE), *SHORT_LOAD, "-k", "families or streamed or counters")
    outcomes = {k: v for k, v in result.parseoutcomes().items() if k in ("passed", "failed", "errors")}
    assert outcomes == {"passed": 3}, result.stdout.str()


HEALTH_STREAM = "test_streamed_chat_completion"
FAMILIES = "test_required_vllm_metric_families_are_exposed"
COUNTERS = "test_server_counters_grew_by_what_the_client_measured"
SERVER = "test_server_is_the_specs_vllm_and_model"


# (fault, -k expression, the check it fails, its failure line); fnmatch reads [DONE] as a character class.
SUITE_FAULTS = [
    (Fault.METRICS_TYPE_ONLY, "families", FAMILIES,
     "*/metrics at http://127.0.0.1:*: vllm:num_requests_running: declared but carries no samples; *"),
    (Fault.STREAM_ROLE_USAGE_ONLY, "streamed", HEALTH_STREAM,
     "*stream had a role chunk and a usage chunk but no content chunk (role, usage, ?DONE?)*"),
    (Fault.STREAM_NO_DONE, "streamed", HEALTH_STREAM, "*stream ended without data: ?DONE? (*"),
    (Fault.STREAM_USAGE_FIRST, "streamed", HEALTH_STREAM,
     "*stream sent its usage chunk before the last content chunk (role, usage, content*"),
    (Fault.CHAT_500, "counters", COUNTERS,
     "*the load client saw no successful request: nothing to compare; *"
     "every one of its * requests failed, the first with: HTTP 500*planted fault: every chat completion fails*"),
    (Fault.METRICS_404, "counters", COUNTERS,
     "*/metrics could not be read around the load test: GET http://127.0.0.1:*/metrics answered 404*"),
    (Fault.VERSION_OTHER, "server_is", SERVER,
     f"*the server is vLLM {PLANTED_VERSION} (/version), the image vllm/vllm-openai:v0.11.0 holds 0.11.0*"),
    (Fault.VERSION_404, "server_is", SERVER,
     "*the server answers no /version: not vLLM's OpenAI server (vllm/vllm-openai:v0.11.0 holds vLLM 0.11.0)*"),
    (Fault.ROOT_OTHER, "server_is", SERVER,
     f"*the server loaded {PLANTED_ROOT} (/v1/models root), the spec's model is meta-llama/Meta-Llama-3-8B-Instruct*"),
]


@pytest.mark.parametrize(("fault", "check", "test_name", "cause"), SUITE_FAULTS,
                         ids=[case[0].value for case in SUITE_FAULTS])
def test_planted_fault_fails_its_suite_check_naming_the_cause(gate, planted, fault, check, test_name, cause):
    result = gate(planted(fault), *SHORT_LOAD, "-k", check)
    assert result.parseoutcomes().get("failed") == 1, result.stdout.str()
    # The check's own failure section, then its cause (not the verdict's wording).
    result.stdout.fnmatch_lines([f"*_ {test_name} _*", cause])


def test_a_server_without_metrics_still_gets_its_load_test_and_only_the_metrics_checks_fail(gate, planted):
    result = gate(planted(Fault.METRICS_404), *SHORT_LOAD)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*ENDPOINT CHECKS FAILED — not a certification*", "*suite load: passed*",
                                 "*SLO PASS ttft p50:*", "*SLO PASS goodput:*"])
    failed = [line for line in result.outlines if line.startswith("  FAILED ")]
    assert len(failed) == 2, result.stdout.str()
    assert all(line.startswith("  FAILED metrics/") for line in failed), failed
    assert all("/metrics answered 404" in line for line in failed), failed
