package svcproctest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/svcproc"
	"github.com/publisher-dev/publisher/internal/svcproc/svcproctest"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "service")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStartAndWait(t *testing.T) {
	p := svcproctest.Start(t, svcproc.Spec{Bin: script(t, "echo \"admin on $PUBLISHER_ADMIN_ADDR\" >&2\nexit 5\n")})
	if code := svcproctest.Wait(t, p, 10*time.Second); code != 5 {
		t.Errorf("exit code %d, want 5", code)
	}
	if logs := p.Logs(); !strings.Contains(logs, "admin on "+p.AdminAddr()) {
		t.Errorf("logs %q", logs)
	}
}

func TestCleanupKillsTheChild(t *testing.T) {
	var p *svcproc.Proc
	t.Run("child", func(t *testing.T) {
		p = svcproctest.Start(t, svcproc.Spec{Bin: script(t, "exec sleep 600\n")})
	})
	select {
	case <-p.Exited():
	default:
		t.Fatal("the child outlived its test")
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as testing's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Metric fails the test, rather than reading 0, when /metrics cannot be
// read: here nothing listens on the child's admin address.
func TestMetricFailsTheTest(t *testing.T) {
	p := svcproctest.Start(t, svcproc.Spec{Bin: script(t, "exec sleep 600\n")})
	rec := &fatalRecorder{TB: t}
	done := make(chan float64, 1)
	go func() {
		defer close(done)
		done <- svcproctest.Metric(rec, p, "publisher_spool_messages")
	}()
	if v, returned := <-done; returned {
		t.Fatalf("Metric returned %v without a /metrics to read", v)
	}
	if !strings.Contains(rec.msg, "publisher_spool_messages") {
		t.Errorf("the failure does not name the metric: %q", rec.msg)
	}
}
