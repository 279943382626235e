"""The lines a gate run prints: its header, where a local load test measures from, each verdict, the overview."""

from __future__ import annotations

from vllm_gate.gate.run import GateRun
from vllm_gate.load.local import TUNNEL_COST


def header_lines(runs: list[GateRun]) -> list[str]:
    """The session header: each model, its engine and required checks, the cluster and the report."""
    per_model: list[str] = []
    for run in runs:
        per_model.append(f"vllm-gate: model {run.spec.name} ({run.spec.served_name}), engine {run.spec.engine}: "
                         f"{run.answered_by}")
        per_model.append(f"vllm-gate: {len(run.required)} required checks for a {run.mode.value}"
                         + (f" of {run.spec.name}" if len(runs) > 1 else ""))
        if run.simulated or run.stands_in:
            per_model.append(f"vllm-gate: a rehearsal ({run.simulated or run.stands_in}): it cannot certify and "
                             "writes only the rehearsal registry")
        per_model += [f"vllm-gate: {line}" for line in run.sizing]
    shared = [f"vllm-gate: cluster {runs[0].cluster}", f"vllm-gate: report {runs[0].report_path}"]
    if len(runs) == 1:
        return [per_model[0], *shared, *per_model[1:]]
    names = ", ".join(run.spec.name for run in runs)
    return [f"vllm-gate: {len(runs)} models, one after another (each deployed, checked, then registered or undone "
            f"before the next): {names}", *shared, *per_model]


def local_load_line(url: str, *, endpoint_given: bool) -> str:
    """Where one Locust process on this machine (or in the gate's pod) loads the model from."""
    if endpoint_given:
        return f"load: measured from this machine (one Locust process) against {url}"
    if ".svc.cluster.local:" in url:  # the gate runs in a pod and calls the model's Service
        return f"load: measured from the gate's own pod (one Locust process) against {url}, not the router's namespace"
    return ("load: measured through kubectl port-forward: latency includes the tunnel (one Locust process here; "
            f"{TUNNEL_COST})")


def verdict_lines(run: GateRun) -> list[str]:
    verdict = run.settle()
    lines = [f"model {run.spec.name} on {run.cluster}:", f"  {verdict.headline}"]
    lines += [f"  {reason}" for reason in verdict.reasons]
    lines.append(f"  answered by: {run.answered_by}")
    lines += [f"  server: {line}" for line in run.server.lines()] if run.server else []
    lines += [f"  {run.preflight}"] if run.preflight else []
    lines.append(f"  took {run.duration_s:.0f} s, from its first check to its decision")
    for suite, outcome in sorted(run.suites().items()):
        recorded = " (on recorded telemetry, not a live GPU)" if suite == "gpu" and run.gpu_recorded else ""
        lines.append(f"  suite {suite}: {outcome}{recorded}")
    lines += [f"  SKIPPED {o.check}: {o.message}" for o in run.outcomes.values() if o.outcome == "skipped"]
    lines += [f"  BASELINE RECORDED {o.check}: {o.message}" for o in run.outcomes.values()
              if o.outcome == "baseline"]
    lines += [f"  SLO {r.line()}" for r in run.slo_results]
    if run.simulated and run.slo_results:
        profile = run.spec.rehearsal
        lines.append(f"  rehearsal SLO numbers come from the simulator's profile: TTFT {profile.ttft_ms:g}±"
                     f"{profile.ttft_std_ms:g} ms, ITL {profile.itl_ms:g}±{profile.itl_std_ms:g} ms; source: "
                     f"{profile.source}")
    if run.on_real_engine and run.slo_results:
        measured = run.spec.rehearsal.real_engine
        lines.append("  rehearsal SLO limits are " + (
            f"the real engine's, measured on this machine kind (the spec's are for its model on GPUs); source: "
            f"{measured.source}" if measured else "the spec's own, for its model on GPUs: the spec sets no "
            "rehearsal.real_engine limits measured for this engine"))
    lines += [f"  {line}" for line in run.telemetry]
    lines += [f"  not shown by this run: {line}" for line in verdict.not_shown]
    lines += [f"  cluster: {line}" for line in run.cluster_problems]
    lines += [f"  {line}" for line in run.decision]
    lines += [f"  promotion: {line}" for line in run.promotion.lines(run.deployed)]
    return lines


def overview_lines(runs: list[GateRun]) -> list[str]:
    """After the verdicts of several models: each one's headline and time, in the order they ran."""
    return [f"{len(runs)} models, one after another:",
            *(f"  {run.spec.name}: {run.settle().headline} ({run.duration_s:.0f} s)" for run in runs)]
