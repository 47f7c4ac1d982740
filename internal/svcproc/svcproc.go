// Package svcproc runs the publisher service binary as a child process on
// free loopback ports, for the tests of cmd/publisher and for the load tool
// pubbench (bench/, a module of its own that imports this package through
// its replace directive): it captures the child's output, waits until
// /readyz answers 200, reads its /metrics, stops it with SIGTERM and
// reports how it exited.
//
// It returns errors and never touches a testing.T, so a program can use it;
// tests use the thin wrapper in svcproctest.
package svcproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/publisher-dev/publisher/internal/promtext"
	"github.com/publisher-dev/publisher/internal/syncbuf"
)

var (
	// ErrExited: the child exited before WaitReady saw it ready.
	ErrExited = errors.New("svcproc: the service exited")
	// ErrNotReady: WaitReady's limit passed before /readyz answered 200.
	ErrNotReady = errors.New("svcproc: the service is not ready")
	// ErrRunning: Wait's limit passed with the child still running.
	ErrRunning = errors.New("svcproc: the service is still running")
	// ErrKilled: Stop had to kill the child, which outlived its grace after
	// SIGTERM.
	ErrKilled = errors.New("svcproc: the service ignored SIGTERM and was killed")
)

// ReadyInterval is the pause between two /readyz requests of WaitReady.
const ReadyInterval = 25 * time.Millisecond

// Spec describes a child. Only Bin is required.
type Spec struct {
	// Bin is the service binary.
	Bin string
	// Env is the child's environment as NAME=value (nil: this process's,
	// os.Environ()). Start appends PUBLISHER_LISTEN_ADDR and
	// PUBLISHER_ADMIN_ADDR, which therefore win over any in Env: the
	// addresses the Proc reports are the ones the child listens on.
	Env []string
	// LogPath, when set, is a file (created, or truncated) that receives the
	// child's stdout and stderr; empty keeps them in memory. Either way Logs
	// and LogTail return them.
	LogPath string
	// DieWithParent has the kernel kill the child (SIGKILL) when this process
	// dies, even when it is killed itself (Linux's parent-death signal).
	DieWithParent bool
}

// Proc is one running child. Its methods are safe for concurrent use.
type Proc struct {
	cmd       *exec.Cmd
	apiAddr   string
	adminAddr string
	logPath   string
	logs      *syncbuf.Buffer // nil with a LogPath
	admin     *http.Client    // Metrics's; its idle connections are closed when the child exits
	exited    chan struct{}
	waitErr   error // set before exited is closed
	code      int   // likewise
}

// metricsTimeout bounds one read of /metrics: the service's own admin write
// timeout (30 s), so a slow scrape under -race on a loaded machine is waited
// for rather than mistaken for a missing metric.
const metricsTimeout = 30 * time.Second

