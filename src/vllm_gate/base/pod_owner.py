"""The short-lived pods the gate runs beside the router with the router's labels (probe, load and helm-test pods).

Those labels would make them the router's in two ways. Its own ReplicaSet would adopt them as orphans matching its
selector (and delete them as surplus, not-Ready ones first): a pod with a controller owner is never adopted, so each
run's pods are owned by a ConfigMap of that run, which also lets the garbage collector remove a crashed run's pods.
And its Service would list them as endpoints and send them the platform's traffic: they are never Ready.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

NOT_LISTENING_PORT = 1  # tcpmux: nothing in a pod listens there, so a TCP check on it never succeeds


def never_ready(lifetime_s: int) -> dict[str, Any]:
    """A readinessProbe that keeps a router-labelled pod out of every Service's ready endpoints: a pod without one
    is Ready as soon as its container runs. Its first check waits out the pod's life (no failed-probe events); one
    that ran would fail all the same."""
    return {"tcpSocket": {"port": NOT_LISTENING_PORT}, "initialDelaySeconds": lifetime_s + 1}


def controller_reference(owner: client.V1ConfigMap) -> dict[str, Any]:
    """The ownerReferences entry that makes ``owner`` the controller of a pod."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid,
            "controller": True, "blockOwnerDeletion": False}
