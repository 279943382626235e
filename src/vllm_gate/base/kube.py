"""Kubernetes API clients that follow kubectl's kubeconfig and context rules."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config
from kubernetes.client import ApiClient
from kubernetes.config.config_exception import ConfigException

from vllm_gate.base.errors import ClusterError

REQUEST_TIMEOUT_S = 15


def api_client(kubeconfig: Path | None, context: str | None) -> ApiClient:
    """Return a client for ``context`` of ``kubeconfig`` (None: $KUBECONFIG, then ~/.kube/config)."""
    try:
        return config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None,
                                             context=context, persist_config=False)
    except (ConfigException, FileNotFoundError, OSError) as exc:
        where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
        raise ClusterError(f"kubeconfig {where} (context {context or 'current'}): {exc}") from None


def current_context(kubeconfig: Path | None) -> str | None:
    """Return the current context's name, or None when there is no usable kubeconfig."""
    try:
        _, active = config.list_kube_config_contexts(config_file=str(kubeconfig) if kubeconfig else None)
    except (ConfigException, FileNotFoundError, OSError):
        return None
    return active["name"] if active else None


def server_version(api: ApiClient) -> str:
    """Return the API server's gitVersion, or raise ClusterError naming the server."""
    try:
        info = client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT_S)
    except Exception as exc:  # urllib3 and ApiException alike: one line either way
        reason = " ".join(str(exc).split())[:200]
        raise ClusterError(f"cannot reach the Kubernetes API at {api.configuration.host}: {reason}") from None
    return str(info.git_version)
