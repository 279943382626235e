"""Keep a named local cluster (and its data plane) running until SIGTERM: ``vllm-gate cluster up``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from vllm_gate.base.errors import GateError
from vllm_gate.base.tools import STATE_ROOT
from vllm_gate.cluster.local import LOCAL_NODES, GpuPool, LocalCluster


def state_file(name: str) -> Path:
    return STATE_ROOT / f"{name}.state.json"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_gate.cluster.supervisor")
    parser.add_argument("--name", required=True)
    parser.add_argument("--gpu-nodes", type=int, default=2)
    parser.add_argument("--node", choices=LOCAL_NODES, default="auto")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    state = state_file(args.name)
    try:
        cluster = LocalCluster(args.name, GpuPool(nodes=args.gpu_nodes), real_node=LOCAL_NODES[args.node])
        cluster.start()
    except GateError as exc:
        state.write_text(json.dumps({"error": exc.summary}))
        return 1
    state.write_text(json.dumps({"ready": True, "kubeconfig": str(cluster.kubeconfig), "context": cluster.context,
                                 "describe": cluster.describe(), "prometheus_url": cluster.prometheus_url}))
    try:
        stop.wait()
    finally:
        cluster.stop()
        state.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
