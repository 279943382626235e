"""Console scripts: ``vllm-gate`` (render, cluster) and ``ias-admin`` (the model registry)."""
