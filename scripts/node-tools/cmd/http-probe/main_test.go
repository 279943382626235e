package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestExitCodes(t *testing.T) {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer server.Close()

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + closed.Addr().String() + "/"
	_ = closed.Close()

	// Accepts connections (the kernel's backlog) but never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	cases := []struct {
		args []string
		code int
		line string
	}{
		{[]string{server.URL + "/"}, exitMatch, "status 200"},
		{[]string{server.URL + "/bad"}, exitOtherCode, "status 503"},
		{[]string{"--expect-status", "503", server.URL + "/bad"}, exitMatch, "status 503"},
		{[]string{"--timeout", "2s", refused}, exitNoResponse, "connection refused"},
		{[]string{"--timeout", "200ms", "http://" + silent.Addr().String() + "/"}, exitNoResponse, "Timeout"},
		{[]string{}, exitUsage, ""},
		{[]string{"--timeout", "soon", server.URL}, exitUsage, ""},
		{[]string{"not a url"}, exitUsage, ""},
	}
	for _, c := range cases {
		var out strings.Builder
		if code := run(c.args, &out, io.Discard); code != c.code {
			t.Errorf("%v: exit %d, want %d (output %q)", c.args, code, c.code, out.String())
		}
		if !strings.Contains(out.String(), c.line) || strings.Count(out.String(), "\n") > 1 {
			t.Errorf("%v: output %q, want one line with %q", c.args, out.String(), c.line)
		}
	}
}
