"""vllm-gate: a pytest deploy gate for vLLM model servers on Kubernetes."""

__version__ = "0.1.0"
