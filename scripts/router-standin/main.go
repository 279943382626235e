// router-standin: a stand-in for the platform's API router (not the router itself), for rehearsals on the local
// cluster. Every --refresh it reads the enabled rows of model_mappings through the DSN in --dsn-file (a mounted
// Secret: the DSN is never an argument or a log line), and serves:
//
//	GET  /v1/models                  the enabled rows' names, as OpenAI's model list
//	POST /v1/chat/completions        proxied to the row's backend_url, "model" rewritten to upstream_model_id
//	POST /v1/completions             likewise; streams are passed through as they come (no buffering)
//	GET  /health                     200 once the table was read at least once
//	GET  /stats                      per backend_url: requests, failures, first and last sent; the table
//
// Each proxied answer carries X-Router-Backend: the backend_url it came from. With --key-file, /v1/* needs
// "Authorization: Bearer <key>". If the registry cannot be read, the last table is kept (and said in the log).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const backendHeader = "X-Router-Backend"
const maxBody = 16 << 20

type row struct {
	Backend  string `json:"backend_url"`
	Upstream string `json:"upstream_model_id"`
}

// counts: per backend, how many requests were proxied, how many failed, and when the first and last were sent
// (so a client can tell which backend served before and after a switch).
type counts struct {
	Requests int       `json:"requests"`
	Failures int       `json:"failures"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
}

type router struct {
	mu       sync.RWMutex
	table    map[string]row
	loadedAt time.Time
	loadErr  string
	stats    map[string]*counts
	key      string
	proxy    *httputil.ReverseProxy
}

func readTable(ctx context.Context, dsn string) (map[string]row, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT name, backend_url, coalesce(upstream_model_id, '') FROM model_mappings WHERE enabled")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	table := map[string]row{}
	for rows.Next() {
		var name string
		var r row
		if err := rows.Scan(&name, &r.Backend, &r.Upstream); err != nil {
			return nil, err
		}
		table[name] = r
	}
	return table, rows.Err()
}

// errorText puts a driver error on one line: pgx names host and user, never the password.
func errorText(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func (rt *router) refresh(ctx context.Context, dsn string) {
	table, err := readTable(ctx, dsn)
	if ctx.Err() != nil {
		return // shutting down: a read cut short says nothing about the registry
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err != nil {
		if rt.loadErr == "" {
			log.Printf("registry unreadable, keeping the last table (%d rows): %s", len(rt.table), errorText(err))
		}
		rt.loadErr = errorText(err)
		return
	}
	if rt.loadErr != "" {
		log.Printf("registry readable again")
	}
	rt.loadErr = ""
	for name, r := range table {
		if old, ok := rt.table[name]; !ok || old != r {
			log.Printf("table: %s -> %s (upstream model %q)", name, r.Backend, r.Upstream)
		}
	}
	for name := range rt.table {
		if _, ok := table[name]; !ok {
			log.Printf("table: %s removed or disabled", name)
		}
	}
	rt.table = table
	rt.loadedAt = time.Now()
}

func (rt *router) count(backend string, sent time.Time, failed bool) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	c := rt.stats[backend]
	if c == nil {
		c = &counts{First: sent}
		rt.stats[backend] = c
	}
	if sent.After(c.Last) {
		c.Last = sent
	}
	c.Requests++
	if failed {
		c.Failures++
	}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func openAIError(w http.ResponseWriter, status int, kind, message string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": message, "type": kind, "code": status}})
}

func (rt *router) authorized(w http.ResponseWriter, r *http.Request) bool {
	if rt.key == "" || r.Header.Get("Authorization") == "Bearer "+rt.key {
		return true
	}
	openAIError(w, http.StatusUnauthorized, "authentication_error", "missing or wrong API key")
	return false
}

func (rt *router) models(w http.ResponseWriter, r *http.Request) {
	if !rt.authorized(w, r) {
		return
	}
	rt.mu.RLock()
	names := make([]string, 0, len(rt.table))
	for name := range rt.table {
		names = append(names, name)
	}
	rt.mu.RUnlock()
	sort.Strings(names)
	data := make([]map[string]any, 0, len(names))
	for _, name := range names {
		data = append(data, map[string]any{"id": name, "object": "model", "owned_by": "router-standin"})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

type backendKey struct{}
type sentKey struct{}

func (rt *router) forward(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		openAIError(w, http.StatusMethodNotAllowed, "invalid_request_error", "use POST")
		return
	}
	if !rt.authorized(w, r) {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "could not read the body")
		return
	}
	var request map[string]any
	if err := json.Unmarshal(body, &request); err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "the body is not a JSON object")
		return
	}
	name, _ := request["model"].(string)
	rt.mu.RLock()
	target, ok := rt.table[name]
	rt.mu.RUnlock()
	if !ok {
		openAIError(w, http.StatusNotFound, "invalid_request_error", fmt.Sprintf("the model %q does not exist", name))
		return
	}
	backend, err := url.Parse(target.Backend)
	if err != nil {
		rt.count(target.Backend, time.Now().UTC(), true)
		openAIError(w, http.StatusBadGateway, "router_error", "the model's backend_url is not a URL")
		return
	}
	if target.Upstream != "" {
		request["model"] = target.Upstream
	}
	body, _ = json.Marshal(request)
	ctx := context.WithValue(context.WithValue(r.Context(), backendKey{}, target.Backend), sentKey{}, time.Now().UTC())
	out := r.Clone(ctx)
	out.URL.Scheme, out.URL.Host, out.Host = backend.Scheme, backend.Host, backend.Host
	out.URL.Path = strings.TrimSuffix(backend.Path, "/") + r.URL.Path
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	out.Header.Del("Authorization") // the router's key is not the model's
	w.Header().Set(backendHeader, target.Backend)
	rt.proxy.ServeHTTP(w, out)
}

func (rt *router) statsHandler(w http.ResponseWriter, _ *http.Request) {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	loaded := ""
	if !rt.loadedAt.IsZero() {
		loaded = rt.loadedAt.UTC().Format(time.RFC3339Nano)
	}
	writeJSON(w, http.StatusOK, map[string]any{"backends": rt.stats, "table": rt.table, "loaded_at": loaded,
		"registry_error": rt.loadErr})
}

func (rt *router) health(w http.ResponseWriter, _ *http.Request) {
	rt.mu.RLock()
	loaded := !rt.loadedAt.IsZero()
	rt.mu.RUnlock()
	if !loaded {
		http.Error(w, "the registry was never read", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

func main() {
	listen := flag.String("listen", ":8080", "address to serve on")
	dsnFile := flag.String("dsn-file", "/etc/router/dsn", "file holding the registry's DSN (a mounted Secret)")
	keyFile := flag.String("key-file", "", "file holding the API key clients must send (none: no key)")
	refresh := flag.Duration("refresh", 2*time.Second, "how often model_mappings is read again")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.LUTC)

	dsn, err := os.ReadFile(*dsnFile)
	if err != nil {
		log.Fatalf("reading the DSN: %v", err)
	}
	rt := &router{table: map[string]row{}, stats: map[string]*counts{}}
	if *keyFile != "" {
		key, err := os.ReadFile(*keyFile)
		if err != nil {
			log.Fatalf("reading the API key: %v", err)
		}
		rt.key = strings.TrimSpace(string(key))
	}
	rt.proxy = &httputil.ReverseProxy{
		Rewrite:       func(*httputil.ProxyRequest) {}, // the request is already aimed at its backend
		FlushInterval: -1,                              // streams: every chunk goes out as it comes
		ModifyResponse: func(resp *http.Response) error {
			backend, _ := resp.Request.Context().Value(backendKey{}).(string)
			sent, _ := resp.Request.Context().Value(sentKey{}).(time.Time)
			rt.count(backend, sent, resp.StatusCode >= 500)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			backend, _ := r.Context().Value(backendKey{}).(string)
			sent, _ := r.Context().Value(sentKey{}).(time.Time)
			rt.count(backend, sent, true)
			log.Printf("proxy to %s failed: %v", backend, err)
			openAIError(w, http.StatusBadGateway, "router_error", "the model's backend did not answer")
		},
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		ticker := time.NewTicker(*refresh)
		defer ticker.Stop()
		for {
			rt.refresh(ctx, strings.TrimSpace(string(dsn)))
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()

	mux := http.NewServeMux()
	mux.HandleFunc("/v1/models", rt.models)
	mux.HandleFunc("/v1/chat/completions", rt.forward)
	mux.HandleFunc("/v1/completions", rt.forward)
	mux.HandleFunc("/health", rt.health)
	mux.HandleFunc("/stats", rt.statsHandler)
	server := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	log.Printf("router-standin: serving %s, reading model_mappings every %s", *listen, *refresh)
	if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
