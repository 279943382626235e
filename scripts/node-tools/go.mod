// Module nodetools holds the tiny static programs the local cluster's node images carry:
// the sandbox ("pause") process and the HTTP client of probe pods. Standard library only.
module vllm-gate/nodetools

go 1.25.0
