package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// defaultPodAnnotationsFile is where the chart (engine: sim) mounts the pod's metadata.annotations as a
// downward API file. Inside a container the stand-in cannot see its pod any other way; the llm-d image,
// which refuses the stand-in's flags, ignores the file.
const defaultPodAnnotationsFile = "/etc/vllm-gate/podinfo/annotations"

// annotationFlags maps the chart's simulated-model annotations (vllm.simModelAnnotations) to the
// stand-in's flags; vllm_gate.cluster.dataplane.sim.STANDIN_ANNOTATIONS holds the same pairs for the host-side data plane.
var annotationFlags = map[string]string{
	"vllm-gate/sim-chat-template": "chat-template",
	"vllm-gate/sim-eos-after":     "eos-after",
	"vllm-gate/sim-answer-salt":   "answer-salt",
}

// parseDownwardAPI reads the kubelet's downward API format for a map: one `key="value"` line per
// entry, the value quoted as Go's %q quotes it (so strconv.Unquote undoes it exactly).
func parseDownwardAPI(data string) (map[string]string, error) {
	out := map[string]string{}
	for n, line := range strings.Split(data, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		key, quoted, ok := strings.Cut(line, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("line %d: want key=\"value\", got %q", n+1, line)
		}
		value, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("line %d: value of %s is not a quoted string: %q", n+1, key, quoted)
		}
		out[key] = value
	}
	return out, nil
}

// applyPodAnnotations sets the flags named by the pod's vllm-gate/sim-* annotations from the file at
// path, unless the command line set them: explicit flags win. A missing file at the default path
// means "not in a chart-made pod" and changes nothing; a missing file named on the command line is
// an error.
func applyPodAnnotations(flags *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !flags.Changed("pod-annotations-file") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--pod-annotations-file: %w", err)
	}
	annotations, err := parseDownwardAPI(string(data))
	if err != nil {
		return fmt.Errorf("--pod-annotations-file %s: %w", path, err)
	}
	keys := make([]string, 0, len(annotationFlags))
	for key := range annotationFlags {
		keys = append(keys, key)
	}
	sort.Strings(keys) // the first bad annotation reported is always the same one
	for _, key := range keys {
		value, found := annotations[key]
		name := annotationFlags[key]
		if !found || flags.Changed(name) {
			continue
		}
		if err := flags.Set(name, value); err != nil {
			return fmt.Errorf("--pod-annotations-file %s: annotation %s=%q: %w", path, key, value, err)
		}
	}
	return nil
}
