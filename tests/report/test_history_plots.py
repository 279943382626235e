"""The report's history plots: each SLO over the model's last passed runs on this cluster, read from a real registry."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.report.test_html import SAMPLES
from tests.report.test_summary import SPEC, a_run
from vllm_gate.base.secret import Secret
from vllm_gate.base.tools import PROJECT_ROOT
from vllm_gate.gate.run import GateRun, Registry
from vllm_gate.load.slo import SloResult
from vllm_gate.registry.db import redact_dsn
from vllm_gate.report.html import sign_off
from vllm_gate.report.trend import RunHistory, read_history
from vllm_gate.verdict.regression import load_fingerprint

SVG = "{http://www.w3.org/2000/svg}"
CLUSTER = "local"  # a_run's cluster key
LOAD = load_fingerprint(SPEC.load)
REHEARSALS = ("rehearsal_passed",)
LOAD_PLOTS = 7  # the sign-off's plots of this run's load test
THIS_RUN_AT = datetime(2026, 11, 27, 2, 30, tzinfo=UTC)
# Three passed rehearsals, each with other values; the image changed before the third.
EARLIER = [("2026-11-24 02:10+00", "img-a", {"ttft p95": 70.0, "min output tokens/s": 900.0}),
           ("2026-11-25 02:20+00", "img-a", {"ttft p95": 82.5, "min output tokens/s": 870.0}),
           ("2026-11-26 02:30+00", "img-b", {"ttft p95": 76.0, "min output tokens/s": 910.0})]


def add(conn: psycopg.Connection, at: str, image: str, values: dict[str, float], verdict: str = "rehearsal_passed",
        cluster: str = CLUSTER, load: str = LOAD, model: str = SPEC.name) -> int:
    summary = {"cluster_key": cluster, "load_fingerprint": load, "image": image, "chart": "vllm-0.1.0",
               "slo_values": values}
    row = conn.execute("INSERT INTO certifications (model_name, cluster, started_at, finished_at, verdict, summary)"
                       " VALUES (%s, 'c', %s, %s, %s, %s) RETURNING id", (model, at, at, verdict, Jsonb(summary))
                       ).fetchone()
    conn.commit()
    return int(row[0])


def this_run() -> GateRun:
    run = a_run()
    run.finished_at = THIS_RUN_AT
    run.slo_results = [SloResult("ttft p95", 95.5, 600, True, "ms"),
                       SloResult("min output tokens/s", 820.0, 100, True, "tok/s")]
    return run


def read(dsn: str, limit: int = 10) -> RunHistory:
    registry = Registry(Secret(dsn), f"the rehearsal registry at {redact_dsn(dsn)}", rehearsal=True)
    return read_history(registry, SPEC.name, REHEARSALS, "passed rehearsal", CLUSTER, LOAD, limit)


def history_plots(page: str) -> dict[str, ET.Element]:
    """Each plot of the history section by its title, parsed."""
    section = page.split('class="vllm-gate-plots vllm-gate-history"', 1)
    assert len(section) == 2, "no history plots"
    svgs = re.findall(r"<svg.*?</svg>", section[1], re.DOTALL)
    roots = [ET.fromstring(svg) for svg in svgs]  # noqa: S314 (markup the report just built)
    return {root.find(f"{SVG}title").text: root for root in roots}


def texts(root: ET.Element, cls: str) -> list[str]:
    return [e.text or "" for e in root.iter(f"{SVG}text") if e.get("class") == cls]


def no_history_plot(page: str) -> bool:
    """Only the load test's own plots, no plot of earlier runs."""
    return 'vllm-gate-history"' not in page and page.count("<svg") == LOAD_PLOTS


def notes(page: str) -> list[str]:
    return re.findall(r'<p class="vllm-gate-history-note">([^<]*)</p>', page)


def test_each_slo_is_plotted_over_three_earlier_runs_and_this_run_with_its_limit_and_dates(dsn):
    with psycopg.connect(dsn) as conn:
        ids = [add(conn, at, image, values) for at, image, values in EARLIER]
        # None of these is a run of this kind on this cluster under this load: none is plotted.
        add(conn, "2026-11-26 03:00+00", "img-x", {"ttft p95": 1.0}, verdict="rehearsal_failed")
        add(conn, "2026-11-26 03:00+00", "img-x", {"ttft p95": 2.0}, verdict="certified")
        add(conn, "2026-11-26 03:00+00", "img-x", {"ttft p95": 3.0}, cluster="existing:https://other:6443")
        add(conn, "2026-11-26 03:00+00", "img-x", {"ttft p95": 4.0}, load="another-load")
        add(conn, "2026-11-26 03:00+00", "img-x", {"ttft p95": 5.0}, model="mistral-7b")
    history = read(dsn)
    assert (history.note, [r.certification_id for r in history.runs]) == ("", ids)

    page = sign_off(this_run(), SAMPLES, history)

    assert "SLOs over the last 3 passed rehearsals on this cluster" in page
    plots = history_plots(page)
    assert list(plots) == ["ttft p95: last 3 passed rehearsals and this run",
                           "min output tokens/s: last 3 passed rehearsals and this run"]
    for (title, root), result in zip(plots.items(), this_run().slo_results, strict=True):
        assert root.get("data-points") == "4", title
        circles = list(root.iter(f"{SVG}circle"))
        assert [c.get("class") for c in circles] == ["run", "run", "run", "this-run"], title
        values = [EARLIER[0][2][result.name], EARLIER[1][2][result.name], EARLIER[2][2][result.name],
                  result.measured]
        hovers = [c.find(f"{SVG}title").text for c in circles]
        assert hovers == [
            f"passed rehearsal {ids[0]}, 2026-11-24 02:10 UTC: {values[0]:g} {result.unit}; image img-a",
            f"passed rehearsal {ids[1]}, 2026-11-25 02:20 UTC: {values[1]:g} {result.unit}; image img-a",
            f"passed rehearsal {ids[2]}, 2026-11-26 02:30 UTC: {values[2]:g} {result.unit}; image img-b",
            f"this run, 2026-11-27 02:30 UTC: {values[3]:g} {result.unit}; image simulator: vllm-sim-standin"]
        # The points are where their values put them: a larger value higher up (a smaller y).
        ys = [float(c.get("cy")) for c in circles]
        assert sorted(range(4), key=lambda i: ys[i]) == sorted(range(4), key=lambda i: -values[i]), title
        [limit] = [e for e in root.iter(f"{SVG}line") if e.get("class") == "limit"]
        assert texts(root, "limit-label") == [f"limit {result.op} {result.limit:g} {result.unit}"]
        # A ceiling above every value is drawn above every point, a floor below them all.
        assert (float(limit.get("y1")) < min(ys)) if result.op == "<=" else (float(limit.get("y1")) > max(ys))
        assert texts(root, "run-date") == ["11-24", "11-25", "11-26", "11-27"], title
        assert texts(root, "run-time") == ["02:10", "02:20", "02:30", "02:30"], title
        assert [g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g") if g.get("class") == "image-change"] == [
            "image changed to img-b", "image changed to simulator: vllm-sim-standin"], title


