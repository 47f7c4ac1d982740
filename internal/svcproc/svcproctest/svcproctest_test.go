package svcproctest_test

import (
	"os"
	"path/filepath"
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
