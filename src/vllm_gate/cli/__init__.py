"""Console scripts on top of the library: ``vllm-gate`` (render, cluster) and ``ias-admin`` (the model
registry). Thin: each command parses, calls one library entry point and maps errors to exit codes."""
