"""What the suites assert, computed without pytest: inference and streaming, exposure and NetworkPolicy
shape, the active policy probe and its pod, /metrics families and deltas, identity (canary, stopping, drift) and
whether a registry backend URL reaches the model. May import ``base``, ``spec``, ``deploy`` and ``load``."""
