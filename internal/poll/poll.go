// Package poll waits in tests for a condition that becomes true
// asynchronously: it checks the condition, and until it holds pauses for
// Interval and checks again, failing the test after a time limit. The test
// asserts on the condition, never on a fixed sleep; the limit only keeps a
// broken test from hanging.
package poll

import (
	"testing"
	"time"
)

const (
	// DefaultLimit is how long Until waits before it fails the test.
	DefaultLimit = 60 * time.Second
	// Interval is the pause between two checks of the condition.
	Interval = 20 * time.Millisecond
)

// Until waits up to DefaultLimit for cond to return true; see Within.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, DefaultLimit, what, cond)
}

// Within calls cond until it returns true, pausing Interval after every
// false. When cond is still false after limit has passed, it fails the test
// with "timed out waiting for " + what (t.Fatalf, so it must be called from
// the test's goroutine). cond is called at least once, even with a limit of
// 0, and may fail the test itself.
func Within(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(Interval)
	}
}
