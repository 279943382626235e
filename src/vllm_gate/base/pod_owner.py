"""Ownership of the short-lived pods the gate runs beside the router (probe and load pods).

They carry the router's labels, so the router's own ReplicaSet would adopt them as orphans matching its selector
(and delete them as surplus, not-Ready ones first). A pod with a controller owner is never adopted: each run's
pods are owned by a ConfigMap of that run, which also lets the garbage collector remove a crashed run's pods.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client


def controller_reference(owner: client.V1ConfigMap) -> dict[str, Any]:
    """The ownerReferences entry that makes ``owner`` the controller of a pod."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid,
            "controller": True, "blockOwnerDeletion": False}
