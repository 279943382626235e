// Command vllm-sim-standin serves vLLM's OpenAI-compatible API with configurable latency and no
// model. It stands in for github.com/llm-d/llm-d-inference-sim, which the Go module proxy here
// does not serve: it takes the same flag names (a subset), rejects flags that simulator rejects,
// and serves the same endpoints and vllm: metric names, so either binary can run the tests.
//
// Three flags are its own (--chat-template, --eos-after, --answer-salt): a simulated model for the
// gate's identity checks (tokenizer and chat template, stopping, answer drift), so that they run in
// every rehearsal. Its answers are simulated words, never a model's; see usageHeader.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
)

const usageHeader = `Usage: vllm-sim-standin --model NAME [flags]

Serves vLLM's OpenAI-compatible API (/v1/chat/completions, /v1/models, /health, /health/ready,
/metrics) with configurable latency and no model: a stand-in for llm-d-inference-sim, with the
same flag names (a subset). Answers are simulated words, not a model's.

The simulated model, for checks of tokenizer, chat template, stopping and answer drift:
  prompt tokens  usage.prompt_tokens is the token count of the conversation rendered with
                 --chat-template; a tokenizer counts each special token as one, each run of word
                 characters as one, and each other non-space character as one.
  stopping       without ignore_eos an answer stops (finish_reason "stop") after --eos-after
                 tokens when max_tokens allows more, else it is cut at max_tokens ("length");
                 with ignore_eos it is exactly max_tokens long.
  answers        a request with temperature 0 or a seed gets words that depend only on the
                 rendered prompt, the seed and --answer-salt: every process answers it alike.
--chat-template, --eos-after and --answer-salt are the stand-in's own: llm-d-inference-sim
refuses them. In a pod they come from its vllm-gate/sim-* annotations, which the chart mounts as a
downward API file (--pod-annotations-file); flags given on the command line win.

Flags:
`

type config struct {
	model            string
	servedNames      []string
	port             int
	maxModelLen      int
	maxNumSeqs       int
	ttft, ttftStdDev time.Duration
	itl, itlStdDev   time.Duration
	startupDuration  time.Duration
	failureRate      float64
	failureTypes     []string
	seed             int64
	mode             string
	chatTemplate     string
	eosAfter         int
	answerSalt       string
	vllmVersion      string
	blockSize        int
	kvCacheBlocks    int
	gpuMemoryUtil    float64
	ignoredTP        int
	ignoredEager     bool
	ignoredPrefix    bool
}

func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := pflag.NewFlagSet("vllm-sim-standin", pflag.ContinueOnError)
	fs.StringVar(&c.model, "model", os.Getenv("SIM_MODEL"), "model name (required)")
	served := fs.String("served-model-name", "", "space-separated served model names (default: --model)")
	fs.IntVar(&c.port, "port", 8000, "HTTP port")
	fs.IntVar(&c.maxModelLen, "max-model-len", 1024, "prompt + output token limit")
	fs.IntVar(&c.maxNumSeqs, "max-num-seqs", 5, "requests running at once; the rest wait")
	fs.DurationVar(&c.ttft, "time-to-first-token", 0, "time to the first output token")
	fs.DurationVar(&c.ttftStdDev, "time-to-first-token-std-dev", 0, "standard deviation of TTFT")
	fs.DurationVar(&c.itl, "inter-token-latency", 0, "time between output tokens")
	fs.DurationVar(&c.itlStdDev, "inter-token-latency-std-dev", 0, "standard deviation of ITL")
	fs.DurationVar(&c.startupDuration, "startup-duration", 0, "/health/ready answers 503 this long")
	fs.Float64Var(&c.failureRate, "failure-injection-rate", 0, "percent of requests that fail (0-100)")
	types := fs.String("failure-types", "", "comma-separated failure types to inject")
	fs.Int64Var(&c.seed, "seed", time.Now().UnixNano(), "random seed")
	fs.StringVar(&c.mode, "mode", "random", "echo or random")
	fs.StringVar(&c.chatTemplate, "chat-template", "none",
		"chat template counted in prompt tokens: "+strings.Join(chatTemplates, ", ")+" (stand-in only)")
	fs.IntVar(&c.eosAfter, "eos-after", 24,
		"without ignore_eos, answers stop after this many tokens; 0: never (stand-in only)")
	fs.StringVar(&c.answerSalt, "answer-salt", "",
		"changes every temperature-0 or seeded answer: a planted model change (stand-in only)")
	fs.StringVar(&c.vllmVersion, "vllm-version", "",
		"GET /version answers this, as vLLM's server answers its own version; empty: /version is not served "+
			"(stand-in only)")
	annotationsFile := fs.String("pod-annotations-file", defaultPodAnnotationsFile,
		"the pod's annotations (downward API); vllm-gate/sim-* set the stand-in's flags not given (stand-in only)")
	// What vllm:cache_config_info reports, as vLLM does (the stand-in keeps no KV cache of that size).
	fs.IntVar(&c.blockSize, "block-size", 16, "tokens per KV-cache block, as vLLM's")
	fs.IntVar(&c.kvCacheBlocks, "kv-cache-size", 1024, "KV-cache blocks reported (llm-d-inference-sim's flag)")
	fs.Float64Var(&c.gpuMemoryUtil, "gpu-memory-utilization", 0.9, "reported, as vLLM's")
	fs.IntVar(&c.ignoredTP, "tensor-parallel-size", 1, "accepted and ignored, as vLLM's")
	fs.BoolVar(&c.ignoredEager, "enforce-eager", false, "accepted and ignored, as vLLM's")
	fs.BoolVar(&c.ignoredPrefix, "enable-prefix-caching", false, "accepted and ignored, as vLLM's")
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, usageHeader)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := applyPodAnnotations(fs, *annotationsFile); err != nil {
		return nil, err
	}
	if c.model == "" {
		return nil, errors.New("--model is required")
	}
	c.servedNames = strings.Fields(*served)
	if len(c.servedNames) == 0 {
		c.servedNames = []string{c.model}
	}
	if *types != "" {
		c.failureTypes = strings.Split(*types, ",")
	}
	if c.failureRate < 0 || c.failureRate > 100 {
		return nil, fmt.Errorf("--failure-injection-rate %v: must be within 0-100", c.failureRate)
	}
	if c.mode != "echo" && c.mode != "random" {
		return nil, fmt.Errorf("--mode %q: must be echo or random", c.mode)
	}
	if !slices.Contains(chatTemplates, c.chatTemplate) {
		return nil, fmt.Errorf("--chat-template %q: must be one of %s", c.chatTemplate,
			strings.Join(chatTemplates, ", "))
	}
	if c.eosAfter < 0 {
		return nil, fmt.Errorf("--eos-after %d: must be 0 (never) or more", c.eosAfter)
	}
	return c, nil
}

