"""What answers beside the local cluster: the simulator stand-in per model pod on a KWOK node, port-forwards to
pods and Services, a real Prometheus scraping them and a recorded dcgm-exporter. May import every layer below
``cluster``, the modules every provider shares (``cluster.base``, ``cluster.children``, ``cluster.gpu_nodes``)
and ``cluster.node``; never the providers above it."""
