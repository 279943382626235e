"""What answers beside the local cluster: the simulator stand-in per model pod on a KWOK node, port-forwards to
pods and Services, a real Prometheus scraping them and a recorded dcgm-exporter. May import ``base``, ``checks``,
``monitoring`` and ``cluster`` modules outside ``node`` and ``dataplane``."""
