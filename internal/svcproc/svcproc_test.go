package svcproc_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/internal/promtext"
	"github.com/publisher-dev/publisher/internal/svcproc"
	"github.com/publisher-dev/publisher/internal/svcproc/svcproctest"
)

// fakeEnv selects, in the test binary run as a child, the fake service and
// its behaviour (see fakeService).
const fakeEnv = "SVCPROC_FAKE_SERVICE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fakeService(mode))
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// fakeService stands in for the publisher: it prints a line on stdout and
// one on stderr, serves /readyz and /metrics (fakeMetrics) on
// PUBLISHER_ADMIN_ADDR and exits with status 3 on SIGTERM. Modes: "ok";
// "crash" exits with status 7 at once; "notready" answers every path with
// 503; "garbage" answers /metrics with something that is not an exposition;
// "stubborn" ignores SIGTERM.
func fakeService(mode string) int {
	fmt.Println("fake stdout")
	fmt.Fprintf(os.Stderr, "fake starting on %s and %s\n", os.Getenv("PUBLISHER_LISTEN_ADDR"), os.Getenv("PUBLISHER_ADMIN_ADDR"))
	if mode == "crash" {
		return 7
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	status := http.StatusOK
	if mode == "notready" {
		status = http.StatusServiceUnavailable
	}
	go http.ListenAndServe(os.Getenv("PUBLISHER_ADMIN_ADDR"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case status != http.StatusOK:
			w.WriteHeader(status)
		case r.URL.Path == "/metrics" && mode == "garbage":
			fmt.Fprint(w, "<html>not an exposition{</html>\n")
		case r.URL.Path == "/metrics":
			fmt.Fprint(w, fakeMetrics)
		}
	}))
	for range sigs {
		if mode != "stubborn" {
			fmt.Fprintln(os.Stderr, "fake stopping")
			return 3
		}
	}
	return 0
}

// fakeMetrics is the fake service's /metrics.
const fakeMetrics = `# TYPE fake_up gauge
fake_up 1
# TYPE fake_total counter
fake_total{kind="a"} 2
fake_total{kind="b"} 3
# TYPE fake_empty gauge
fake_empty 0
`

// fake is the Spec of the fake service in mode.
func fake(t *testing.T, mode string) svcproc.Spec {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return svcproc.Spec{Bin: bin, Env: append(os.Environ(), fakeEnv+"="+mode)}
}

