// Command http-probe is the static HTTP client of probe pods: one GET, one line of output, and
// an exit code that tells a matching status (0), another status (1), no connection (2) and
// bad usage (3) apart.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

const (
	exitMatch      = 0
	exitOtherCode  = 1
	exitNoResponse = 2
	exitUsage      = 3
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run probes the URL in args and returns the exit code; the result line goes to stdout.
func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("http-probe", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: http-probe [--timeout 5s] [--expect-status 200] URL")
		flags.PrintDefaults()
	}
	timeout := flags.Duration("timeout", 5*time.Second, "limit for the whole request")
	expect := flags.Int("expect-status", http.StatusOK, "the HTTP status that counts as success")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitMatch
		}
		return exitUsage
	}
	if flags.NArg() != 1 {
		flags.Usage()
		return exitUsage
	}
	target, err := url.Parse(flags.Arg(0))
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		fmt.Fprintf(stderr, "http-probe: not an http(s) URL: %q\n", flags.Arg(0))
		return exitUsage
	}

	client := &http.Client{
		Timeout: *timeout,
		// No proxy from the environment: a probe pod must reach the address it was given.
		Transport: &http.Transport{Proxy: nil},
		// The status the server answered is what is probed, not where a redirect leads.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Get(target.String())
	if err != nil {
		fmt.Fprintf(stdout, "no response: %v\n", err)
		return exitNoResponse
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	fmt.Fprintf(stdout, "status %d\n", resp.StatusCode)
	if resp.StatusCode != *expect {
		return exitOtherCode
	}
	return exitMatch
}
