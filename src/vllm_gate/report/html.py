"""The sign-off section of the HTML report: header (verdict first), SLO table, plots, what was not shown."""

from __future__ import annotations

import getpass
import html
import math
import socket
from collections.abc import Mapping, Sequence
from importlib import metadata

from vllm_gate.checks.scaling import Scaling
from vllm_gate.gate.run import GateRun, chart_version
from vllm_gate.load.capacity import Capacity
from vllm_gate.load.samples import RequestSample
from vllm_gate.report import series, svg
from vllm_gate.report.slo_table import slo_table
from vllm_gate.report.summary import git_commit
from vllm_gate.report.trend import RunHistory, slo_points
from vllm_gate.verdict.contract import Kind

# pytest-html greys its body text and collapses table spacing: a page to sign needs dark text and spaced columns.
STYLE = """<style>
.vllm-gate { color: #1f2328; }
.vllm-gate-signoff th { text-align: left; padding-right: 1em; vertical-align: top; }
.vllm-gate-signoff .verdict { font-size: 1.4em; font-weight: bold; }
.vllm-gate-signoff .passed { color: #1a7f37; } .vllm-gate-signoff .failed { color: #cf222e; }
.vllm-gate-slo th, .vllm-gate-slo td { padding: 0.2em 0.6em; text-align: right; border-bottom: 1px solid #eee; }
.vllm-gate-slo th:first-child { text-align: left; }
.vllm-gate-slo td.result { font-weight: bold; } .vllm-gate-slo td.pass { color: #1a7f37; }
.vllm-gate-slo td.fail { color: #cf222e; }
.vllm-gate-plots svg { margin: 0.5em 1em 0.5em 0; border: 1px solid #ddd; }
.vllm-gate-models th, .vllm-gate-models td, .vllm-gate-environment th, .vllm-gate-environment td {
  padding: 0.2em 0.6em; text-align: left; vertical-align: top; border-bottom: 1px solid #eee; }
.vllm-gate-models td.passed { color: #1a7f37; } .vllm-gate-models td.failed { color: #cf222e; }
</style>"""
# pytest-html draws its Environment table above the summary, where the verdict belongs: the gate moves those rows
# below its sign-off (environment()) and hides the heading left above with nothing under it.
HIDE_PYTEST_HTML_ENVIRONMENT = "<style>#environment-header, #environment { display: none; }</style>"


def _e(text: object) -> str:
    return html.escape(str(text))


