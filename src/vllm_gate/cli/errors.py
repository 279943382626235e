"""Map library errors to click's exit codes: 2 for bad input, 1 for a failed action."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from vllm_gate.base.errors import GateError, SpecError


class InvalidInput(click.UsageError):
    """Bad input (a spec, a flag value): exit 2 with one line naming what and where."""

    def show(self, file: object = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class ActionFailed(click.ClickException):
    """A valid request that failed: exit 1 with the summary line, detail after it."""

    def __init__(self, summary: str, detail: str = "") -> None:
        super().__init__(summary)
        self.detail = detail

    def show(self, file: object = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)
        if self.detail:
            click.echo(self.detail, err=True)


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn SpecError into exit 2 and any other GateError into exit 1."""
    try:
        yield
    except SpecError as exc:
        raise InvalidInput(exc.summary) from None
    except GateError as exc:
        raise ActionFailed(exc.summary, exc.detail) from None
