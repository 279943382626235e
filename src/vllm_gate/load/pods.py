"""What an in-cluster load test creates: one ConfigMap (the locustfile and its settings), a Locust master pod and
its workers, sized from the load profile, all labelled and annotated so that a crashed run's leftovers are found."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vllm_gate.base.pod_owner import never_ready
from vllm_gate.base.tools import LOADTESTS_DIR
from vllm_gate.load.profile import STOP_TIMEOUT_S
from vllm_gate.spec import Load, RampProfile, RateProfile, UsersProfile

LOAD_LABEL = "vllm-gate/load"  # the run's id, on every pod and ConfigMap of an in-cluster load test
ROLE_LABEL = "vllm-gate/load-role"  # master or worker
TARGET_ANNOTATION = "vllm-gate/load-target"  # the URL it loads: a leftover aimed at the same model always goes
EXPIRES_ANNOTATION = "vllm-gate/load-expires"  # unix time after which it is a leftover, whatever it loads
MASTER, WORKER = "master", "worker"
# Streams one Locust worker drives with its TTFT within 5 % of the simulator's (TTFT 200 ms, ITL 20 ms, 128 prompt /
# 64 output tokens; bench/incluster_load.py, one worker pod on the local cluster's real node, these 2 cores shared
# with the simulator, 2026-11-27): 256 streams, the simulator's max-num-seqs, at TTFT p95 +2.0 % and +2.5 % in two
# runs; 1, 2 and 4 workers at 128 streams measured alike.
USERS_PER_WORKER = 256
MASTER_PORT = 5557  # Locust's default --master-bind-port
WORKERS_CONNECT_S = 120  # the master gives up when its workers have not all connected by then (image, scheduling)
LOCUST_UID = 1000  # the locust user of the upstream image (and of the local node's)
CONFIG_DIR = "/etc/vllm-gate"
RECORDS_DIR = "/var/lib/vllm-gate"
SAMPLES_FILE = f"{RECORDS_DIR}/samples.jsonl"
LOCUST_CONTAINER = "locust"
RECORDS_CONTAINER = "records"  # keeps the master pod, and its samples file, after Locust exits
PROFILE_KEY, ARRIVALS_KEY = "VLLM_GATE_PROFILE", "VLLM_GATE_ARRIVAL_USERS"
WORKER_RESOURCES = {"requests": {"cpu": "1", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}  # one core: gevent
MASTER_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
RECORDS_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}
RECORDS_SIZE = "2Gi"
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": LOCUST_UID, "runAsGroup": LOCUST_UID,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                      "readOnlyRootFilesystem": True}


def streams(load: Load) -> int:
    """The most requests the profile keeps in flight at once."""
    p = load.profile
    if isinstance(p, UsersProfile):
        return p.users
    if isinstance(p, RampProfile):
        return max(p.start_users, p.end_users)
    assert isinstance(p, RateProfile)
    return p.max_users


def worker_count(load: Load, users_per_worker: int = USERS_PER_WORKER) -> int:
    """Workers for ``load``: its streams at ``users_per_worker`` each, never more workers than streams."""
    if users_per_worker < 1:
        raise ValueError(f"users per worker must be 1 or more, not {users_per_worker}")
    return max(1, math.ceil(streams(load) / users_per_worker))


@dataclass(frozen=True)
class LoadPlan:
    """One in-cluster load test: where it runs, whom it loads, with what, as whom."""

    run_id: str
    namespace: str
    router_labels: Mapping[str, str]
    url: str  # the model Service's cluster DNS URL
    served_model: str
    load: Load
    image: str
    workers: int
    expires_at: int  # unix time: the pods' active deadline ends by then, and a later run removes what is left
    active_deadline_s: int

    @property
    def configmap(self) -> str:
        return f"vllm-gate-load-{self.run_id}"

    @property
    def master(self) -> str:
        return f"vllm-gate-load-{self.run_id}-{MASTER}"

    @property
    def worker_names(self) -> list[str]:
        return [f"vllm-gate-load-{self.run_id}-{WORKER}-{i}" for i in range(self.workers)]

    def describe(self) -> str:
        """One line for the terminal and the report: where the load comes from."""
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        return (f"load: measured in-cluster: Locust {workers} with the router's labels and a master "
                f"({self.image}) as pods in {self.namespace}, against {self.url}")

    def metadata(self, name: str, role: str | None = None) -> dict[str, Any]:
        labels = {LOAD_LABEL: self.run_id}
        if role == WORKER:
            # The router's labels: the NetworkPolicy admits the workers exactly as it admits the router. The master
            # never calls the model, so it does not carry them.
            labels = {**self.router_labels, **labels, ROLE_LABEL: role}
        elif role is not None:
            labels[ROLE_LABEL] = role
        return {"name": name, "namespace": self.namespace, "labels": labels,
                "annotations": {TARGET_ANNOTATION: self.url, EXPIRES_ANNOTATION: str(self.expires_at)}}


def locust_conf(plan: LoadPlan, duration_s: float) -> str:
    """The master's settings, in Locust's config-file format (the workers get theirs from the master)."""
    settings: dict[str, object] = {
        "locustfile": f"{CONFIG_DIR}/locustfile.py", "headless": "true", "host": plan.url, "only-summary": "true",
        "stop-timeout": STOP_TIMEOUT_S, "exit-code-on-error": 0, "served-model": plan.served_model,
        "prompt-tokens": plan.load.prompt_tokens, "output-tokens": plan.load.output_tokens,
        "samples-file": SAMPLES_FILE, "run-seconds": f"{duration_s:g}",
        "master-bind-port": MASTER_PORT, "expect-workers": plan.workers,
        "expect-workers-max-wait": WORKERS_CONNECT_S}
    p = plan.load.profile
    if isinstance(p, UsersProfile):
        settings |= {"users": p.users, "spawn-rate": p.users}
    elif isinstance(p, RateProfile):
        settings |= {"users": plan.workers, "spawn-rate": plan.workers}  # one arrival user per worker
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def configmap_manifest(plan: LoadPlan, duration_s: float) -> dict[str, Any]:
    """The locustfile, the master's settings and the locustfile's environment (profile, arrival users)."""
    arrival_users = plan.workers if isinstance(plan.load.profile, RateProfile) else 1
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": plan.metadata(plan.configmap),
            "data": {"locustfile.py": (LOADTESTS_DIR / "locustfile.py").read_text(),
                     "locust.conf": locust_conf(plan, duration_s),
                     PROFILE_KEY: plan.load.profile.model_dump_json(), ARRIVALS_KEY: str(arrival_users)}}


def _locust_container(plan: LoadPlan, args: list[str], resources: dict[str, Any],
                      mounts: list[dict[str, Any]]) -> dict[str, Any]:
    env = [{"name": key, "valueFrom": {"configMapKeyRef": {"name": plan.configmap, "key": key}}}
           for key in (PROFILE_KEY, ARRIVALS_KEY)]
    return {
        # No command: the image's entrypoint is locust (upstream's ENTRYPOINT ["locust"]), these are its arguments.
        "name": LOCUST_CONTAINER, "image": plan.image, "imagePullPolicy": "IfNotPresent", "args": args, "env": env,
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, *mounts],
        "resources": resources, "securityContext": CONTAINER_SECURITY,
        "readinessProbe": never_ready(plan.active_deadline_s),  # never an endpoint of the router's Service
    }


def _pod(plan: LoadPlan, name: str, role: str, containers: list[dict[str, Any]],
         extra_volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": plan.metadata(name, role),
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            # A gate that crashed leaves pods that stop loading the model by themselves.
            "activeDeadlineSeconds": plan.active_deadline_s,
            "securityContext": POD_SECURITY, "containers": containers,
            "volumes": [{"name": "config", "configMap": {"name": plan.configmap}}, *extra_volumes],
        },
    }


def master_manifest(plan: LoadPlan) -> dict[str, Any]:
    """The master: Locust with the settings file, and a second container that outlives it holding the samples."""
    records = {"name": "records", "mountPath": RECORDS_DIR}
    locust = _locust_container(plan, ["--config", f"{CONFIG_DIR}/locust.conf", "--master"], MASTER_RESOURCES,
                               [records])
    holder = {"name": RECORDS_CONTAINER, "image": plan.image, "imagePullPolicy": "IfNotPresent",
              "command": ["python3", "-c", f"import time; time.sleep({plan.active_deadline_s})"],
              "volumeMounts": [{**records, "readOnly": True}], "resources": RECORDS_RESOURCES,
              "securityContext": CONTAINER_SECURITY}
    return _pod(plan, plan.master, MASTER, [locust, holder],
                [{"name": "records", "emptyDir": {"sizeLimit": RECORDS_SIZE}}])


def worker_manifest(plan: LoadPlan, name: str, master_ip: str) -> dict[str, Any]:
    """One worker: the locustfile, the master's address; users, options and the host come from the master."""
    args = ["--locustfile", f"{CONFIG_DIR}/locustfile.py", "--worker", "--master-host", master_ip,
            "--master-port", str(MASTER_PORT)]
    return _pod(plan, name, WORKER, [_locust_container(plan, args, WORKER_RESOURCES, [])], [])


def read_progress(line: str, mark: str) -> dict[str, Any] | None:
    """The JSON object after ``mark`` on a log line of the master, or None when the line is not one."""
    _, found, rest = line.partition(mark)
    if not found:
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