func TestStartReadyStop(t *testing.T) {
	spec := fake(t, "ok")
	spec.Env = append(spec.Env, "PUBLISHER_ADMIN_ADDR=127.0.0.1:1") // Start's addresses win
	spec.DieWithParent = true
	p := svcproctest.Start(t, spec)
	if err := p.WaitReady(context.Background(), 10*time.Second); err != nil {
		t.Fatalf("WaitReady: %v; logs:\n%s", err, p.Logs())
	}
	if !p.Running() || p.ExitCode() != -1 || p.Err() != nil || p.Pid() <= 0 {
		t.Errorf("ready child: running %v, exit code %d, err %v, pid %d", p.Running(), p.ExitCode(), p.Err(), p.Pid())
	}
	code, err := p.Stop(10 * time.Second)
	if code != 3 || err != nil {
		t.Errorf("Stop = %d, %v; want 3, nil", code, err)
	}
	if p.Running() || p.ExitCode() != 3 {
		t.Errorf("stopped child: running %v, exit code %d", p.Running(), p.ExitCode())
	}
	var ee interface{ ExitCode() int }
	if !errors.As(p.Err(), &ee) || ee.ExitCode() != 3 {
		t.Errorf("Err = %v, want exit status 3", p.Err())
	}
	logs := p.Logs()
	for _, want := range []string{"fake stdout\n", "fake starting on " + p.APIAddr() + " and " + p.AdminAddr() + "\n", "fake stopping\n"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	if code, err := p.Stop(time.Second); code != 3 || err != nil {
		t.Errorf("Stop again = %d, %v; want 3, nil", code, err)
	}
}

func TestWaitReadyExited(t *testing.T) {
	p := svcproctest.Start(t, fake(t, "crash"))
	err := p.WaitReady(context.Background(), 10*time.Second)
	if !errors.Is(err, svcproc.ErrExited) {
		t.Fatalf("WaitReady = %v, want ErrExited", err)
	}
	if p.ExitCode() != 7 {
		t.Errorf("exit code %d, want 7", p.ExitCode())
	}
	if code, err := p.Wait(time.Second); code != 7 || err != nil {
		t.Errorf("Wait = %d, %v; want 7, nil", code, err)
	}
}

func TestWaitReadyLimitAndContext(t *testing.T) {
	p := svcproctest.Start(t, fake(t, "notready"))
	if err := p.WaitReady(context.Background(), 300*time.Millisecond); !errors.Is(err, svcproc.ErrNotReady) {
		t.Errorf("WaitReady = %v, want ErrNotReady", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.WaitReady(ctx, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitReady with a done context = %v, want context.Canceled", err)
	}
	if code, err := p.Wait(100 * time.Millisecond); code != -1 || !errors.Is(err, svcproc.ErrRunning) {
		t.Errorf("Wait of a running child = %d, %v; want -1, ErrRunning", code, err)
	}
}

func TestStopKillsAStubbornChild(t *testing.T) {
	p := svcproctest.Start(t, fake(t, "stubborn"))
	if err := p.WaitReady(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	code, err := p.Stop(200 * time.Millisecond)
	if code != -1 || !errors.Is(err, svcproc.ErrKilled) {
		t.Errorf("Stop = %d, %v; want -1, ErrKilled", code, err)
	}
}

func TestLogPath(t *testing.T) {
	spec := fake(t, "crash")
	spec.LogPath = filepath.Join(t.TempDir(), "service.log")
	p := svcproctest.Start(t, spec)
	<-p.Exited()
	b, err := os.ReadFile(spec.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Logs(); got != string(b) || !strings.HasPrefix(got, "fake stdout\nfake starting on ") {
		t.Errorf("Logs = %q, the file holds %q", got, b)
	}
	if got := p.LogTail(4); got != string(b[len(b)-4:]) {
		t.Errorf("LogTail(4) = %q", got)
	}
	if got := p.LogTail(1 << 20); got != string(b) {
		t.Errorf("LogTail of more than there is = %q", got)
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := svcproc.Start(svcproc.Spec{}); err == nil {
		t.Error("no Bin: no error")
	}
	if _, err := svcproc.Start(svcproc.Spec{Bin: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("a missing binary: no error")
	}
	spec := fake(t, "ok")
	spec.LogPath = filepath.Join(t.TempDir(), "no", "such", "dir", "log")
	if _, err := svcproc.Start(spec); err == nil {
		t.Error("an impossible LogPath: no error")
	}
}

// Metric reads the child's /metrics: the value of a series that is there (a
// 0 included), and an error, never a 0, for a series that is not, for an
// answer other than 200, for one that is not an exposition, and for a child
// that no longer listens.
func TestMetric(t *testing.T) {
	ctx := context.Background()
	p := svcproctest.Start(t, fake(t, "ok"))
	svcproctest.WaitReady(t, p, 10*time.Second)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"fake_up", nil, 1},
		{"fake_total", nil, 5},
		{"fake_total", []string{`kind="b"`}, 3},
		{"fake_empty", nil, 0},
	} {
		if got, err := p.Metric(ctx, c.name, c.labels...); err != nil || got != c.want {
			t.Errorf("Metric(%s, %q) = %v, %v; want %v", c.name, c.labels, got, err, c.want)
		}
	}
	if got := svcproctest.Metric(t, p, "fake_total", `kind="a"`); got != 2 {
		t.Errorf("svcproctest.Metric = %v, want 2", got)
	}
	for _, c := range [][]string{{"fake_down"}, {"fake_total", `kind="c"`}, {"fake"}} {
		if got, err := p.Metric(ctx, c[0], c[1:]...); !errors.Is(err, promtext.ErrMissing) {
			t.Errorf("Metric(%q) = %v, %v; want ErrMissing", c, got, err)
		}
	}
	if _, err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Metric(ctx, "fake_up"); err == nil {
		t.Errorf("Metric of a stopped child = %v, no error", got)
	}

	for _, mode := range []string{"notready", "garbage"} {
		p := svcproctest.Start(t, fake(t, mode))
		// Ready (garbage), or answering 503 (notready): /metrics is served.
		poll.Within(t, 10*time.Second, mode+" child listening", func() bool {
			_, err := p.Metrics(ctx)
			return err != nil && !strings.Contains(err.Error(), "connection refused")
		})
		got, err := p.Metric(ctx, "fake_up")
		if err == nil || errors.Is(err, promtext.ErrMissing) {
			t.Errorf("%s: Metric = %v, %v; want an error reading /metrics", mode, got, err)
		}
		t.Logf("%s: %v", mode, err)
	}
}
