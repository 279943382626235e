"""Errors the gate raises: one actionable summary line, then optional detail."""

from __future__ import annotations


class GateError(Exception):
    """A failure a person can act on: ``summary`` is one line, ``detail`` the evidence."""

    def __init__(self, summary: str, detail: str = "") -> None:
        super().__init__(summary)
        self.summary = summary
        self.detail = detail

    def __str__(self) -> str:
        return self.summary if not self.detail else f"{self.summary}\n{self.detail}"


class SpecError(GateError):
    """A model spec or override is invalid; the summary names file, field and reason."""


class ToolMissing(GateError):
    """A binary the gate needs (helm, kubectl, kwokctl, ...) is not installed."""


class RenderError(GateError):
    """Helm could not render or lint the chart with the given values."""


class RolloutFailed(GateError):
    """The model's pods will not become ready; the summary says why."""


class EndpointError(GateError):
    """The model server answered wrongly or not at all."""


class ClusterError(GateError):
    """The cluster cannot be reached, started or stopped."""
