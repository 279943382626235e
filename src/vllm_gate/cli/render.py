"""``vllm-gate render MODEL``: print the manifests the gate would deploy."""

from __future__ import annotations

import click

from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.cli.errors import reported_errors
from vllm_gate.deploy.render import manifests_yaml, render_manifests
from vllm_gate.spec import load_spec

__all__ = ["render"]


@click.command()
@click.argument("model")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a spec field (dotted path, YAML value); repeatable.")
def render(model: str, overrides: tuple[str, ...]) -> None:
    """Render MODEL (a name in models/ or a spec path) through helm and print the manifests."""
    with reported_errors():
        spec = load_spec(model, MODELS_DIR, list(overrides))
        click.echo(manifests_yaml(render_manifests(spec)), nl=False)
