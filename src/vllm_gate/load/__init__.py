"""Load against the model server: the raw per-request samples every runner returns (``samples``), the local
Locust process (``local``) and the in-cluster distributed Locust pods (``incluster``, ``pods``) behind one
``LoadRunner`` interface, and the SLO statistics computed from the samples (``slo``). May import ``base``,
``spec`` and ``deploy``."""