def _rows(pairs: Sequence[tuple[str, object]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs)


def _state(run: GateRun) -> str:
    return "passed" if run.settle().kind is Kind.PASSED else "failed"


def header(run: GateRun) -> str:
    """Verdict first with the reason of each failed or missing check, then what ran where, by whom and how long."""
    verdict = run.settle()
    state = _state(run)
    spec, release = run.spec, run.release
    revision = f" (revision pinned: {spec.image.digest})" if spec.image.digest else ""
    pairs: list[tuple[str, object]] = [
        ("model", f"{spec.name}: {spec.display_name}"), ("upstream id", f"{spec.model_id}{revision}"),
        ("image", run.image()), ("answered by", run.answered_by),
        ("server says", "; ".join(run.server.lines()) if run.server else "not asked"), ("chart", chart_version()),
        ("Helm release", f"{release.namespace}/{release.name} revision {release.revision}" if release else "none"),
        ("cluster", run.cluster), ("context", run.context or "-"),
        ("GPU type", f"{spec.resources.gpus} x {spec.resources.gpu_type} per pod"),
        ("gate", f"vllm-gate {metadata.version('vllm-gate')} ({git_commit() or 'no git checkout'})"),
        ("run by", f"{getpass.getuser()} on {socket.gethostname()}"),
        ("when", f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC, {run.duration_s:.0f} s"),
    ]
    reasons = "".join(f"<li>{_e(r)}</li>" for r in verdict.reasons)
    return (f'<div class="vllm-gate-signoff"><p class="verdict {state}">{_e(verdict.headline)}</p>'
            f"{f'<ul>{reasons}</ul>' if reasons else ''}<table>{_rows(pairs)}</table></div>")


def plots(samples: Sequence[RequestSample]) -> str:
    """TTFT, ITL and end-to-end latency distributions; latency, request rate, tokens/s and errors over the run."""
    latency = series.latency_values(samples)
    width = series.bin_width(samples)
    timeline = series.over_time(samples, width)
    rate = f"{svg.TIME_AXIS}; per {width} s bin, as a rate per second"
    figures = [svg.histogram("TTFT distribution", latency["ttft"]), svg.histogram("ITL distribution", latency["itl"]),
               svg.histogram("End-to-end latency distribution", latency["e2e"]),
               svg.time_series("Latency p50 over the run", timeline[series.LATENCY_P50], "ms",
                               f"{svg.TIME_AXIS}; p50 of the requests ending in each {width} s bin"),
               svg.time_series("Requests/s over the run", timeline[series.REQUESTS], "req/s", rate),
               svg.time_series("Output tokens/s over the run", timeline[series.OUTPUT_TOKENS], "tok/s", rate),
               svg.time_series("Errors/s over the run", timeline[series.ERRORS], "err/s", rate)]
    return f'<div class="vllm-gate-plots">{"".join(figures)}</div>'


def _last(count: int, what: str) -> str:
    return f"last {count} {what}s" if count > 1 else f"last {what}"


CAPACITY_FAMILIES = (("ttft", "TTFT"), ("itl", "ITL"), ("e2e", "End-to-end latency"))


def capacity_plots(capacity: Capacity) -> str:
    """The capacity search: its headline and steps; TTFT, ITL and end-to-end percentiles, the error rate and output
    tokens/s against concurrency, each with its SLO limits dashed and the knee marked."""
    steps = sorted((s for s in capacity.steps if s.values), key=lambda s: s.users)
    limits = steps[0].limits if steps else {}

    def against(names: list[str]) -> dict[str, list[tuple[float, float]]]:
        return {name: [(s.users, s.values[name]) for s in steps if name in s.values] for name in names}

    figures = []
    for prefix, title in CAPACITY_FAMILIES:
        names = [name for name in limits if name.startswith(f"{prefix} p")]
        if names:
            figures.append(svg.capacity_plot(f"{title} against concurrency", against(names), "ms",
                                             limits={n: limits[n] for n in names}, knee=capacity.knee))
    figures += [svg.capacity_plot("Error rate against concurrency", against(["error rate"]), "",
                                  limits={n: v for n, v in limits.items() if n == "error rate"}, knee=capacity.knee),
                svg.capacity_plot("Output tokens/s against concurrency",
                                  {"output tokens/s": [(s.users, s.output_tokens_per_s) for s in steps]}, "tok/s",
                                  limits={}, knee=capacity.knee)]
    lines = "".join(f"<li>{_e(step.line().removeprefix('capacity: '))}</li>" for step in capacity.steps)
    return (f'<h3>Capacity</h3><p class="vllm-gate-capacity">{_e(capacity.headline())}</p><ul>{lines}</ul>'
            f'<div class="vllm-gate-plots vllm-gate-capacity-plots">{"".join(figures)}</div>')


def scaling_plots(scaling: Scaling) -> str:
    """The autoscaling test: its headline and problems; replicas (what the HPA wanted, what served), the metric it
    scaled on and the requests' latency over the test, from its first request."""
    def since(points: Sequence[tuple[float, float | None]]) -> list[tuple[float, float]]:
        return [(at - scaling.load_started, value) for at, value in points if value is not None]

    width = series.bin_width(scaling.samples) if scaling.samples else 1
    latency = series.over_time(scaling.samples, width)[series.LATENCY_P50] if scaling.samples else []
    axis = "seconds since the load's first request"
    figures = [svg.multi_series("Replicas over the autoscaling test",
                                {"HPA desired": since([(p.at, p.desired) for p in scaling.points]),
                                 "serving (in the Service)": since([(p.at, p.serving) for p in scaling.points])},
                                "pods", axis),
               svg.time_series(f"{scaling.metric} per pod (target {scaling.target:g})",
                               since([(p.at, p.metric) for p in scaling.points]), "", axis),
               svg.time_series("Latency p50 over the autoscaling test", latency, "ms",
                               f"{axis}; p50 of the requests ending in each {width} s bin")]
    problems = "".join(f"<li>{_e(problem)}</li>" for problem in scaling.problems())
    return (f'<h3>Autoscaling</h3><p class="vllm-gate-scaling">{_e(scaling.headline())}</p>'
            f"{f'<ul>{problems}</ul>' if problems else ''}"
            f'<div class="vllm-gate-plots vllm-gate-scaling-plots">{"".join(figures)}</div>')


def history_plots(run: GateRun, history: RunHistory) -> str:
    """Each SLO over the model's earlier passed runs and this run, or the one line saying why there is none."""
    if history.note or not history.runs:
        line = history.note or (f"No history: no earlier {history.what} of {run.spec.name} on this cluster under "
                                "this load profile, nothing to plot.")
        return f'<h3>SLO history</h3><p class="vllm-gate-history-note">{_e(line)}</p>'
    figures, unmeasured = [], []
    for result in run.slo_results:
        points = slo_points(result, history, run)
        if len(points) == 1:  # only this run's: no earlier run measured this SLO
            unmeasured.append(result.name)
            continue
        now = "this run" if math.isfinite(result.measured) else "this run (no data)"
        figures.append(svg.runs_plot(f"{result.name}: {_last(len(points) - 1, history.what)} and {now}", points,
                                     result.limit, result.op, result.unit))
    notes = [f"No earlier {history.what} measured {', '.join(unmeasured)}."] if unmeasured else []
    if not run.slo_results:
        notes.append("No SLO was measured in this run: nothing to plot over them.")
    lines = "".join(f'<p class="vllm-gate-history-note">{_e(line)}</p>' for line in notes)
    return (f"<h3>SLOs over the {_e(_last(len(history.runs), history.what))} on this cluster</h3>{lines}"
            f'<div class="vllm-gate-plots vllm-gate-history">{"".join(figures)}</div>')


def sign_off(run: GateRun, samples: Sequence[RequestSample], history: RunHistory | None = None) -> str:
    """One model's section pytest-html puts above its results table (self-contained: no external URL).

    ``history``: the earlier runs to plot each SLO over; None draws no history (--history 0).
    """
    verdict = run.settle()
    skipped = [f"{o.check}: {o.message}" for o in run.outcomes.values() if o.outcome == "skipped"]
    baselines = [f"{o.check}: {o.message}" for o in run.outcomes.values() if o.outcome == "baseline"]
    lists = [("Skipped checks", skipped), ("Baselines recorded", baselines), ("Not shown by this run",
                                                                            list(verdict.not_shown)),
             ("GPU sizing", [*run.sizing, *(run.kv_cache.lines() if run.kv_cache else [])]),
             ("Telemetry and evidence", list(run.telemetry)), ("Decision", list(run.decision)),
             ("Promotion", run.promotion.lines(run.deployed))]
    sections = "".join(f"<h3>{_e(title)}</h3><ul>{''.join(f'<li>{_e(x)}</li>' for x in items)}</ul>"
                       for title, items in lists if items)
    slo = f"<h3>SLOs</h3>{slo_table(run.slo_results)}" if run.slo_results else "<p>No load test ran.</p>"
    return (f'{STYLE}<div class="vllm-gate" id="{_e(section_id(run))}">'
            f"<h2>vllm-gate verdict and sign-off: {_e(run.spec.name)}</h2>{header(run)}"
            f"{slo}{plots(samples) if samples else ''}{capacity_plots(run.capacity) if run.capacity else ''}"
            f"{scaling_plots(run.scaling) if run.scaling else ''}"
            f"{history_plots(run, history) if history else ''}"
            f"{sections}</div>")


def section_id(run: GateRun) -> str:
    """The anchor of a model's section."""
    return f"vllm-gate-{run.spec.name}"


def overview(runs: Sequence[GateRun]) -> str:
    """A run of several models: each model's verdict and how long it took, in the order they ran, linked."""
    rows = "".join(f'<tr><th scope="row"><a href="#{_e(section_id(run))}">{_e(run.spec.name)}</a></th>'
                   f'<td class="{_state(run)}">{_e(run.settle().headline)}</td>'
                   f"<td>{run.started_at:%H:%M:%S} UTC</td><td>{run.duration_s:.0f} s</td></tr>" for run in runs)
    return (f'{STYLE}<div class="vllm-gate"><h2>vllm-gate: {len(runs)} models, one after another</h2>'
            '<table class="vllm-gate-models"><thead><tr><th scope="col">model</th><th scope="col">verdict</th>'
            f'<th scope="col">started</th><th scope="col">took</th></tr></thead><tbody>{rows}</tbody></table></div>')


def environment(rows: Mapping[str, object]) -> str:
    """pytest-metadata's environment (Python, platform, packages, plugins, CI variables), below the sign-off."""
    def shown(value: object) -> object:
        return ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, Mapping) else value

    pairs = [(key, shown(value)) for key, value in rows.items()]
    return (f'<div class="vllm-gate"><h3>Environment</h3><table class="vllm-gate-environment">{_rows(pairs)}'
            "</table></div>")
