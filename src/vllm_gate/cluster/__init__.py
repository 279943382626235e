"""Where the gate deploys: an existing cluster, a kind cluster, or the embedded local cluster."""
