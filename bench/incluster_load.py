"""In-cluster Locust (master + workers as pods) against the same workload through kubectl port-forward.

    .venv/bin/python bench/incluster_load.py [--duration 20] [--streams 32 64 128 256] [--workers 1 2 4]
        [--workers-streams 128] [--forward-streams 64]

On the local cluster's real node the chart's simulator pod answers with TTFT 200 ms and ITL 20 ms (no spread,
max-num-seqs 256); prompts 128 tokens, answers 64. Three tables: one worker at growing streams (how many it drives
within 5 % TTFT error), 1, 2 and 4 workers at the same streams (throughput), and the same workload in-cluster and
through port-forward side by side. Columns are like-for-like with other tools: TTFT; ITL as every gap between
content chunks (vLLM bench / inference-perf's ITL); TPOT = (e2e - TTFT) / (tokens - 1) per request, which is
GuideLLM's and AIPerf's "ITL".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from kubernetes import client

from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.cluster.dataplane.portforward import PortForward
from vllm_gate.cluster.local import GpuPool, LocalCluster
from vllm_gate.cluster.node.locust_image import default_image
from vllm_gate.deploy.release import ensure_namespace, install_or_upgrade
from vllm_gate.deploy.rollout import RolloutTarget, wait_ready
from vllm_gate.deploy.target import in_place
from vllm_gate.deploy.values import release_fullname
from vllm_gate.load.incluster import run_incluster_load
from vllm_gate.load.local import run_load
from vllm_gate.load.samples import LoadRun
from vllm_gate.load.slo import load_stats
from vllm_gate.spec import ModelSpec, load_spec

TTFT_MS, ITL_MS = 200.0, 20.0
NS = "bench-load"
ROLLOUT_TIMEOUT_S = 180


def spec_for(streams: int, duration: float) -> ModelSpec:
    return load_spec("llama3", MODELS_DIR, [
        "engine=sim", f"namespace={NS}", f"rehearsal.ttft_ms={TTFT_MS}", f"rehearsal.itl_ms={ITL_MS}",
        "rehearsal.ttft_std_ms=0", "rehearsal.itl_std_ms=0", "load.prompt_tokens=128", "load.output_tokens=64",
        f"load.profile={{kind: users, users: {streams}, duration_s: {duration}}}"])


def row(path: str, workers: str, streams: int, run: LoadRun) -> str:
    s = load_stats(run.samples)

    def err(measured: float, truth: float) -> str:
        return f"{measured:6.1f} ({100 * (measured - truth) / truth:+5.1f}%)"

    return (f"{path:13} {workers:>7} {streams:>7} | TTFT p50 {err(s.ttft_ms[50], TTFT_MS)} p95 "
            f"{err(s.ttft_ms[95], TTFT_MS)} | ITL p50 {err(s.itl_ms[50], ITL_MS)} p95 {err(s.itl_ms[95], ITL_MS)} | "
            f"TPOT p50 {err(s.tpot_ms[50], ITL_MS)} | {s.request_rate:6.2f} req/s {s.output_tokens_per_s:8.1f} tok/s "
            f"| {s.requests:5} req {s.errors} err")


HEADER = (f"{'path':13} {'workers':>7} {'streams':>7} | TTFT (ms, error vs {TTFT_MS:.0f}) | "
          f"ITL every gap (ms, vs {ITL_MS:.0f}) | TPOT per request (GuideLLM's/AIPerf's \"ITL\") | rates")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--streams", type=int, nargs="*", default=[32, 64, 128, 256],
                        help="one worker at each of these streams")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--workers-streams", type=int, default=128, help="streams for the workers table")
    parser.add_argument("--forward-streams", type=int, default=64, help="streams for in-cluster vs port-forward")
    args = parser.parse_args()
    print(f"simulator pod: TTFT {TTFT_MS:.0f} ms, ITL {ITL_MS:.0f} ms, no spread; prompt 128, output 64 tokens; "
          f"{args.duration:.0f} s per run; {os.cpu_count()} CPUs shared by everything", flush=True)
    cluster = LocalCluster(name=f"bench-load-{os.getpid()}", pool=GpuPool(nodes=1), data_plane=False,
                           real_node=True, progress=lambda _m: None)
    cluster.start()
    try:
        api = api_client(cluster.kubeconfig, cluster.context)
        base = spec_for(1, args.duration)
        created = ensure_namespace(client.CoreV1Api(api), NS)
        install_or_upgrade(base, in_place(base), cluster.kubeconfig, cluster.context, created_namespace=created)
        wait_ready(api, RolloutTarget(NS, release_fullname(base.name), f"app.kubernetes.io/instance={base.name}"),
                   ROLLOUT_TIMEOUT_S, progress=lambda _m: None)

        def incluster(streams: int, workers: int, workdir: Path) -> LoadRun:
            per_worker = -(-streams // workers)
            spec = spec_for(streams, args.duration)
            return run_incluster_load(api, spec, spec.in_cluster_url, image=default_image(), workdir=workdir,
                                      progress=lambda _m: None, kubeconfig=cluster.kubeconfig,
                                      context=cluster.context, users_per_worker=per_worker).load

        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            if args.streams:
                print(f"\none worker, growing streams\n{HEADER}", flush=True)
            for streams in args.streams:
                print(row("in-cluster", "1", streams, incluster(streams, 1, work / f"s{streams}")), flush=True)
            if args.workers:
                print(f"\nworkers at {args.workers_streams} streams\n{HEADER}", flush=True)
            for workers in args.workers:
                run = incluster(args.workers_streams, workers, work / f"w{workers}")
                print(row("in-cluster", str(workers), args.workers_streams, run), flush=True)
            streams = args.forward_streams
            print(f"\nin-cluster and through port-forward at {streams} streams\n{HEADER}", flush=True)
            print(row("in-cluster", "1", streams, incluster(streams, 1, work / "pf-in")), flush=True)
            with PortForward(NS, f"svc/{base.service.name}", base.service.port, kubeconfig=cluster.kubeconfig,
                             context=cluster.context) as forward:
                started = time.monotonic()
                run = run_load(forward.url, base.served_name, spec_for(streams, args.duration).load, work / "pf",
                               lambda _m: None)
                print(row("port-forward", "local", streams, run) + f" | {time.monotonic() - started:.0f} s",
                      flush=True)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
