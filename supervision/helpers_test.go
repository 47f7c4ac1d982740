package supervision

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// safety bounds how long a test waits for something that must happen; it is
// a hang guard, never a timing assumption.
const safety = 10 * time.Second

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// noDelay restarts at once; the FakeClock fires zero-length timers immediately.
var noDelay = Backoff{Min: -1, RandomFactor: -1}

type recorder struct{ ch chan Event }

func newRecorder() *recorder { return &recorder{ch: make(chan Event, 10000)} }

func (r *recorder) hook(e Event) { r.ch <- e }

// waitFor returns the next event of kind for child, skipping others.
func (r *recorder) waitFor(t *testing.T, kind EventKind, child string) Event {
	t.Helper()
	timeout := time.NewTimer(safety)
	defer timeout.Stop()
	for {
		select {
		case e := <-r.ch:
			if e.Kind == kind && (child == "" || e.Child == child) {
				return e
			}
		case <-timeout.C:
			t.Fatalf("no %v event for %q", kind, child)
		}
	}
}

// log is a concurrency-safe list of strings, to check orders.
type log struct {
	mu sync.Mutex
	l  []string
}

func (l *log) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, s)
}

func (l *log) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.l...)
}

// ctl is a child driven by the test: each Serve reports its start and then
// waits for the context or a command (the error to return; nil returns nil).
type ctl struct {
	name     string
	log      *log
	starts   chan int
	cmds     chan error
	mu       sync.Mutex
	n        int
	term     int
	restarts []error
}

func newCtl(name string, l *log) *ctl {
	return &ctl{name: name, log: l, starts: make(chan int, 100), cmds: make(chan error)}
}

func (c *ctl) Serve(ctx context.Context) error {
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	c.starts <- n
	for {
		select {
		case <-ctx.Done():
			if c.log != nil {
				c.log.add("stop " + c.name)
			}
			return ctx.Err()
		case err := <-c.cmds:
			if err == errProgressCmd {
				Progress(ctx)
				continue
			}
			return err
		}
	}
}

// errProgressCmd, sent as a command, makes the running incarnation call
// Progress and keep running.
var errProgressCmd = errors.New("test: call Progress")

// progress makes the running incarnation call Progress; when it returns, the
// call is done or next in line (the next command is received after it).
func (c *ctl) progress(t *testing.T) {
	t.Helper()
	c.fail(t, errProgressCmd)
}

func (c *ctl) BeforeRestart(cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.restarts = append(c.restarts, cause)
}

func (c *ctl) restartCauses() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.restarts...)
}

func (c *ctl) Terminated(error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.term++
}

func (c *ctl) count() (starts, terminated int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.term
}

// add adds c to sup; its starts are logged by the BeforeStart hook, which
// runs on the supervisor goroutine, so the log shows the real start order.
func (c *ctl) add(t *testing.T, sup *Supervisor, spec ChildSpec) {
	t.Helper()
	spec.Name, spec.Service = c.name, c
	if c.log != nil {
		spec.Hooks.BeforeStart = func() { c.log.add("start " + c.name) }
	}
	if err := sup.Add(spec); err != nil {
		t.Fatal(err)
	}
}

// waitStart waits for incarnation n to start.
func (c *ctl) waitStart(t *testing.T, n int) {
	t.Helper()
	select {
	case got := <-c.starts:
		if got != n {
			t.Fatalf("%s: incarnation %d started, want %d", c.name, got, n)
		}
	case <-time.After(safety):
		t.Fatalf("%s: incarnation %d did not start", c.name, n)
	}
}

func (c *ctl) fail(t *testing.T, err error) {
	t.Helper()
	select {
	case c.cmds <- err:
	case <-time.After(safety):
		t.Fatalf("%s: not running", c.name)
	}
}

// serve runs sup.Serve in the background; stop cancels it and returns its
// result.
type served struct {
	cancel context.CancelFunc
	done   chan error
}

func serve(sup Service) *served {
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- sup.Serve(ctx) }()
	return s
}

func (s *served) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		return err
	case <-time.After(safety):
		t.Fatal("Serve did not return")
		return nil
	}
}

func (s *served) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	return s.wait(t)
}

var errBoom = errors.New("boom")
