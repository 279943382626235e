"""``vllm-gate size MODEL``: will the model, its context and its load fit the GPU types' KV cache?"""

from __future__ import annotations

import json

import click

from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.cli.errors import InvalidInput, reported_errors
from vllm_gate.sizing.gpus import GPU_TYPES, UnknownGpuType, gpu_type
from vllm_gate.sizing.guide import guide
from vllm_gate.sizing.report import LEGEND, header, rows, text_table
from vllm_gate.spec import load_spec

__all__ = ["size"]


@click.command()
@click.argument("model", required=False)
@click.option("--gpu-type", "gpu_name", metavar="T", help="One GPU type (default: every one the table knows).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a spec field (dotted path, YAML value); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records, one per GPU type (bytes and tokens).")
@click.option("--guide", "as_guide", is_flag=True,
              help="Print docs/gpu-requirements.md for every spec in models/ instead.")
def size(model: str | None, gpu_name: str | None, overrides: tuple[str, ...], as_json: bool, as_guide: bool) -> None:
    """Estimate MODEL's KV cache on GPU types: the largest max_model_len and the load it holds."""
    if as_guide:
        click.echo(guide(MODELS_DIR), nl=False)
        return
    if model is None:
        raise InvalidInput("give a MODEL (a name in models/ or a spec path), or --guide")
    with reported_errors():
        spec = load_spec(model, MODELS_DIR, list(overrides))
    if spec.architecture is None:
        raise InvalidInput(f"{spec.name}: the spec has no architecture section; sizing needs its layers, KV heads, "
                           "head dim and weights (see models/llama3.yaml)")
    try:
        gpus = [gpu_type(gpu_name)] if gpu_name else list(GPU_TYPES)
    except UnknownGpuType as exc:
        raise InvalidInput(f"--gpu-type: {exc}") from None
    with reported_errors():
        records = rows(spec, gpus)
    if as_json:
        click.echo(json.dumps({"model": spec.name, "gpu_memory_utilization": spec.vllm.gpu_memory_utilization,
                               "max_model_len": spec.vllm.max_model_len, "gpu_types": records}, indent=2))
        return
    click.echo(header(spec))
    click.echo(text_table(records))
    click.echo(LEGEND)
