// Module router-standin: a stand-in for the platform's API router, for rehearsals on the local cluster. It
// does what the router does for the gate's purposes: reads the enabled rows of model_mappings through a DSN,
// maps a request's model to its backend_url and proxies OpenAI-compatible requests (streams included).
module vllm-gate/router-standin

go 1.25.0

require github.com/jackc/pgx/v5 v5.7.6

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	golang.org/x/crypto v0.37.0 // indirect
	golang.org/x/text v0.24.0 // indirect
)
