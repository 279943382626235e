"""The report's sign-off section: verdict first, the header a release manager signs, the SLO table, every plot."""

from __future__ import annotations

import re

from tests.report.test_summary import a_run, two_runs
from vllm_gate.checks.scaling import ScalePoint, Scaling
from vllm_gate.load.samples import RequestSample
from vllm_gate.report.html import environment, overview, sign_off

SAMPLES = [RequestSample(1000.0 + i * 0.25, 0.06 + (i % 5) * 0.005, [0.02, 0.025, 0.03], 0.2 + (i % 3) * 0.01, 16,
                         4, None) for i in range(40)] + [RequestSample(1005.0, None, [], 0.05, None, None, "HTTP 500")]


def test_the_sign_off_puts_the_verdict_first_then_header_slo_table_and_every_plot():
    page = sign_off(a_run(), SAMPLES)
    headline = page.index("REHEARSAL PARTIAL")
    assert headline < page.index("upstream id") < page.index('class="vllm-gate-slo"') < page.index("<svg")
    for field in ("model", "upstream id", "image", "chart", "Helm release", "cluster", "GPU type", "gate",
                  "run by", "when"):
        assert f"<th>{field}</th>" in page
    assert "meta-llama/Meta-Llama-3-8B-Instruct" in page
    assert "vllm-0.1.0" in page
    titles = re.findall(r"<svg[^>]*>\s*<title>([^<]+)</title>", page)  # each plot's own title
    assert titles == ["TTFT distribution", "ITL distribution", "End-to-end latency distribution",
                      "Latency p50 over the run", "Requests/s over the run", "Output tokens/s over the run",
                      "Errors/s over the run"]
    points = [int(n) for n in re.findall(r'<svg[^>]*data-points="(\d+)"', page)]
    assert len(points) == 7
    # 41 requests in 10 s: 3 s bins hold 10 or more; each plot over the run says so under its time axis.
    assert re.findall(r'<text class="x-name"[^>]*>([^<]+)</text>', page) == [
        "seconds since start; p50 of the requests ending in each 3 s bin",
        *["seconds since start; per 3 s bin, as a rate per second"] * 3]
    assert all(n > 0 for n in points), points
    assert "<script" not in page
    assert not [url for url in re.findall(r"""https?://[^\s"'<]+""", page) if "w3.org/2000/svg" not in url]
    assert "recorded telemetry" in page  # the skipped GPU check and its reason
    assert "5 answers: baseline recorded" in page


def test_a_run_without_a_load_test_says_so_and_draws_nothing():
    page = sign_off(a_run(), [])
    assert "<svg" not in page
    assert "SLOs" in page  # a_run has SLO results of its own


def test_several_models_get_an_overview_of_verdicts_and_times_then_a_section_each():
    llama3, mistral = two_runs(42, 7)
    mistral.record("health/test_health_endpoint_answers_200", "failed", "HTTP 503")
    page = overview([llama3, mistral]) + sign_off(llama3, SAMPLES) + sign_off(mistral, [])
    rows = re.findall(r'<tr><th scope="row"><a href="#([^"]+)">([^<]+)</a></th><td class="(\w+)">([^<]+)</td>'
                      r"<td>[^<]+</td><td>(\d+) s</td></tr>", page)
    assert rows == [("vllm-gate-llama3", "llama3", "failed", llama3.settle().headline, "42"),
                    ("vllm-gate-mistral-7b", "mistral-7b", "failed", mistral.settle().headline, "7")]
    assert mistral.settle().headline.startswith("REHEARSAL FAILED")  # its own verdict, not llama3's partial one
    assert llama3.settle().headline.startswith("REHEARSAL PARTIAL")
    # Each link leads to that model's own section, headed by its name and verdict, in the order they ran.
    sections = re.findall(r'<div class="vllm-gate" id="([^"]+)"><h2>vllm-gate verdict and sign-off: ([^<]+)</h2>'
                          r'<div class="vllm-gate-signoff"><p class="verdict \w+">([^<]+)</p>', page)
    assert sections == [("vllm-gate-llama3", "llama3", llama3.settle().headline),
                        ("vllm-gate-mistral-7b", "mistral-7b", mistral.settle().headline)]
    assert "42 s</td>" in sign_off(llama3, [])  # the header's "when" says how long it took too


def test_the_environment_rows_are_escaped_and_their_mappings_listed():
    table = environment({"Python": "3.11.7", "Plugins": {"html": "4.2.0", "timeout": "2.4.0"},
                         "BUILD": "<script>x</script>"})
    assert "<tr><th>Plugins</th><td>html 4.2.0, timeout 2.4.0</td></tr>" in table
    assert "<script>" not in table
    assert "&lt;script&gt;x&lt;/script&gt;" in table


def test_an_autoscaling_test_draws_replicas_its_metric_and_latency_over_the_test():
    run = a_run()
    points = tuple(ScalePoint(1000.0 + t, desired, desired, serving, serving, waiting)
                   for t, desired, serving, waiting in ((0, 1, 1, 0), (4, 2, 1, 3), (8, 2, 2, 0.5), (12, 1, 1, 0)))
    run.scaling = Scaling("vllm_num_requests_waiting", 1, 1, 2, 6, 100, 60, 160, 1000.0, 1010.0, points, None,
                          samples=tuple(SAMPLES))
    page = sign_off(run, SAMPLES)
    section = page[page.index("<h3>Autoscaling</h3>"):]
    assert "autoscaling: 6 users; scaled out to 2 pods serving 8 s into the load, back to 1 2 s after it" in section
    assert "<li>no request started in the load&#x27;s last hold_s" in section  # its problems, listed
    titles = re.findall(r"<svg[^>]*>\s*<title>([^<]+)</title>", section)
    assert titles == ["Replicas over the autoscaling test", "vllm_num_requests_waiting per pod (target 1)",
                      "Latency p50 over the autoscaling test"]
    assert [int(n) for n in re.findall(r'<svg[^>]*data-points="(\d+)"', section)][:2] == [8, 4]
