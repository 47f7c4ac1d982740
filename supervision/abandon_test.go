package supervision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

// stubborn is a child that ignores its context: each incarnation returns only
// when the test sends on release. Like the publisher, it writes state in
// Serve's tail (returned) that BeforeRestart and Terminated read, without
// locks: they must never run concurrently with Serve, so the race detector
// and the recorded values catch a call made before Serve returned. n is
// written at each start without a lock too: two incarnations must never run
// at once either.
type stubborn struct {
	name     string
	starts   chan int      // the incarnation number, sent when it starts
	release  chan struct{} // each receive lets one incarnation return
	calls    chan string   // lifecycle calls, each saying how many Serves had returned
	n        int           // incarnations started; written by Serve
	returned int           // incarnations returned; written by Serve's tail
}

func newStubborn(name string) *stubborn {
	return &stubborn{name: name, starts: make(chan int, 10), release: make(chan struct{}), calls: make(chan string, 10)}
}

func (s *stubborn) Serve(context.Context) error {
	s.n++
	s.starts <- s.n
	<-s.release
	s.returned++
	return errors.New("stubborn returned late")
}

func (s *stubborn) BeforeRestart(error) {
	s.calls <- fmt.Sprintf("before-restart after %d returned", s.returned)
}

func (s *stubborn) Terminated(error) {
	s.calls <- fmt.Sprintf("terminated after %d returned", s.returned)
}

// spec returns its ChildSpec; AfterStop is recorded like Terminated.
func (s *stubborn) spec(timeout time.Duration, beforeStart func()) ChildSpec {
	return ChildSpec{Name: s.name, Service: s, ShutdownTimeout: timeout, Hooks: Hooks{
		BeforeStart: beforeStart,
		AfterStop:   func(error) { s.calls <- fmt.Sprintf("afterstop after %d returned", s.returned) },
	}}
}

// noCall fails if a lifecycle call was made. Every call the code under test
// makes before the point of the check is in the buffered channel by then,
// since the calls are synchronous.
func (s *stubborn) noCall(t *testing.T, when string) {
	t.Helper()
	select {
	case c := <-s.calls:
		t.Fatalf("%s: %s called while its Serve still runs: %q", when, s.name, c)
	default:
	}
}

// wantCalls waits for the lifecycle calls, in order.
func (s *stubborn) wantCalls(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	for range want {
		select {
		case c := <-s.calls:
			got = append(got, c)
		case <-time.After(safety):
			t.Fatalf("%s: calls %q, want %q", s.name, got, want)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: calls %q, want %q", s.name, got, want)
	}
}

func (s *stubborn) waitStart(t *testing.T, n int) {
	t.Helper()
	select {
	case got := <-s.starts:
		if got != n {
			t.Fatalf("%s: incarnation %d started, want %d", s.name, got, n)
		}
	case <-time.After(safety):
		t.Fatalf("%s: incarnation %d did not start", s.name, n)
	}
}

func (s *stubborn) letReturn(t *testing.T) {
	t.Helper()
	select {
	case s.release <- struct{}{}:
	case <-time.After(safety):
		t.Fatalf("%s: no incarnation running", s.name)
	}
}

// These tests run in a synctest bubble with the real clock: time advances
// only when every goroutine of the bubble is blocked, so a shutdown timeout
// elapses exactly, at once, and only once the code under test waits on it.

// The supervisor's Serve returns after exactly the shutdown timeout while a
// child ignores its context, and that child's Terminated and AfterStop run
// only once its Serve has returned (on its goroutine), not at the shutdown.
// This is the publisher's race: Serve's tail and Terminated both wrote its
// carry.
func TestAbandonedChildTerminatedAfterServeReturns(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		sup := New(Spec{Name: "s", EventHook: rec.hook})
		st := newStubborn("stubborn")
		if err := sup.Add(st.spec(3*time.Second, nil)); err != nil {
			t.Fatal(err)
		}
		s := serve(sup)
		st.waitStart(t, 1)
		began := time.Now()
		s.cancel()
		if err := s.wait(t); !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve = %v", err)
		}
		if took := time.Since(began); took != 3*time.Second {
			t.Fatalf("Serve returned %v after the cancel, want the shutdown timeout, 3s", took)
		}
		rec.waitFor(t, EventStopTimeout, "stubborn")
		if e := rec.waitFor(t, EventStop, "stubborn"); !errors.Is(e.Err, context.Canceled) {
			t.Fatalf("stop reason %v", e.Err)
		}
		st.noCall(t, "after Serve returned")
		st.letReturn(t)
		st.wantCalls(t, "terminated after 1 returned", "afterstop after 1 returned")
	})
}

