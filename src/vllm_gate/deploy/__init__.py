"""Putting a model on the cluster: the chart values rendered from a spec, Helm install/upgrade/undo and
helm test, the rollout watch that fails fast with a diagnosis, and the preflight that decides before Helm touches
the cluster whether the pool can hold the model. May import ``base`` and ``spec``."""
