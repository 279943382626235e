"""Where the gate deploys. Providers behind one ``Cluster`` interface: ``existing`` (the real GPU pool,
by kubeconfig and context), ``kind`` and ``local`` (the embedded cluster), picked by ``resolve``. The local
cluster's real node (kubelet, containerd, its images) lives in ``node/``; what answers on it and beside it (the
simulator stand-in, port-forwards, Prometheus, recorded GPU telemetry) in ``dataplane/``. May import every layer
below ``gate``."""
