"""Destroy a local cluster when the process that owns it dies (crash, kill -9, closed terminal)."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from vllm_gate.cluster.local import destroy, pid_alive

POLL_S = 1.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_gate.cluster.watchdog")
    parser.add_argument("--parent", type=int, required=True, help="PID that owns the cluster")
    parser.add_argument("--name", required=True, help="local cluster name")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the owner's death (or SIGTERM) ends us
    while pid_alive(args.parent):
        time.sleep(POLL_S)
    destroy(args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