def test_only_the_last_n_runs_are_plotted(dsn):
    with psycopg.connect(dsn) as conn:
        ids = [add(conn, at, image, values) for at, image, values in EARLIER]
    history = read(dsn, limit=2)
    assert [r.certification_id for r in history.runs] == ids[1:]
    (root, _) = history_plots(sign_off(this_run(), SAMPLES, history)).values()
    assert root.get("data-points") == "3"
    assert texts(root, "run-date") == ["11-25", "11-26", "11-27"]


def test_a_first_run_says_there_is_no_history_and_draws_no_plot(dsn):
    page = sign_off(this_run(), SAMPLES, read(dsn))
    assert notes(page) == [f"No history: no earlier passed rehearsal of {SPEC.name} on this cluster under this load "
                           "profile, nothing to plot."]
    assert no_history_plot(page)


def test_an_slo_no_earlier_run_measured_is_named_not_plotted(dsn):
    with psycopg.connect(dsn) as conn:
        add(conn, *EARLIER[0])
    run = this_run()
    run.slo_results.append(SloResult("goodput", 0.99, 0.95, True, ""))
    page = sign_off(run, SAMPLES, read(dsn))
    assert notes(page) == ["No earlier passed rehearsal measured goodput."]
    assert "SLOs over the last passed rehearsal on this cluster" in page
    assert list(history_plots(page)) == ["ttft p95: last passed rehearsal and this run",
                                         "min output tokens/s: last passed rehearsal and this run"]


def test_this_run_without_data_is_plotted_without_its_point_and_says_so(dsn):
    with psycopg.connect(dsn) as conn:
        for at, image, values in EARLIER:
            add(conn, at, image, values)
    run = this_run()
    run.slo_results[0] = SloResult("ttft p95", math.nan, 600, False, "ms")
    plots = history_plots(sign_off(run, SAMPLES, read(dsn)))
    root = plots["ttft p95: last 3 passed rehearsals and this run (no data)"]
    assert root.get("data-points") == "3"
    assert texts(root, "this-run") == []


def test_an_unreachable_registry_is_one_line_in_the_report_without_its_password():
    dsn = "postgresql://gate:pl4nted-Secret@127.0.0.1:9/registry"  # nothing listens on the discard port
    history = read(dsn)
    assert history.runs == ()
    assert history.note.startswith("earlier runs not read: cannot reach the registry at "
                                   "postgresql://gate:***@127.0.0.1:9/registry: ")
    page = sign_off(this_run(), SAMPLES, history)
    assert notes(page) == [history.note.replace('"', "&quot;").replace("'", "&#x27;")]
    assert "\n" not in history.note
    assert "pl4nted" not in page
    assert no_history_plot(page)


def test_a_registry_that_cannot_answer_the_query_is_one_line_in_the_report(empty_dsn):
    history = read(empty_dsn)  # not migrated: no certifications table
    assert history.note == (f"earlier runs not read from the rehearsal registry at {redact_dsn(empty_dsn)}: "
                            'relation "certifications" does not exist')
    assert len(notes(sign_off(this_run(), SAMPLES, history))) == 1


def test_no_registry_or_no_cluster_is_said_and_history_0_draws_nothing():
    none = read_history(Registry(None, "no --database-url given"), SPEC.name, ("certified",), "certification",
                        CLUSTER, LOAD, 10)
    assert none.note == "no registry holding earlier runs: no --database-url given"
    endpoint = read_history(Registry(Secret("postgresql://u@h/db"), "the registry at postgresql://u@h/db"),
                            SPEC.name, ("certified",), "certification", None, LOAD, 10)
    assert endpoint.note.startswith("no earlier runs on the same cluster: this run's cluster is not known")
    assert notes(sign_off(this_run(), SAMPLES, none)) == [none.note]
    page = sign_off(this_run(), SAMPLES, None)  # --history 0
    assert "SLO history" not in page
    assert "vllm-gate-history" not in page
    assert page.count("<svg") == LOAD_PLOTS


def test_history_takes_a_number_of_runs_zero_or_more(pytester: pytest.Pytester):
    result = pytester.runpytest_subprocess(str(PROJECT_ROOT / "suites"), "-p", "no:cacheprovider", "--rootdir",
                                           str(PROJECT_ROOT), "--model", SPEC.name, "--history", "-1", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --history: a number of runs, 0 or more, not '-1'*"])
