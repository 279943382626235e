"""The files a run leaves beside its HTML report, in ``reports/<run>/``: evidence a reviewer can open later."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

SUMMARY, JUNIT, SAMPLES, VALUES, EVENTS = "summary.json", "junit.xml", "samples.jsonl", "values.yaml", "events.txt"
METRICS_BEFORE, METRICS_AFTER = "metrics-before.txt", "metrics-after.txt"
CAPACITY_DIR = "capacity"  # the capacity search's raw samples, one file per step
SCALING = "scaling.json"  # the autoscaling test's readings (HPA, Deployment, Service endpoints, metric)
SCALING_SAMPLES = "scaling-samples.jsonl"  # its load's raw samples


def artifacts_dir(report_path: Path) -> Path:
    """``reports/llama3-<time>.html`` keeps its evidence in ``reports/llama3-<time>/``."""
    return report_path.with_suffix("")


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def copy(directory: Path, name: str, source: Path) -> Path:
    """Copy ``source`` into the evidence ``directory`` (made first: no writer may depend on another having run)."""
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source, directory / name))


def write_json(directory: Path, name: str, data: Any) -> Path:
    return write(directory, name, json.dumps(data, indent=2) + "\n")


def write_values(directory: Path, values: dict[str, Any]) -> Path:
    """The chart values the gate rendered: secret-free by construction (the HF token is a Secret's name)."""
    return write(directory, VALUES, yaml.safe_dump(values, sort_keys=False))


def events_text(core: client.CoreV1Api, namespace: str) -> str:
    """The namespace's events, oldest first, one line each (what the rollout went through)."""
    events = core.list_namespaced_event(namespace, _request_timeout=15).items

    def when(event: client.CoreV1Event) -> str:
        stamp = event.last_timestamp or event.event_time or event.first_timestamp or event.metadata.creation_timestamp
        return stamp.isoformat() if stamp else ""

    lines = [f"{when(e)} {e.type} {e.reason} {e.involved_object.kind}/{e.involved_object.name}: "
             f"{' '.join((e.message or '').split())}" for e in sorted(events, key=when)]
    return "\n".join(lines) + "\n" if lines else "(no events)\n"