type server struct {
	cfg     *config
	started time.Time
	slots   chan struct{}
	rngMu   sync.Mutex
	rng     *rand.Rand
	m       *metrics
}

func (s *server) gauss(mean, std time.Duration) time.Duration {
	if std == 0 {
		return mean
	}
	s.rngMu.Lock()
	d := time.Duration(s.rng.NormFloat64()*float64(std)) + mean
	s.rngMu.Unlock()
	if d < 0 {
		return 0
	}
	return d
}

func (s *server) chance(percent float64) bool {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64()*100 < percent
}

func (s *server) pick(n int) int {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Intn(n)
}

func (s *server) health(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }

func (s *server) ready(w http.ResponseWriter, _ *http.Request) {
	if time.Since(s.started) < s.cfg.startupDuration {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *server) models(w http.ResponseWriter, _ *http.Request) {
	data := make([]map[string]any, 0, len(s.cfg.servedNames))
	for _, n := range s.cfg.servedNames {
		data = append(data, map[string]any{
			"id": n, "object": "model", "created": s.started.Unix(), "owned_by": "vllm",
			"root": s.cfg.model, "parent": nil, "max_model_len": s.cfg.maxModelLen,
			// vLLM's ModelPermission, with its defaults (vllm/entrypoints/openai/protocol.py).
			"permission": []map[string]any{{
				"id": "modelperm-" + n, "object": "model_permission", "created": s.started.Unix(),
				"allow_create_engine": false, "allow_sampling": true, "allow_logprobs": true,
				"allow_search_indices": false, "allow_view": true, "allow_fine_tuning": false,
				"organization": "*", "group": nil, "is_blocking": false,
			}},
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vllm-sim-standin: %v\n", err)
		os.Exit(2)
	}
	s := &server{
		cfg: cfg, started: time.Now(), slots: make(chan struct{}, cfg.maxNumSeqs),
		rng: rand.New(rand.NewSource(cfg.seed)), m: newMetrics(cfg.servedNames[0], cacheConfig(cfg)),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /health/ready", s.ready)
	mux.HandleFunc("GET /v1/models", s.models)
	if s.cfg.vllmVersion != "" {
		mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]any{"version": s.cfg.vllmVersion})
		})
	}
	mux.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.registry, promhttp.HandlerOpts{}))

	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", cfg.port))
	if err != nil {
		fmt.Fprintf(os.Stderr, "vllm-sim-standin: %v\n", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("vllm-sim-standin: serving %v (model %s) on :%d", cfg.servedNames, cfg.model, cfg.port)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
