"""Render and lint the chart for a spec with the real helm binary (through pyhelm3)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pyhelm3
import yaml

from vllm_gate.base.errors import RenderError
from vllm_gate.base.tools import CHART_DIR, require_tool
from vllm_gate.deploy.values import chart_values
from vllm_gate.spec import ModelSpec

T = TypeVar("T")


HELM_CALL_TIMEOUT_S = 900  # helm's own --timeout covers waits; this bounds a helm that hangs
HELM_PROGRESS_EVERY_S = 10


def run_helm(coro: Coroutine[Any, Any, T], what: str, progress: Callable[[str], None] | None = None) -> T:
    """Run one pyhelm3 coroutine to completion, or raise RenderError after HELM_CALL_TIMEOUT_S; with ``progress``,
    say every HELM_PROGRESS_EVERY_S that it still waits (an uninstall waits for the pods' graceful shutdown)."""

    async def spoken() -> T:
        task = asyncio.ensure_future(coro)
        started = time.monotonic()
        while True:
            done, _ = await asyncio.wait({task}, timeout=HELM_PROGRESS_EVERY_S)
            if done:
                return task.result()
            if progress is not None:
                progress(f"{what}: still waiting ({time.monotonic() - started:.0f} s of {HELM_CALL_TIMEOUT_S} s)")

    try:
        return asyncio.run(asyncio.wait_for(spoken(), HELM_CALL_TIMEOUT_S))
    except TimeoutError:
        raise RenderError(f"{what}: helm did not finish within {HELM_CALL_TIMEOUT_S} s") from None


def helm_client(kubeconfig: Path | None = None, context: str | None = None) -> pyhelm3.Client:
    """Return a pyhelm3 client on the project's helm binary."""
    return pyhelm3.Client(executable=str(require_tool("helm")), kubeconfig=kubeconfig, kubecontext=context)


def _helm_failure(what: str, exc: pyhelm3.errors.Error) -> RenderError:
    stderr = exc.stderr.decode(errors="replace").strip()
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Use --debug")]
    # Helm puts the actionable part last ("- at '/service/type': value must be 'ClusterIP'").
    summary = lines[-1] if lines else f"exit status {exc.returncode}"
    return RenderError(f"{what}: {summary}", stderr)


def render_manifests(spec: ModelSpec, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Return the objects ``helm template`` produces for ``spec`` (hooks included)."""
    client = helm_client()

    async def run() -> list[dict[str, Any]]:
        chart = await client.get_chart(CHART_DIR)
        docs = await client.template_resources(
            chart, spec.name, values if values is not None else chart_values(spec), namespace=spec.namespace
        )
        return [doc for doc in docs if doc]

    try:
        return run_helm(run(), f"helm template {spec.name}")
    except pyhelm3.errors.Error as exc:
        raise _helm_failure(f"helm template {spec.name} ({CHART_DIR})", exc) from None


def lint_chart(spec: ModelSpec) -> str:
    """Run ``helm lint --strict`` with the spec's values; return its output or raise RenderError."""
    proc = subprocess.run(
        [str(require_tool("helm")), "lint", "--strict", str(CHART_DIR), "--values", "-"],
        input=yaml.safe_dump(chart_values(spec)), capture_output=True, text=True, timeout=120, check=False,
    )
    if proc.returncode != 0:
        raise RenderError(f"helm lint {CHART_DIR} for {spec.name}: failed", proc.stdout + proc.stderr)
    return proc.stdout


def manifests_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)
