package main

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics carries vLLM's metric names (V1 engine, colon-prefixed) with the model_name label.
type metrics struct {
	registry                *prometheus.Registry
	running, waiting, kv    prometheus.Gauge
	promptTokens, genTokens prometheus.Counter
	success                 *prometheus.CounterVec
	ttft, itl, e2e, tpot    prometheus.Observer
}

// finishReasons are vLLM 0.32's FinishReason values (vllm/v1/engine/__init__.py), as label values.
var finishReasons = []string{"stop", "length", "abort", "error", "repetition"}

// cacheConfig is vllm:cache_config_info's labels, as vLLM 0.32's V1 engine sets them (vllm/v1/metrics/loggers.py: the
// cache config's fields, the engine index, no model_name) from the flags that set them in vLLM.
func cacheConfig(c *config) prometheus.Labels {
	return prometheus.Labels{
		"engine":                 "0",
		"block_size":             strconv.Itoa(c.blockSize),
		"cache_dtype":            "auto",
		"gpu_memory_utilization": strconv.FormatFloat(c.gpuMemoryUtil, 'f', -1, 64),
		"num_gpu_blocks":         strconv.Itoa(c.kvCacheBlocks),
		"kv_cache_size_tokens":   strconv.Itoa(c.kvCacheBlocks * c.blockSize),
		"enable_prefix_caching":  strconv.FormatBool(c.ignoredPrefix),
	}
}

// pythonBool writes a bool as vLLM's labels do (Python's str(bool)).
func pythonBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func newMetrics(model string, cache prometheus.Labels) *metrics {
	labels := prometheus.Labels{"model_name": model}
	r := prometheus.NewRegistry()
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels})
		r.MustRegister(g)
		return g
	}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels})
		r.MustRegister(c)
		return c
	}
	hist := func(name, help string, buckets []float64) prometheus.Observer {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: name, Help: help, ConstLabels: labels, Buckets: buckets})
		r.MustRegister(h)
		return h
	}
	latency := []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5,
		10, 20, 40, 80}
	m := &metrics{
		registry:     r,
		running:      gauge("vllm:num_requests_running", "Number of requests in model execution batches."),
		waiting:      gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
		kv:           gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
		promptTokens: counter("vllm:prompt_tokens_total", "Number of prefill tokens processed."),
		genTokens:    counter("vllm:generation_tokens_total", "Number of generation tokens processed."),
		ttft:         hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", latency),
		itl:          hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", latency),
		e2e:          hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", latency),
		tpot: hist("vllm:request_time_per_output_token_seconds",
			"Histogram of time per output token per request in seconds.", latency),
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "vllm:cache_config_info",
		Help: "Information of the LLMEngine CacheConfig", ConstLabels: cache})
	info.Set(1)
	r.MustRegister(info)
	m.success = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vllm:request_success_total", Help: "Count of successfully processed requests.",
		ConstLabels: labels}, []string{"finished_reason"})
	r.MustRegister(m.success)
	// vLLM exposes every finished_reason from its start, at zero (vllm/v1/metrics/loggers.py): so does the
	// stand-in, or a scrape before the first finished request would lack the family.
	for _, reason := range finishReasons {
		m.success.WithLabelValues(reason)
	}
	return m
}
