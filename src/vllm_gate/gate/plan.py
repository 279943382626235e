"""A model's run as it starts: its report's name, its mode and required checks, where it may register and runs."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vllm_gate.base.errors import GateError
from vllm_gate.base.kube import api_client
from vllm_gate.base.secret import Secret
from vllm_gate.base.tools import STATE_ROOT
from vllm_gate.cluster.base import Cluster
from vllm_gate.cluster.dataplane import vllm_cpu
from vllm_gate.cluster.dataplane.sim import sim_name
from vllm_gate.cluster.local import LocalCluster
from vllm_gate.cluster.node.config import NodeNetwork
from vllm_gate.cluster.node.vllm_image import engine_version
from vllm_gate.gate.run import GateRun, PromotionRecord, Registry
from vllm_gate.registry import db
from vllm_gate.registry.db import DatabaseUnreachable
from vllm_gate.registry.rehearsal import refuse_rehearsal_registry
from vllm_gate.spec import ModelSpec
from vllm_gate.verdict.contract import Mode
from vllm_gate.verdict.selection import ALL


def report_name(given: list[str], specs: list[ModelSpec]) -> str:
    if len(specs) == 1:
        return specs[0].name
    return ALL if ALL in given else "+".join(spec.name for spec in specs)


def new_run(spec: ModelSpec, cluster: Cluster | None, endpoint: str | None, report: Path,
            database_url: Secret | None, evidence: Path | None, *, compare_last: bool,
            promotion: str = "candidate") -> GateRun:
    """One model's run: its mode, required checks and where it may register, known before collection."""
    containers = bool(cluster and cluster.capabilities.runs_containers)
    run = GateRun(spec=spec, cluster=cluster.describe() if cluster else f"none (--endpoint-url {endpoint})",
                  report_path=report, evidence_dir=evidence, capabilities=cluster.capabilities if cluster else None,
                  mode=Mode.ENDPOINT if endpoint else Mode.CERTIFICATION,
                  containers=containers, compare_last=compare_last, promotion=PromotionRecord(mode=promotion))
    run.require()
    if spec.engine == "sim":
        run.rehearsal(f"simulator: {sim_name()}")
    elif cluster is not None and cluster.capabilities.engine == "vllm-cpu":
        run.rehearsal_on_real_engine(vllm_cpu.describe(spec, spec.image.tag.removeprefix("v")))
    if run.mode is Mode.REHEARSAL:  # until the rehearsal registry starts (with the deploy), it has none
        run.registry = Registry(None, "a rehearsal writes only the rehearsal registry, and this run did not "
                                "get as far as starting it",
                                untouched=db.redact_dsn(database_url.reveal()) if database_url else None)
    elif database_url:
        # Where a failed or partial certification is recorded; a rehearsal found later moves to its own registry.
        run.registry = Registry(database_url, db.redact_dsn(database_url.reveal()))
    return run


# The simulator answers within a second of its container starting; its pod on a loaded two-core node is Ready in
# under ten (measured: ../shared/notes/local-real-pods.md). The spec's budget is for downloading its weights.
SIM_STARTUP_BUDGET_S = 180


def engine_specs(cluster: Cluster, specs: list[ModelSpec], progress: Callable[[str], None], *,
                 real_engine_required: bool = False) -> list[ModelSpec]:
    """The specs as this cluster runs them: as written on a GPU pool; where it has no GPUs, with the simulator, or
    with the real engine's CPU build and a tiny model carrying each spec's tokenizer (the simulator for a spec none
    carries, said here; a GateError instead where the real engine was required)."""
    engine = cluster.capabilities.engine
    if engine == "vllm":
        return specs
    version = engine_version() if engine == "vllm-cpu" else ""
    adapted: list[ModelSpec] = []
    for spec in specs:
        why_not = vllm_cpu.serves(spec) if engine == "vllm-cpu" else "no GPUs there"
        if spec.engine != "vllm":
            adapted.append(spec)
        elif why_not is None:
            adapted.append(vllm_cpu.engine_spec(spec, version))
        else:  # the same chart runs the simulator in place of vLLM
            if engine == "vllm-cpu" and real_engine_required:
                raise GateError(f"--local-engine vllm: {spec.name}: {why_not.split(':')[0]}")
            if engine == "vllm-cpu":
                progress(f"vllm-gate: {spec.name}: {why_not}")
            startup = spec.startup.model_copy(update={"timeout_s": min(spec.startup.timeout_s, SIM_STARTUP_BUDGET_S)})
            adapted.append(spec.model_copy(update={"engine": "sim", "startup": startup}))
    return adapted


