// Package svcproctest is svcproc for tests: it fails the test where svcproc
// returns an error, and ties the child's life to the test's.
package svcproctest

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/svcproc"
)

// Start starts spec and fails t when the child does not start. When t ends,
// a child still running is killed (SIGKILL, no grace) and, if t failed, its
// output is logged.
func Start(t testing.TB, spec svcproc.Spec) *svcproc.Proc {
	t.Helper()
	p, err := svcproc.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.Running() {
			_ = p.Signal(syscall.SIGKILL)
			<-p.Exited()
		}
		if t.Failed() {
			t.Logf("service logs:\n%s", p.Logs())
		}
	})
	return p
}

// WaitReady fails t unless p answers /readyz with 200 within limit; a child
// that exits first fails it at once, with its exit status.
func WaitReady(t testing.TB, p *svcproc.Proc, limit time.Duration) {
	t.Helper()
	err := p.WaitReady(context.Background(), limit)
	switch {
	case errors.Is(err, svcproc.ErrExited):
		t.Fatalf("service exited with status %d before becoming ready", p.ExitCode())
	case err != nil:
		t.Fatal(err)
	}
}

// Wait fails t unless p exits within limit, and returns its exit code.
func Wait(t testing.TB, p *svcproc.Proc, limit time.Duration) int {
	t.Helper()
	code, err := p.Wait(limit)
	if err != nil {
		t.Fatalf("service still running after %s", limit)
	}
	return code
}

// Metric returns p.Metric(name, labels...) and fails t (t.Fatalf, so only
// from the test's goroutine) when /metrics cannot be read or has no such
// series: a renamed metric or a broken /metrics fails the test rather than
// reading as 0.
func Metric(t testing.TB, p *svcproc.Proc, name string, labels ...string) float64 {
	t.Helper()
	v, err := p.Metric(context.Background(), name, labels...)
	if err != nil {
		t.Fatalf("reading metric %s%q: %v", name, labels, err)
	}
	return v
}
