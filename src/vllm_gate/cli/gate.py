"""The ``vllm-gate`` console script: render a model's manifests, size it, run the embedded local cluster."""

from __future__ import annotations

import click

from vllm_gate.cli.cluster import cluster
from vllm_gate.cli.render import render
from vllm_gate.cli.size import size

__all__ = ["main"]

# Click re-flows help text into paragraphs; a paragraph that starts with a line holding only \b keeps its lines.
HELP = """Render a model's manifests and run the embedded local cluster; the gate itself is `pytest suites/`.

\b
Examples:
  vllm-gate render llama3
  vllm-gate render llama3 --set engine=sim
  vllm-gate size llama3 --gpu-type l4 --set vllm.max_model_len=32768
  eval "$(vllm-gate cluster up)" && kubectl get nodes
  pytest suites/ --model llama3 --cluster existing
  vllm-gate cluster down
"""


@click.group(help=HELP)
@click.version_option(package_name="vllm-gate")
def main() -> None:
    pass


main.add_command(render)
main.add_command(cluster)
main.add_command(size)

if __name__ == "__main__":
    main()
