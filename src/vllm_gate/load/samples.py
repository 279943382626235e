"""The raw samples every load runner returns (one record per request, as Locust timed it), and the interface
the runners share: a local Locust process (``local``) or Locust pods beside the router (``incluster``)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vllm_gate.base.errors import GateError


class LoadFailed(GateError):
    """The load generator itself failed (not the server under test)."""


@dataclass(frozen=True)
class RequestSample:
    """One request as the load generator saw it."""

    start: float
    ttft_s: float | None
    itl_s: list[float]
    e2e_s: float
    prompt_tokens: int | None
    output_tokens: int | None
    error: str | None
    cut: bool = False  # still in flight when the load test stopped: not completed (``error`` says so)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.ttft_s is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass
class LoadRun:
    """What one load test gave: its raw samples and what running it cost."""

    samples: list[RequestSample]
    wall_s: float
    cpu_s: float  # CPU time the load generator used (user + system); NaN where it ran elsewhere (in-cluster)
    log_path: Path


class LoadRunner(Protocol):
    """Where a load test runs; every runner returns the same raw samples in a ``LoadRun``."""

    def describe(self) -> str:
        """One line for the terminal and the report: where the load comes from and how many processes drive it."""
        ...

    def run(self) -> LoadRun:
        """Drive the spec's load profile; everything the runner started is stopped before this returns."""
        ...


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default method); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def read_samples(path: Path, *, while_written: bool = False) -> list[RequestSample]:
    """The samples Locust wrote, one JSON object a line.

    ``while_written``: Locust is still appending, so a last line without its newline is being written and is
    left for the next read. Otherwise every line must be whole: a broken one fails naming it.
    """
    samples: list[RequestSample] = []
    if not path.exists():
        return samples
    text = path.read_text()
    if while_written:
        text = text[:text.rfind("\n") + 1]
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            samples.append(RequestSample(r["start"], r["ttft_s"], list(r["itl_s"]), r["e2e_s"],
                                         r["prompt_tokens"], r["output_tokens"], r["error"], bool(r.get("cut"))))
        except (ValueError, KeyError, TypeError) as exc:
            raise LoadFailed(f"{path} line {number} is not a whole sample ({type(exc).__name__}: {exc})") from None
    return samples


