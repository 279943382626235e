package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content any    `json:"content"`
	} `json:"messages"`
	MaxTokens           *int `json:"max_tokens"`
	MaxCompletionTokens *int `json:"max_completion_tokens"`
	Stream              bool `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	IgnoreEOS   bool     `json:"ignore_eos"`
	Temperature *float64 `json:"temperature"`
	Seed        *int64   `json:"seed"`
}

// deterministic: a greedy (temperature 0) or seeded request gets the same answer every time.
func (r *chatRequest) deterministic() bool {
	return (r.Temperature != nil && *r.Temperature == 0) || r.Seed != nil
}

var failures = map[string]struct {
	status int
	kind   string
	msg    string
}{
	"rate_limit":      {http.StatusTooManyRequests, "RateLimitError", "Rate limit reached"},
	"invalid_api_key": {http.StatusUnauthorized, "AuthenticationError", "Invalid API key"},
	"context_length":  {http.StatusBadRequest, "BadRequestError", "This model's maximum context length is exceeded"},
	"server_error":    {http.StatusInternalServerError, "InternalServerError", "Internal server error"},
	"invalid_request": {http.StatusBadRequest, "BadRequestError", "Invalid request"},
	"model_not_found": {http.StatusNotFound, "NotFoundError", "The model does not exist"},
}

var words = strings.Fields("the quick brown fox jumps over a lazy dog while seven bright stars " +
	"watch quiet rivers run past old stone bridges toward distant green hills")

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func writeError(w http.ResponseWriter, status int, kind, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"message": msg, "type": kind, "param": nil, "code": status}, "object": "error"})
}

// contentText is a message's text: a string, or the text parts of a content list.
func contentText(content any) string {
	switch c := content.(type) {
	case string:
		return c
	case []any:
		var parts []string
		for _, p := range c {
			if part, ok := p.(map[string]any); ok && part["type"] == "text" {
				text, _ := part["text"].(string)
				parts = append(parts, text)
			}
		}
		return strings.Join(parts, "\n")
	}
	return ""
}

// prompt renders the conversation with the server's chat template and returns it with its token
// count and the messages' words (which echo mode repeats).
func (s *server) prompt(req *chatRequest) (string, int, []string) {
	msgs := make([]message, 0, len(req.Messages))
	var all []string
	for _, m := range req.Messages {
		text := contentText(m.Content)
		msgs = append(msgs, message{role: m.Role, content: text})
		all = append(all, strings.Fields(text)...)
	}
	rendered := render(s.cfg.chatTemplate, msgs)
	return rendered, countTokens(rendered), all
}

func (s *server) injectedFailure() (int, string, string, bool) {
	if s.cfg.failureRate == 0 || !s.chance(s.cfg.failureRate) {
		return 0, "", "", false
	}
	types := s.cfg.failureTypes
	if len(types) == 0 {
		for k := range failures {
			types = append(types, k)
		}
	}
	f, ok := failures[types[s.pick(len(types))]]
	if !ok {
		f = failures["server_error"]
	}
	return f.status, f.kind, f.msg, true
}

func (s *server) servesModel(name string) bool {
	for _, n := range s.cfg.servedNames {
		if n == name {
			return true
		}
	}
	return false
}

func (s *server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req chatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "BadRequestError", "invalid JSON body: "+err.Error())
		return
	}
	if !s.servesModel(req.Model) {
		writeError(w, http.StatusNotFound, "NotFoundError",
			fmt.Sprintf("The model `%s` does not exist.", req.Model))
		return
	}
	if status, kind, msg, fail := s.injectedFailure(); fail {
		writeError(w, status, kind, msg)
		return
	}
	rendered, nPrompt, promptWords := s.prompt(&req)
	maxTokens := s.cfg.maxModelLen - nPrompt
	if req.MaxCompletionTokens != nil {
		maxTokens = *req.MaxCompletionTokens
	} else if req.MaxTokens != nil {
		maxTokens = *req.MaxTokens
	}
	if maxTokens < 1 && (req.MaxCompletionTokens != nil || req.MaxTokens != nil) {
		writeError(w, http.StatusBadRequest, "BadRequestError",
			fmt.Sprintf("max_tokens must be at least 1, got %d.", maxTokens))
		return
	}
	if nPrompt >= s.cfg.maxModelLen {
		writeError(w, http.StatusBadRequest, "BadRequestError", fmt.Sprintf(
			"This model's maximum context length is %d tokens. However, your request has %d input tokens.",
			s.cfg.maxModelLen, nPrompt))
		return
	}
	if nPrompt+maxTokens > s.cfg.maxModelLen {
		writeError(w, http.StatusBadRequest, "BadRequestError", fmt.Sprintf(
			"This model's maximum context length is %d tokens. However, you requested %d tokens "+
				"(%d in the messages, %d in the completion).", s.cfg.maxModelLen, nPrompt+maxTokens,
			nPrompt, maxTokens))
		return
	}
	nOut, reason := outputLength(s.cfg.eosAfter, maxTokens, req.IgnoreEOS)

	s.m.waiting.Inc()
	select {
	case s.slots <- struct{}{}:
	case <-r.Context().Done():
		s.m.waiting.Dec()
		return
	}
	s.m.waiting.Dec()
	s.m.running.Inc()
	defer func() { <-s.slots; s.m.running.Dec() }()

	pick := s.pick
	if req.deterministic() {
		pick = answerRand(rendered, req.Seed, s.cfg.answerSalt).Intn
	}
	tokens := answerTokens(nOut, s.cfg.mode == "echo", promptWords, pick)
	id := fmt.Sprintf("chatcmpl-%d", start.UnixNano())
	var ok bool
	if req.Stream {
		ok = s.stream(w, r, &req, id, tokens, nPrompt, reason, start)
	} else {
		ok = s.complete(w, r, &req, id, tokens, nPrompt, reason, start)
	}
	if ok {
		s.m.promptTokens.Add(float64(nPrompt))
		s.m.genTokens.Add(float64(nOut))
		s.m.success.WithLabelValues(reason).Inc()
		e2e := time.Since(start).Seconds()
		s.m.e2e.Observe(e2e)
		if nOut > 1 {
			s.m.tpot.Observe(e2e / float64(nOut))
		}
	}
}

// sleep waits d or until the client goes away; false means the client went away.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func (s *server) complete(w http.ResponseWriter, r *http.Request, req *chatRequest, id string,
	tokens []string, nPrompt int, reason string, start time.Time) bool {
	if !sleep(r, s.gauss(s.cfg.ttft, s.cfg.ttftStdDev)) {
		return false
	}
	s.m.ttft.Observe(time.Since(start).Seconds())
	for range tokens[1:] {
		d := s.gauss(s.cfg.itl, s.cfg.itlStdDev)
		if !sleep(r, d) {
			return false
		}
		s.m.itl.Observe(d.Seconds())
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id": id, "object": "chat.completion", "created": start.Unix(), "model": req.Model,
		"choices": []map[string]any{{"index": 0, "finish_reason": reason,
			"message": map[string]any{"role": "assistant", "content": strings.Join(tokens, "")}}},
		"usage": usage(nPrompt, len(tokens)),
	})
	return true
}

func usage(prompt, completion int) map[string]int {
	return map[string]int{"prompt_tokens": prompt, "completion_tokens": completion,
		"total_tokens": prompt + completion}
}

func (s *server) stream(w http.ResponseWriter, r *http.Request, req *chatRequest, id string,
	tokens []string, nPrompt int, reason string, start time.Time) bool {
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	send := func(choices []map[string]any, extra map[string]any) bool {
		chunk := map[string]any{"id": id, "object": "chat.completion.chunk", "created": start.Unix(),
			"model": req.Model, "choices": choices}
		for k, v := range extra {
			chunk[k] = v
		}
		b, _ := json.Marshal(chunk)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	delta := func(d map[string]any, finish any) []map[string]any {
		return []map[string]any{{"index": 0, "delta": d, "finish_reason": finish}}
	}
	// Like vLLM, the role arrives first, before any token: clients must not count it as TTFT.
	if !send(delta(map[string]any{"role": "assistant", "content": ""}, nil), nil) {
		return false
	}
	wait := s.gauss(s.cfg.ttft, s.cfg.ttftStdDev)
	for i, tok := range tokens {
		if !sleep(r, wait) {
			return false
		}
		if i == 0 {
			s.m.ttft.Observe(time.Since(start).Seconds())
		} else {
			s.m.itl.Observe(wait.Seconds())
		}
		var finish any
		if i == len(tokens)-1 {
			finish = reason
		}
		if !send(delta(map[string]any{"content": tok}, finish), nil) {
			return false
		}
		wait = s.gauss(s.cfg.itl, s.cfg.itlStdDev)
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		if !send([]map[string]any{}, map[string]any{"usage": usage(nPrompt, len(tokens))}) {
			return false
		}
	}
	_, err := fmt.Fprint(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
	return err == nil
}
