"""nvidia-smi run inside a model pod through the Kubernetes exec API (where no dcgm-exporter is scraped)."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from vllm_gate.monitoring.gpu import GpuReading, TelemetryError
from vllm_gate.monitoring.nvidia_smi import QUERY_ARGS, parse_query

EXEC_TIMEOUT_S = 20


def nvidia_smi_in_pod(api: client.ApiClient, namespace: str, pod: str, container: str) -> list[GpuReading]:
    """The pod's GPUs as ``nvidia-smi --query-gpu`` in its container sees them (the GPUs it was given)."""
    where = f"nvidia-smi in pod {namespace}/{pod} (container {container})"
    try:
        ws = stream(client.CoreV1Api(api).connect_get_namespaced_pod_exec, pod, namespace, container=container,
                    command=list(QUERY_ARGS), stderr=True, stdin=False, stdout=True, tty=False,
                    _preload_content=False, _request_timeout=EXEC_TIMEOUT_S)
        ws.run_forever(timeout=EXEC_TIMEOUT_S)
        out, err, code = ws.read_stdout(), ws.read_stderr(), ws.returncode
        ws.close()
    except ApiException as exc:
        raise TelemetryError(f"{where}: exec refused: HTTP {exc.status} {exc.reason}") from None
    except Exception as exc:  # the websocket client raises its own and OS errors: one named cause
        raise TelemetryError(f"{where}: exec failed: {type(exc).__name__}") from None
    if code != 0:
        raise TelemetryError(f"{where} exited {code}: {' '.join((err or out or '').split())[:200]}")
    return parse_query(out)
