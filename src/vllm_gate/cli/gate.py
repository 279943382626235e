"""The ``vllm-gate`` console script.

Examples:

    vllm-gate render llama3
    vllm-gate render llama3 --set engine=sim
    eval "$(vllm-gate cluster up)" && kubectl get nodes
    vllm-gate cluster down
"""

from __future__ import annotations

import click

from vllm_gate.cli.cluster import cluster
from vllm_gate.cli.render import render

__all__ = ["main"]


@click.group(help=__doc__)
@click.version_option(package_name="vllm-gate")
def main() -> None:
    pass


main.add_command(render)
main.add_command(cluster)
