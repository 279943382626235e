"""The sign-off report as a release manager opens it: headless Chromium, offline, every part there and drawn."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import require
from tests.report.chromium import Opened, endpoint, open_page, survivors
from tests.report.test_history_plots import EARLIER, add, read, this_run
from tests.report.test_html import SAMPLES
from tests.report.test_summary import SPEC, a_run
from tests.standin import UNPINNED_CANARY, VLLM_VERSION
from vllm_gate.base.tools import PROJECT_ROOT, REPORTS_DIR, find_tool
from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.gate import evidence
from vllm_gate.load.slo import slo_names
from vllm_gate.report.html import sign_off

SUITES = str(PROJECT_ROOT / "suites")
CHROMIUM_SCRATCH = "org.chromium.Chromium.*"  # what Chromium makes in the temporary directory
SHORT_LOAD = ["--set", "load.profile.duration_s=3", "--set", "load.profile.users=2", *UNPINNED_CANARY]
HEADER_FIELDS = ("model", "upstream id", "image", "chart", "Helm release", "cluster", "GPU type", "gate", "run by",
                 "when")
PLOTS = ("TTFT distribution", "ITL distribution", "End-to-end latency distribution", "Latency p50 over the run",
         "Requests/s over the run", "Output tokens/s over the run", "Errors/s over the run")
KEPT_SCREENSHOT = REPORTS_DIR / "browser-check.png"  # reports/ is git-ignored: kept for a person to look at
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_CONTRAST = 4.5  # WCAG AA for body text


@pytest.fixture
def chromium() -> str:
    require("chromium")  # scripts/setup.sh installs it; like every tool, a missing one fails, never skips
    return str(find_tool("chromium"))


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (a["left"] < b["left"] + b["width"] and b["left"] < a["left"] + a["width"]
            and a["top"] < b["top"] + b["height"] and b["top"] < a["top"] + a["height"])


def contrast(colour: str) -> float:
    """WCAG contrast ratio of a CSS ``rgb(...)`` colour on white."""
    def linear(channel: str) -> float:
        c = int(channel) / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in re.findall(r"\d+", colour)[:3])
    return 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05)


def what_is_wrong(facts: dict[str, Any], headline: str, slos: list[str], history: Sequence[str] = (),
                  capacity: Sequence[str] = ()) -> list[str]:
    """Each way the page, as the browser laid it out, fails the sign-off a release manager reads; [] when none.

    ``history``: the titles of the plots of SLOs over earlier runs expected after the load test's own (and after
    the capacity search's, ``capacity``).
    """
    problems = []
    verdict, header, slo, plots = facts["verdict"], facts["header"], facts["slo"], facts["plots"]
    if verdict is None:
        problems.append("no verdict headline")
    elif verdict["text"] != headline:
        problems.append(f"headline {verdict['text']!r}, the run decided {headline!r}")
    if header is None:
        problems.append("no header table")
    elif missing := [field for field in HEADER_FIELDS if not header["fields"].get(field)]:
        problems.append(f"header fields missing or empty: {', '.join(missing)}")
    problems += [f"text too faint to read on white: {text!r} in {colour} (contrast {contrast(colour):.1f}:1, "
                 f"needs {MIN_CONTRAST}:1)" for colour, text in facts["colours"].items()
                 if contrast(colour) < MIN_CONTRAST]
    if slo is None:
        problems.append("no SLO table")
    else:
        if (names := [row[0] for row in slo["rows"]]) != slos:
            problems.append(f"SLO table rows {names}, not one per SLO {slos}")
        problems += [f"SLO row {row[0]} has an empty cell: {row}" for row in slo["rows"] if not all(row)]
    expected = [*PLOTS, *capacity, *history]
    if (titles := [plot["title"] for plot in plots]) != expected or facts["svgs"] != len(expected):
        problems.append(f"{facts['svgs']} <svg> on the page, plots {titles}; expected {expected}")
    for plot in plots:
        name, box = plot["title"], plot["box"]
        if plot["points"] <= 0 or plot["marks"] == 0 or box["width"] == 0 or box["height"] == 0:
            problems.append(f"{name}: empty ({plot['points']} points, {plot['marks']} marks, "
                            f"{box['width']:g}x{box['height']:g} px)")
        if plot["cut"]:
            problems.append(f"{name}: labels cut off at its edge: {plot['cut']}")
        if plot["overlapping"]:
            problems.append(f"{name}: labels drawn over one another: {plot['overlapping']}")
        if name in history and (plot["limits"] != 1 or not plot["dates"]):
            problems.append(f"{name}: {plot['limits']} limit lines, dates {plot['dates']}")
    problems += [f"plots {a['title']!r} and {b['title']!r} overlap" for a, b in itertools.combinations(plots, 2)
                 if _overlap(a["box"], b["box"])]
    if verdict and header and slo and plots:
        tops = {"verdict": verdict["box"]["top"], "header": header["box"]["top"], "SLO table": slo["box"]["top"],
                "first plot": plots[0]["box"]["top"]}
        if list(tops.values()) != sorted(tops.values()):
            problems.append(f"not verdict first, then header, SLO table and plots: tops {tops}")
    return problems


def keep_screenshot(opened: Opened, beside: Path) -> Path:
    """Write the screenshot next to the report and copy it to reports/browser-check.png."""
    shot = beside.with_suffix(".png")
    shot.write_bytes(opened.screenshot)
    KEPT_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, KEPT_SCREENSHOT)
    return shot


def page(body: str, path: Path) -> Path:
    path.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>planted</title></head>'
                    f"<body>{body}</body></html>")
    return path


@pytest.fixture
def sim():
    require("vllm-sim-standin")
    with SimServer(model=SPEC.model_id, max_model_len=8192, ttft_ms=20, itl_ms=2, vllm_version=VLLM_VERSION) as server:
        yield server


# The stand-in runs two requests at once and queues the rest: a queued request waits a whole one (20 ms + 127 x 2 ms,
# ~275 ms), past a TTFT p95 of 100 ms as soon as more than 5 % of requests wait. Two users hold, three do not.
KNOWN_KNEE = 2
CAPACITY_PLOTS = ("TTFT against concurrency", "ITL against concurrency", "End-to-end latency against concurrency",
                  "Error rate against concurrency", "Output tokens/s against concurrency")
CAPACITY = ["--find-capacity", "--set", "slo.ttft_ms={p50: 50, p95: 100, p99: 1200}", "--set",
            "capacity.step_duration_s=2", "--set", "capacity.warmup_s=0.5", "--set", "capacity.max_users=8", "--set",
            "capacity.peak_users=9"]


def test_a_capacity_search_finds_the_known_knee_and_its_report_draws_the_curves(
        chromium: str, pytester: pytest.Pytester, tmp_path: Path):
    require("vllm-sim-standin")
    report = tmp_path / "report.html"
    with SimServer(model=SPEC.model_id, max_model_len=8192, ttft_ms=20, itl_ms=2, vllm_version=VLLM_VERSION,
                   max_num_seqs=KNOWN_KNEE) as server:
        result = pytester.runpytest_subprocess(SUITES, "-p", "no:cacheprovider", "--rootdir", str(PROJECT_ROOT),
                                               "--gate-report", str(report), "--model", SPEC.name, "--endpoint-url",
                                               server.url, *SHORT_LOAD, *CAPACITY, timeout=300)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["capacity: searching from 2 users up to 8 *",
                                 "capacity: 2 users: PASS; ttft p50 *",
                                 "capacity: 4 users: FAIL (ttft p50, ttft p95*",
                                 "capacity: 3 users: FAIL (*ttft p95*",
                                 f"capacity: {KNOWN_KNEE} concurrent users per replica hold every latency SLO and the "
                                 "error rate, 3 broke * peak 9 users needs 5 replicas"])
    (decided,) = json.loads((evidence.artifacts_dir(report) / evidence.SUMMARY).read_text())["models"]
    assert (decided["capacity"]["knee"], decided["capacity"]["lowest_failing"]) == (KNOWN_KNEE, KNOWN_KNEE + 1)
    assert decided["checks"]["load/test_capacity_search"]["outcome"] == "passed"
    assert len(list((evidence.artifacts_dir(report) / evidence.CAPACITY_DIR).glob("*-users.jsonl"))) == 3

    opened = open_page(chromium, report, tmp_path / "browser")
    assert opened.console == []
    assert what_is_wrong(opened.facts, decided["verdict"]["headline"], slo_names(SPEC.slo),
                         capacity=CAPACITY_PLOTS) == []
    shown = {plot["title"]: plot for plot in opened.facts["plots"]}
    # Three steps; llama3 limits TTFT and ITL at p50, p95, p99, end-to-end at p95 and p99, the error rate.
    assert [shown[title]["points"] for title in CAPACITY_PLOTS] == [9, 9, 6, 3, 3]
    assert [shown[title]["limits"] for title in CAPACITY_PLOTS] == [3, 3, 2, 1, 0]


def test_the_gate_report_opens_offline_with_its_header_slo_table_and_every_plot(
        chromium: str, pytester: pytest.Pytester, sim: SimServer, tmp_path: Path):
    report = tmp_path / "report.html"
    result = pytester.runpytest_subprocess(SUITES, "-p", "no:cacheprovider", "--rootdir", str(PROJECT_ROOT),
                                           "--gate-report", str(report), "--model", SPEC.name, "--endpoint-url",
                                           sim.url, *SHORT_LOAD, timeout=300)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    (decided,) = json.loads((evidence.artifacts_dir(report) / evidence.SUMMARY).read_text())["models"]
    assert [s["name"] for s in decided["slo"]] == slo_names(SPEC.slo)

    opened = open_page(chromium, report, tmp_path / "browser")

    shot = keep_screenshot(opened, report)
    assert shot.read_bytes().startswith(PNG_MAGIC)
    assert KEPT_SCREENSHOT.read_bytes() == shot.read_bytes()
    assert opened.console == []
    assert opened.requests == []
    assert what_is_wrong(opened.facts, decided["verdict"]["headline"], slo_names(SPEC.slo)) == []
    assert opened.facts["header"]["fields"]["model"].startswith(f"{SPEC.name}: ")
    assert opened.facts["header"]["fields"]["upstream id"].startswith(SPEC.model_id)
    assert sim.url in opened.facts["header"]["fields"]["cluster"]
    # The verdict comes first: pytest-html's Environment rows are moved below the sign-off, not drawn above it.
    top = opened.facts["verdict"]["box"]["top"]
    headings = opened.facts["headings"]
    assert [h["text"] for h in headings if h["top"] < top] == [
        f"vllm-gate sign-off: {SPEC.name}", "Summary", f"vllm-gate verdict and sign-off: {SPEC.name}"]
    assert "Environment" in [h["text"] for h in headings if h["top"] > top]
    # The SLO history is read with the last passed run: this run gave no registry to read it from.
    assert opened.facts["historyNotes"] == ["no registry holding earlier runs: no --database-url given"]


def test_the_sign_off_section_alone_draws_every_label_inside_its_plot(chromium: str, tmp_path: Path):
    run = a_run()
    opened = open_page(chromium, page(sign_off(run, SAMPLES), tmp_path / "signoff.html"), tmp_path / "browser")
    assert (opened.console, opened.requests) == ([], [])
    # a_run measured two SLOs only; everything else about the page is as it should be.
    assert what_is_wrong(opened.facts, run.settle().headline, slo_names(SPEC.slo)) == [
        f"SLO table rows ['ttft p95', 'goodput'], not one per SLO {slo_names(SPEC.slo)}"]


def test_the_history_plots_open_offline_dated_with_their_limit_and_every_label_inside(chromium: str, dsn: str,
                                                                                     tmp_path: Path):
    with psycopg.connect(dsn) as conn:
        for at, image, values in EARLIER:
            add(conn, at, image, values)
    run = this_run()
    history = [f"{r.name}: last 3 passed rehearsals and this run" for r in run.slo_results]
    slos = [r.name for r in run.slo_results]
    section = sign_off(run, SAMPLES, read(dsn))
    opened = open_page(chromium, page(section, tmp_path / "history.html"), tmp_path / "browser")
    assert (opened.console, opened.requests) == ([], [])
    assert what_is_wrong(opened.facts, run.settle().headline, slos, history) == []
    shown = {plot["title"]: plot for plot in opened.facts["plots"]}
    assert [(shown[title]["points"], shown[title]["dates"]) for title in history] == [
        (4, ["11-24", "11-25", "11-26", "11-27"])] * 2
    # The same page without a limit line and without dates in the first history plot is caught.
    planted = section.replace('<line class="limit"', '<line class="gone"', 1).replace(
        'class="run-date"', 'class="gone"', 4)
    opened = open_page(chromium, page(planted, tmp_path / "planted.html"), tmp_path / "browser")
    assert what_is_wrong(opened.facts, run.settle().headline, slos, history) == [
        f"{history[0]}: 0 limit lines, dates []"]


def test_a_page_that_logs_errors_or_reaches_for_the_network_is_caught(chromium: str, tmp_path: Path):
    planted = page('<img src="https://cdn.example.com/logo.png"><script>console.log("just a log"); '
                   'console.error("planted error"); notDefined();</script>', tmp_path / "planted.html")
    opened = open_page(chromium, planted, tmp_path / "browser")
    assert opened.requests == ["https://cdn.example.com/logo.png"]
    # The image fails to load because no host resolves here; a log that is not an error is not reported.
    assert sorted(line.splitlines()[0] for line in opened.console) == [
        "Failed to load resource: net::ERR_NAME_NOT_RESOLVED https://cdn.example.com/logo.png",
        "ReferenceError: notDefined is not defined", "planted error"]


def test_a_report_missing_its_verdict_header_fields_or_plots_is_caught(chromium: str, tmp_path: Path):
    run = a_run()
    planted = (sign_off(run, SAMPLES).replace('class="verdict ', 'class="')
               .replace("<th>GPU type</th>", "<th>GPU</th>")
               .replace('data-points="40"', 'data-points="0"', 1)
               .replace('<td class="measured">75.5 ms</td>', '<td class="measured"></td>'))
    opened = open_page(chromium, page(planted, tmp_path / "planted.html"), tmp_path / "browser")
    problems = what_is_wrong(opened.facts, run.settle().headline, [r.name for r in run.slo_results])
    assert problems == ["no verdict headline", "header fields missing or empty: GPU type",
                        "SLO row ttft p95 has an empty cell: ['ttft p95', '', '<= 600 ms', '+524.5 ms', 'PASS']",
                        "TTFT distribution: empty (0 points, 30 marks, 642x322 px)"]


def test_faint_text_overlapping_plots_wrong_order_or_labels_cut_off_are_caught(chromium: str, tmp_path: Path):
    run = a_run()
    broken = ("<style>.vllm-gate-plots svg { position: absolute; top: 0; left: 0; } "
              ".vllm-gate-plots text.heading { font-size: 60px; } .vllm-gate-signoff td { color: #999; }</style>")
    opened = open_page(chromium, page(sign_off(run, SAMPLES) + broken, tmp_path / "broken.html"),
                       tmp_path / "browser")
    problems = what_is_wrong(opened.facts, run.settle().headline, [r.name for r in run.slo_results])
    assert "plots 'TTFT distribution' and 'ITL distribution' overlap" in problems
    assert any(p.startswith("not verdict first, then header, SLO table and plots") for p in problems), problems
    assert ("text too faint to read on white: 'llama3: Llama 3 8B Instruct' in rgb(153, 153, 153) "
            "(contrast 2.8:1, needs 4.5:1)") in problems
    heading = "End-to-end latency distribution"
    assert f"{heading}: labels cut off at its edge: [{heading!r}]" in problems


def _survivors_after(workdir: Path, timeout_s: float = 10) -> list[int]:
    """Chromium processes still alive under ``workdir`` once a SIGKILL has had ``timeout_s`` to land."""
    deadline = time.monotonic() + timeout_s
    while (alive := survivors(workdir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def test_no_chromium_process_outlives_the_page_and_one_that_runs_is_seen(chromium: str, tmp_path: Path):
    workdir = tmp_path / "browser"
    open_page(chromium, page("<p>short</p>", tmp_path / "short.html"), workdir)
    assert _survivors_after(workdir) == []
    # The same look finds a browser that is still running.
    profile = tmp_path / "running"
    scratch_before = set(Path(tempfile.gettempdir()).glob(CHROMIUM_SCRATCH))
    running = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                                f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        endpoint(profile, running)  # it is up once it listens
        assert running.pid in survivors(profile)
    finally:
        os.killpg(running.pid, signal.SIGKILL)
        running.wait(timeout=15)
        # Killed, it cannot remove its own scratch from /tmp: the test does, leaving the host as found.
        for left in set(Path(tempfile.gettempdir()).glob(CHROMIUM_SCRATCH)) - scratch_before:
            shutil.rmtree(left, ignore_errors=True)
    assert _survivors_after(profile) == []
