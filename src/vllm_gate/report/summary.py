"""``summary.json``: what a run decided, for CI systems and scripts (schema: summary.schema.json, version 2)."""

from __future__ import annotations

import json
import math
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from importlib.resources import files
from typing import Any

from vllm_gate.base.tools import PROJECT_ROOT
from vllm_gate.gate.run import GateRun, chart_version

# 3: sizing, kv_cache, capacity, and each SLO's note (requests cut at the end of the load test). 4: scaling.
SCHEMA_VERSION = 4


def schema() -> dict[str, Any]:
    return json.loads(files("vllm_gate.report").joinpath("summary.schema.json").read_text())


def git_commit() -> str | None:
    """The gate's own commit, or None outside a git checkout."""
    try:
        proc = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def model_summary(run: GateRun, now: datetime) -> dict[str, Any]:
    """One model's object (the schema's ``model``); ``now`` stands in for the finish of a model not decided yet."""
    verdict = run.settle()
    finished_at = run.finished_at or now
    release = run.release
    return {
        "name": run.spec.name, "model_id": run.spec.model_id,
        "verdict": {"kind": verdict.kind.value, "mode": verdict.mode.value, "headline": verdict.headline,
                    "certified": verdict.certified, "exit_code": verdict.exit_code},
        "reasons": list(verdict.reasons),
        "checks": {o.check: {"outcome": o.outcome, "message": o.message, "required": o.check in run.required}
                   for o in run.outcomes.values() if not o.check.startswith("setup/")},
        "slo": [{"name": r.name, "measured": r.measured if math.isfinite(r.measured) else None, "limit": r.limit,
                 "unit": r.unit, "passed": r.passed, "note": r.note} for r in run.slo_results],
        "image": run.image(), "chart": chart_version(), "answered_by": run.answered_by,
        "server": run.server.summary() if run.server else None,
        "release": ({"name": release.name, "namespace": release.namespace, "revision": release.revision}
                    if release else None),
        "cluster": {"description": run.cluster, "key": run.cluster_key},
        "started_at": run.started_at.isoformat(), "finished_at": finished_at.isoformat(),
        "duration_s": round((finished_at - run.started_at).total_seconds(), 1),
        "not_shown": list(verdict.not_shown), "telemetry": list(run.telemetry), "decision": list(run.decision),
        "sizing": list(run.sizing), "kv_cache": run.kv_cache.summary() if run.kv_cache else None,
        "capacity": run.capacity.summary() if run.capacity else None,
        "scaling": run.scaling.summary() if run.scaling else None,
        "promotion": promotion_summary(run),
    }


def promotion_summary(run: GateRun) -> dict[str, Any]:
    """The schema's ``promotion``: the live revision before and after, the switch, the router's check."""
    promotion = run.promotion
    before = promotion.live_before
    deployed = str(run.deployed) if run.target is not None or run.release is not None else None
    return {"mode": promotion.mode, "live_before": before, "deployed": deployed,
            "switched_at": promotion.switched_at.isoformat() if promotion.switched_at else None,
            "live_after": promotion.live_after or before, "router": promotion.router,
            "lines": promotion.lines(run.deployed)}


def run_summary(runs: list[GateRun]) -> dict[str, Any]:
    """The whole run: one object per model, in the order they ran."""
    now = datetime.now(UTC)
    return {"schema_version": SCHEMA_VERSION, "gate_version": metadata.version("vllm-gate"),
            "git_commit": git_commit(), "generated_at": now.isoformat(),
            "models": [model_summary(run, now) for run in runs]}