def engine_values(run: GateRun, cluster: Cluster, progress: Callable[[str], None]) -> dict[str, Any]:
    """The chart values the run's engine adds: the real engine's volumes (its environment, the tiny model). A
    GateError where the real engine was chosen but the cluster cannot run it after all (its real node would not
    start)."""
    if run.stands_in is None or run.spec.engine != "vllm":  # the real engine was not chosen for this run
        return {}
    if cluster.capabilities.engine != "vllm-cpu":
        raise GateError(f"the real engine was chosen for {run.spec.name}, but {cluster.describe()} cannot run it "
                        f"now ({cluster.capabilities.limits}): rerun with --local-engine sim")
    return vllm_cpu.chart_overlay(vllm_cpu.tiny_model_cache(run.spec, progress))


def on_cluster(run: GateRun, cluster: Cluster) -> None:
    """Note in the model's run where it is deployed: the undo acts there and nowhere else."""
    run.cluster = cluster.describe()
    run.kubeconfig, run.context = cluster.kubeconfig, cluster.context
    # Regressions compare runs on the same cluster: the local one is a new one each run on this machine; any other
    # is known by its API server (a context is only a kubeconfig's local name).
    run.cluster_key = (f"local:{socket.gethostname()}" if cluster.kind == "local" else
                       f"{cluster.kind}:{api_client(cluster.kubeconfig, cluster.context).configuration.host}")


def serves_rehearsal_registry(cluster: Cluster) -> bool:
    """Whether a passed rehearsal here takes over from the last one (row switched, previous retired): only on a local
    cluster (embedded, or one ``vllm-gate cluster up`` started: its kubeconfig is under the gate's state directory),
    whose API-router stand-in reads the rehearsal registry. Anywhere else a rehearsal is undone whatever its verdict.
    """
    if cluster.kind == "local":
        return True
    kubeconfig = cluster.kubeconfig.resolve() if cluster.kubeconfig else None
    return kubeconfig is not None and STATE_ROOT.resolve() in kubeconfig.parents


def pods_reach(cluster: Cluster | None) -> tuple[str, str, int] | None:
    """Where a local cluster's pods reach this machine (its node link's host address), the network they come from
    and the one port of this machine they may reach besides the API server's, for the rehearsal registry the
    API-router stand-in reads; None where no stand-in runs."""
    if cluster is None or not cluster.capabilities.runs_containers or not serves_rehearsal_registry(cluster):
        return None
    network = cluster.network if isinstance(cluster, LocalCluster) else NodeNetwork()
    try:  # the node link exists only while a real node runs on this machine
        with socket.socket() as sock:
            sock.bind((network.host_address, 0))
    except OSError:
        return None
    return network.host_address, network.supernet, network.registry_port


def refuse_the_rehearsal_registry(registry: Registry) -> None:
    """Before deploying: a certification will not register in the rehearsal registry, so do not start one there.

    An unreachable registry is left to the registration checks, which say so.
    """
    if registry.dsn is None:
        return
    try:
        conn = db.connect(registry.dsn)
    except DatabaseUnreachable:
        return
    try:
        refuse_rehearsal_registry(conn, registry.description)
    finally:
        conn.close()
