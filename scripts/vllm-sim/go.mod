// Module vllm-sim-standin: a stand-in for github.com/llm-d/llm-d-inference-sim, which the Go
// module proxy reachable here does not serve. Same flags (a subset, plus
// three of its own for a simulated model), endpoints and metric names.
module vllm-gate/vllm-sim-standin

go 1.25.0

require (
	github.com/prometheus/client_golang v1.21.1
	github.com/spf13/pflag v1.0.6
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/klauspost/compress v1.17.11 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_model v0.6.1 // indirect
	github.com/prometheus/common v0.62.0 // indirect
	github.com/prometheus/procfs v0.15.1 // indirect
	golang.org/x/sys v0.28.0 // indirect
	google.golang.org/protobuf v1.36.1 // indirect
)
