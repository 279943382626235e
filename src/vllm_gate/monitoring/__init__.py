"""Monitoring the candidate: Prometheus queries for the vLLM families and GPU series, GPU readings and their
sources (dcgm-exporter through Prometheus, nvidia-smi in the pod, recorded telemetry) and the judgments the
monitoring and gpu suites make. May import the layers below it: ``base``, ``spec``, ``deploy``, ``load`` and
``checks``."""
