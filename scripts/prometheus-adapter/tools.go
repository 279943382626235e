//go:build tools

// Package tools pins prometheus-adapter's command in this module (built with `go build <package>`).
package tools

import _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
