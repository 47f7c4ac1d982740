package poll_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/poll"
)

// fakeTB records a failure instead of ending the test, so Within's timeout
// can be checked.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}

// Fatalf records the message and ends the goroutine as testing's Fatalf does.
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f)
}

// within runs poll.Within against a fakeTB and returns the failure message ("": none).
func within(limit time.Duration, what string, cond func() bool) (failed string) {
	f := &fakeTB{}
	defer func() {
		if r := recover(); r != nil && r != any(f) {
			panic(r)
		}
		failed = f.failed
	}()
	poll.Within(f, limit, what, cond)
	return ""
}

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int64
	poll.Until(t, "the third call", func() bool { return calls.Add(1) == 3 })
	if n := calls.Load(); n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}

func TestWithinFailsAfterTheLimit(t *testing.T) {
	start := time.Now()
	calls := 0
	msg := within(100*time.Millisecond, "nothing", func() bool { calls++; return false })
	if msg != "timed out waiting for nothing" {
		t.Fatalf("failure %q", msg)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("failed after %s, before the limit", d)
	}
	if calls < 2 {
		t.Errorf("cond called %d times, want it polled", calls)
	}
}

func TestWithinChecksAtLeastOnce(t *testing.T) {
	calls := 0
	if msg := within(0, "the first call", func() bool { calls++; return true }); msg != "" || calls != 1 {
		t.Fatalf("limit 0 and a true condition: failure %q after %d calls", msg, calls)
	}
}
