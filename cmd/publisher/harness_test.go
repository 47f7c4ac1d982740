package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/internal/svcproc"
	"github.com/publisher-dev/publisher/internal/svcproc/svcproctest"
)

// binary is the service built once, with the race detector, for every test.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "publisher-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "publisher")
	if err := svcproc.Build(context.Background(), ".", binary, os.Stdout, "-race"); err != nil {
		fmt.Fprintln(os.Stderr, "building the service:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// seed is the seed of the random choices of the tests that make them (the
// moments TestSpoolSurvivesSIGKILL kills the service at); 0 draws one from
// the clock. Each such test logs the seed it used, so a failure is replayed
// with the same choices: go test ./cmd/publisher -run '^TestName$' -seed N.
var seed = flag.Uint64("seed", 0, "seed of the crash tests' random choices (0: from the clock; each test logs the one it used)")

// newRand returns t's random source, seeded with -seed or the clock, and
// logs the seed with the command that replays it.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	s := *seed
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("random seed %d (replay: go test ./cmd/publisher -run '^%s$' -seed %d)", s, t.Name(), s)
	return rand.New(rand.NewPCG(s, s))
}

// waitLimit bounds every wait of these tests for something the service does
// (a reconnect, a drain), generous for a loaded two-core machine.
const waitLimit = 90 * time.Second

// proc is one running service process.
type proc struct {
	*svcproc.Proc
	t     *testing.T
	api   string // http://127.0.0.1:port
	admin string
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startService runs the binary with env (PUBLISHER_* variables; they win
// over this process's environment and the debug log level) on free loopback
// ports. It does not wait for readiness.
func startService(t *testing.T, env map[string]string) *proc {
	t.Helper()
	e := append(os.Environ(), "PUBLISHER_LOG_LEVEL=debug")
	for k, v := range env {
		e = append(e, k+"="+v)
	}
	sp := svcproctest.Start(t, svcproc.Spec{Bin: binary, Env: e})
	return &proc{Proc: sp, t: t, api: "http://" + sp.APIAddr(), admin: "http://" + sp.AdminAddr()}
}

// wait waits for the process to exit and returns its status.
func (p *proc) wait(limit time.Duration) int {
	p.t.Helper()
	return svcproctest.Wait(p.t, p.Proc, limit)
}

var client = &http.Client{
	Timeout:   60 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 256},
}

// get returns the status and body of an admin endpoint, or the error that
// kept it from being read (the service not listening yet, or gone): a poll
// may wait through one, a check must fail on it.
func (p *proc) get(path string) (int, string, error) {
	resp, err := client.Get(p.admin + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", fmt.Errorf("%s: reading the answer: %w", path, err)
	}
	return resp.StatusCode, string(b), nil
}

// mustGet is get that fails the test (t.Fatalf: only from the test's
// goroutine) when the endpoint cannot be read.
func (p *proc) mustGet(path string) (int, string) {
	p.t.Helper()
	code, body, err := p.get(path)
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	return code, body
}

// answers reports whether path answers code now; for polls only, which wait
// through a transport error (the listener not up yet).
func (p *proc) answers(path string, code int) bool {
	c, _, err := p.get(path)
	return err == nil && c == code
}

func (p *proc) waitReady() {
	p.t.Helper()
	svcproctest.WaitReady(p.t, p.Proc, waitLimit)
}

// publishResult is one answered publish.
type publishResult struct {
	code       int
	id         string
	status     string
	errText    string
	retryAfter string
}

// publish POSTs body to /v1/publish/{exchange}/{key} with headers.
func (p *proc) publish(exchange, key string, body []byte, headers map[string]string) (publishResult, error) {
	req, err := http.NewRequest(http.MethodPost, p.api+"/v1/publish/"+exchange+"/"+key, bytes.NewReader(body))
	if err != nil {
		return publishResult{}, err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return publishResult{}, err
	}
	defer resp.Body.Close()
	var out struct {
		MessageID string `json:"message_id"`
		Status    string `json:"status"`
		Error     string `json:"error"`
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return publishResult{code: resp.StatusCode}, fmt.Errorf("reading the answer %d: %w", resp.StatusCode, err)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return publishResult{code: resp.StatusCode}, fmt.Errorf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return publishResult{code: resp.StatusCode, id: out.MessageID, status: out.Status, errText: out.Error,
		retryAfter: resp.Header.Get("Retry-After")}, nil
}

// metric returns the sum of the samples called name with every given label
// (`a="b"`), from the service's /metrics. It fails the test (t.Fatalf: only
// from the test's goroutine, poll conditions included) when /metrics cannot
// be read or has no such series, so a renamed metric or a broken /metrics
// never reads as 0.
func (p *proc) metric(name string, labels ...string) float64 {
	p.t.Helper()
	return svcproctest.Metric(p.t, p.Proc, name, labels...)
}

// postWith POSTs body to path with a Content-Type and headers, and returns
// the status and the answer's body.
func (p *proc) postWith(path, contentType, body string, headers map[string]string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, p.api+path, bytes.NewReader([]byte(body)))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
