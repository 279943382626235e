"""The bottom layer: errors with one actionable line, secrets that never print, local ports, how a child
process ended, tool and project-file lookup, Kubernetes API clients by kubectl's kubeconfig rules, and pod
ownership. Nothing here knows about models, checks or runs: it imports no other vllm_gate package."""