// A sibling's restart abandons a child that ignores its context; the restart
// of that child waits for its Serve to return (no second incarnation runs
// beside the first), and only then is BeforeRestart called and Serve started
// again. At the shutdown that follows it is abandoned again, and terminated
// once that Serve returns.
func TestAbandonedChildRestartWaitsForServe(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		sup := New(Spec{Name: "s", Strategy: OneForAll, EventHook: rec.hook,
			Backoff: Backoff{Min: time.Second, RandomFactor: -1}})
		st := newStubborn("stubborn")
		l := &log{}
		if err := sup.Add(st.spec(2*time.Second, func() { l.add("start stubborn") })); err != nil {
			t.Fatal(err)
		}
		flaky := newCtl("flaky", l)
		flaky.add(t, sup, ChildSpec{})
		s := serve(sup)
		st.waitStart(t, 1)
		flaky.waitStart(t, 1)
		began := time.Now()

		flaky.fail(t, errBoom) // stubborn is abandoned after 2s, the group restarts 1s later
		flaky.waitStart(t, 2)
		if took := time.Since(began); took != 3*time.Second {
			t.Fatalf("flaky restarted after %v, want 3s (stop timeout + backoff)", took)
		}
		rec.waitFor(t, EventStopTimeout, "stubborn")
		// BeforeStart runs on the loop in start order, stubborn first: had it
		// started, the log would say so by now.
		if got, want := l.get(), []string{"start stubborn", "start flaky", "start flaky"}; !slices.Equal(got, want) {
			t.Fatalf("starts %v, want %v: stubborn restarted while its Serve still runs", got, want)
		}
		st.noCall(t, "restart due")

		st.letReturn(t)
		st.waitStart(t, 2)
		st.wantCalls(t, "before-restart after 1 returned")

		began = time.Now()
		s.cancel() // flaky stops at once, stubborn is abandoned after 2s
		if err := s.wait(t); !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve = %v", err)
		}
		if took := time.Since(began); took != 2*time.Second {
			t.Fatalf("Serve returned %v after the cancel, want 2s", took)
		}
		st.noCall(t, "shutdown")
		st.letReturn(t)
		st.wantCalls(t, "terminated after 2 returned", "afterstop after 2 returned")
	})
}

// A sub-supervisor escalates and abandons a child that ignores its context.
// Its parent restarts it: the forwarded BeforeRestart and the next Serve call
// of the sub-supervisor both wait for the abandoned Serve. Then it escalates
// again and the parent stops it for good: the forwarded Terminated waits too.
func TestForwardedCallsWaitForAbandonedChild(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		st := newStubborn("stubborn")
		starts := make(chan struct{}, 10)
		sub := New(Spec{Name: "sub", Backoff: noDelay, Decider: func(Failure) Directive { return Escalate }})
		if err := sub.Add(st.spec(time.Second, func() { starts <- struct{}{} })); err != nil {
			t.Fatal(err)
		}
		bad := newCtl("bad", nil)
		bad.add(t, sub, ChildSpec{})
		rec := newRecorder()
		decision := Restart
		root := New(Spec{Name: "root", Backoff: noDelay, EventHook: rec.hook,
			Decider: func(Failure) Directive { return decision }})
		root.Add(ChildSpec{Service: sub})
		s := serve(root)

		// Round 1: escalation, abandon, restart by the parent.
		st.waitStart(t, 1)
		<-starts
		bad.waitStart(t, 1)
		bad.fail(t, errBoom)
		rec.waitFor(t, EventRestart, "sub")
		bad.waitStart(t, 2) // sub's next Serve runs; bad was added after stubborn
		select {
		case <-starts:
			t.Fatal("stubborn started again while its abandoned Serve still runs")
		default:
		}
		st.noCall(t, "subtree restart")
		st.letReturn(t)
		st.waitStart(t, 2)
		st.wantCalls(t, "before-restart after 1 returned")

		// Round 2: escalation, abandon, Stop by the parent.
		decision = Stop // read by root's loop after bad's failure below
		bad.fail(t, errBoom)
		rec.waitFor(t, EventStop, "sub")
		st.noCall(t, "subtree stopped for good")
		st.letReturn(t)
		st.wantCalls(t, "terminated after 2 returned", "afterstop after 2 returned")
		if err := s.stop(t); !errors.Is(err, context.Canceled) {
			t.Fatalf("root Serve = %v", err)
		}
		if n, term := bad.count(); n != 2 || term != 1 {
			t.Fatalf("bad: starts=%d terminated=%d, want 2/1", n, term)
		}
	})
}
