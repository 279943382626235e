"""The report's sign-off section: verdict first, the header a release manager signs, the SLO table, every plot."""

from __future__ import annotations

import re

from tests.report.test_summary import a_run
from vllm_gate.load import RequestSample
from vllm_gate.report.html import sign_off

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
    assert all(n > 0 for n in points), points
    assert "<script" not in page
    assert not [url for url in re.findall(r"""https?://[^\s"'<]+""", page) if "w3.org/2000/svg" not in url]
    assert "recorded telemetry" in page  # the skipped GPU check and its reason
    assert "5 answers: baseline recorded" in page


def test_a_run_without_a_load_test_says_so_and_draws_nothing():
    page = sign_off(a_run(), [])
    assert "<svg" not in page
    assert "SLOs" in page  # a_run has SLO results of its own