// Start starts spec.Bin on two free loopback ports. It does not wait for
// readiness (WaitReady does).
func Start(spec Spec) (*Proc, error) {
	if spec.Bin == "" {
		return nil, errors.New("svcproc: Spec.Bin is empty")
	}
	apiAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	p := &Proc{apiAddr: apiAddr, adminAddr: adminAddr, logPath: spec.LogPath, exited: make(chan struct{}),
		admin: &http.Client{Timeout: metricsTimeout, Transport: &http.Transport{Proxy: nil}}}
	env := spec.Env
	if env == nil {
		env = os.Environ()
	}
	p.cmd = exec.Command(spec.Bin)
	p.cmd.Env = append(env[:len(env):len(env)], "PUBLISHER_LISTEN_ADDR="+apiAddr, "PUBLISHER_ADMIN_ADDR="+adminAddr)
	if spec.DieWithParent {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if spec.LogPath != "" {
		f, err := os.Create(spec.LogPath)
		if err != nil {
			return nil, fmt.Errorf("svcproc: %w", err)
		}
		defer f.Close() // the child has its own descriptor
		p.cmd.Stdout, p.cmd.Stderr = f, f
	} else {
		p.logs = &syncbuf.Buffer{}
		p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("svcproc: start %s: %w", spec.Bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		p.admin.CloseIdleConnections()
		close(p.exited)
	}()
	return p, nil
}

// freeLoopbackAddr returns 127.0.0.1:PORT with a port that was free a moment
// ago.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("svcproc: a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// APIAddr is the publish API's address, 127.0.0.1:PORT.
func (p *Proc) APIAddr() string { return p.apiAddr }

// AdminAddr is the admin address (/readyz, /metrics), 127.0.0.1:PORT.
func (p *Proc) AdminAddr() string { return p.adminAddr }

// Pid is the child's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the child.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Exited is closed once the child has exited and its output is captured.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Running reports whether the child has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// ExitCode is the child's exit status: -1 while it runs, and when a signal
// ended it.
func (p *Proc) ExitCode() int {
	if p.Running() {
		return -1
	}
	return p.code
}

// Err is what waiting for the child returned (os/exec's Cmd.Wait): nil for
// exit status 0, an *exec.ExitError for another status or a signal, another
// error when its output could not be copied; nil while it runs.
func (p *Proc) Err() error {
	if p.Running() {
		return nil
	}
	return p.waitErr
}

// Wait waits up to limit for the child to exit and returns its exit code;
// after limit it returns -1 and an error wrapping ErrRunning.
func (p *Proc) Wait(limit time.Duration) (int, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-p.exited:
		return p.code, nil
	case <-t.C:
		return -1, fmt.Errorf("%w after %s", ErrRunning, limit)
	}
}

// Stop sends SIGTERM and waits up to grace for the child to exit; then it
// kills it (SIGKILL) and waits again. It returns the exit code (-1 for a
// signal) and an error: one wrapping ErrKilled when it had to kill; the
// child's Err when that is not about its exit status (its output could not
// be copied); nil otherwise, whatever the status. A child that has exited
// already is not signalled.
func (p *Proc) Stop(grace time.Duration) (int, error) {
	if p.Running() {
		_ = p.Signal(syscall.SIGTERM)
		if _, err := p.Wait(grace); err != nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
			return p.code, fmt.Errorf("%w (no exit within %s)", ErrKilled, grace)
		}
	}
	var ee *exec.ExitError
	if p.waitErr != nil && !errors.As(p.waitErr, &ee) {
		return p.code, p.waitErr
	}
	return p.code, nil
}

// WaitReady polls GET /readyz on the admin address every ReadyInterval until
// it answers 200. It returns an error wrapping ErrExited when the child exits
// first, one wrapping ErrNotReady after limit, or ctx's error.
func (p *Proc) WaitReady(ctx context.Context, limit time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	for {
		if p.ready(ctx, client) {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%w before it was ready (%v)", ErrExited, p.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(ReadyInterval):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w within %s", ErrNotReady, limit)
		}
	}
}

// ready reports whether /readyz answers 200.
func (p *Proc) ready(ctx context.Context, client *http.Client) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.adminAddr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Metrics reads the child's /metrics on the admin address. It fails on a
// transport error, on a status other than 200 and on an answer that is not a
// text exposition.
func (p *Proc) Metrics(ctx context.Context) (promtext.Samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.adminAddr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("svcproc: %w", err)
	}
	resp, err := p.admin.Do(req)
	if err != nil {
		return nil, fmt.Errorf("svcproc: /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil, fmt.Errorf("svcproc: /metrics answered HTTP %d", resp.StatusCode)
	}
	s, err := promtext.Parse(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("svcproc: /metrics: %w", err)
	}
	return s, nil
}

// Metric reads /metrics (Metrics) and returns the sum of the samples called
// name that carry every label given, written name="value" (promtext's Get).
// It returns an error, never a 0, when /metrics cannot be read or no sample
// matches (then the error wraps promtext.ErrMissing).
func (p *Proc) Metric(ctx context.Context, name string, labels ...string) (float64, error) {
	s, err := p.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	return s.Get(name, labels...)
}

// Logs returns the child's output so far (with a LogPath, the file's
// content, or the error reading it).
func (p *Proc) Logs() string {
	if p.logs != nil {
		return p.logs.String()
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// LogTail returns the last n bytes of Logs.
func (p *Proc) LogTail(n int) string {
	s := p.Logs()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// Build runs go build with flags (-race, ...) to write the binary of
// package pkg to out, its output going to w.
func Build(ctx context.Context, pkg, out string, w io.Writer, flags ...string) error {
	args := append(append([]string{"build"}, flags...), "-o", out, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("svcproc: go build %s: %w", pkg, err)
	}
	return nil
}
