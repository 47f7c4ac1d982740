package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
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
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
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

// proc is one running service process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	api    string // http://127.0.0.1:port
	admin  string
	mu     sync.Mutex
	logs   bytes.Buffer
	exited chan struct{}
	status int
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

// startService runs the binary with env (PUBLISHER_* variables) on free
// loopback ports. It does not wait for readiness.
func startService(t *testing.T, env map[string]string) *proc {
	t.Helper()
	apiAddr, adminAddr := freeAddr(t), freeAddr(t)
	p := &proc{t: t, api: "http://" + apiAddr, admin: "http://" + adminAddr, exited: make(chan struct{})}
	p.cmd = exec.Command(binary)
	p.cmd.Env = append(os.Environ(), "PUBLISHER_LISTEN_ADDR="+apiAddr, "PUBLISHER_ADMIN_ADDR="+adminAddr, "PUBLISHER_LOG_LEVEL=debug")
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.Write(sc.Bytes())
			p.logs.WriteByte('\n')
			p.mu.Unlock()
		}
		err := p.cmd.Wait()
		p.status = p.cmd.ProcessState.ExitCode()
		_ = err
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.exited
		}
		if t.Failed() {
			t.Logf("service logs:\n%s", p.Logs())
		}
	})
	return p
}

func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// wait waits for the process to exit and returns its status.
func (p *proc) wait(limit time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.status
	case <-time.After(limit):
		p.t.Fatalf("service still running after %s", limit)
		return -1
	}
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

var client = &http.Client{
	Timeout:   60 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 256},
}

// get returns the status and body of an admin endpoint.
func (p *proc) get(path string) (int, string) {
	resp, err := client.Get(p.admin + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *proc) waitReady() {
	p.t.Helper()
	waitFor(p.t, "service ready", func() bool {
		if !p.running() {
			p.t.Fatalf("service exited with status %d before becoming ready", p.status)
		}
		code, _ := p.get("/readyz")
		return code == 200
	})
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
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		return publishResult{code: resp.StatusCode}, fmt.Errorf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return publishResult{code: resp.StatusCode, id: out.MessageID, status: out.Status, errText: out.Error,
		retryAfter: resp.Header.Get("Retry-After")}, nil
}

// metric returns the sum of the samples of a metric family whose labels
// contain every given label (`name{a="b"}` lines of the text format).
func (p *proc) metric(name string, labels ...string) float64 {
	p.t.Helper()
	_, body := p.get("/metrics")
	return metricValue(body, name, labels...)
}

func metricValue(body, name string, labels ...string) float64 {
	sum := 0.0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
