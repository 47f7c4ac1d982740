package supervision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// decisions records what a decider saw, as "failures/directive/progressed",
// and lets the test wait for each one.
type decisions struct{ ch chan string }

func newDecisions() *decisions { return &decisions{ch: make(chan string, 1000)} }

// decider wraps DefaultDecider.
func (d *decisions) decider(f Failure) Directive {
	dir := DefaultDecider(f)
	d.ch <- fmt.Sprintf("%d/%v/%v", f.Stats.Failures, dir, f.Stats.Progressed)
	return dir
}

func (d *decisions) next(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-d.ch:
		if got != want {
			t.Fatalf("decision %s, want %s", got, want)
		}
	case <-time.After(safety):
		t.Fatalf("no decision, want %s", want)
	}
}

// The flapping load balancer: every incarnation makes progress, then loses
// its connection. Its failures never exhaust the intensity, however many and
// however close together (the fake time does not move at all here).
func TestProgressEachIncarnationRestartsIndefinitely(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	d := newDecisions()
	sup := New(Spec{Name: "s", MaxRestarts: 2, Window: time.Minute, Clock: NewFakeClock(t0), Backoff: noDelay,
		EventHook: rec.hook, Decider: d.decider})
	c := newCtl("w", nil)
	c.add(t, sup, ChildSpec{})
	s := serve(sup)
	for i := 1; i <= 50; i++ {
		c.waitStart(t, i)
		c.progress(t)
		c.fail(t, errBoom)
		d.next(t, "1/restart/true")
		if e := rec.waitFor(t, EventFailure, "w"); !e.Stats.Progressed || e.Stats.Failures != 1 || e.Stats.TotalRestarts != i-1 {
			t.Fatalf("failure %d event stats %+v", i, e.Stats)
		}
	}
	c.waitStart(t, 51)
	if err := s.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v", err)
	}
	for len(rec.ch) > 0 {
		if e := <-rec.ch; e.Kind == EventEscalation {
			t.Fatalf("escalation: %+v", e)
		}
	}
}

// Without progress the intensity is today's: MaxRestarts+1 failures within
// the window escalate. After a failure with progress, the count starts again
// at that failure: it is the first of the new window, and MaxRestarts more
// failures without progress then escalate.
func TestProgressThenFailuresWithoutProgressEscalate(t *testing.T) {
	defer goleak.VerifyNone(t)
	clock := NewFakeClock(t0)
	d := newDecisions()
	var seen []Failure
	sup := New(Spec{Name: "s", MaxRestarts: 2, Window: time.Minute, Clock: clock, Backoff: noDelay,
		Decider: func(f Failure) Directive { seen = append(seen, f); return d.decider(f) }})
	c := newCtl("w", nil)
	c.add(t, sup, ChildSpec{})
	s := serve(sup)
	steps := []struct {
		progress bool
		want     string
	}{
		{false, "1/restart/false"},
		{false, "2/restart/false"},
		{true, "1/restart/true"}, // would have been the third: exhausted
		{false, "2/restart/false"},
		{false, "3/escalate/false"},
	}
	for i, st := range steps {
		c.waitStart(t, i+1)
		clock.Advance(time.Second)
		if st.progress {
			c.progress(t)
		}
		c.fail(t, errBoom)
		d.next(t, st.want)
	}
	var esc *EscalationError
	if err := s.wait(t); !errors.As(err, &esc) || !errors.Is(err, errBoom) {
		t.Fatalf("Serve = %v", err)
	}
	// The window restarted at the failure with progress (the third, at t0+3s).
	if last := seen[len(seen)-1]; !last.Exhausted || last.Stats.FirstFailure != t0.Add(3*time.Second) || last.Stats.LastFailure != t0.Add(5*time.Second) {
		t.Fatalf("last failure %+v", last)
	}
}

// A failing child with no progress at all escalates exactly as before.
func TestNoProgressEscalatesAsBefore(t *testing.T) {
	defer goleak.VerifyNone(t)
	d := newDecisions()
	sup := New(Spec{Name: "s", MaxRestarts: 3, Window: 10 * time.Second, Clock: NewFakeClock(t0), Backoff: noDelay, Decider: d.decider})
	sup.Add(ChildSpec{Name: "w", Service: failing(errBoom)})
	err := sup.Serve(context.Background())
	var esc *EscalationError
	if !errors.As(err, &esc) || esc.Child != "w" {
		t.Fatalf("Serve = %v", err)
	}
	for _, want := range []string{"1/restart/false", "2/restart/false", "3/restart/false", "4/escalate/false"} {
		d.next(t, want)
	}
}

// Progress marks every ancestor incarnation: top > mid > leaf > worker. A
// worker's progress makes the escalation of leaf a failure with progress at
// mid, and the escalation of mid one at top; so top gives up only after a
// whole mid incarnation without progress.
func TestProgressMarksAncestors(t *testing.T) {
	defer goleak.VerifyNone(t)
	clock := NewFakeClock(t0)
	worker := newCtl("worker", nil)
	leaf := New(Spec{Name: "leaf", Clock: clock, Backoff: noDelay, Decider: func(Failure) Directive { return Escalate }})
	worker.add(t, leaf, ChildSpec{})
	atMid, atTop := newDecisions(), newDecisions()
	mid := New(Spec{Name: "mid", MaxRestarts: 1, Clock: clock, Backoff: noDelay, Decider: atMid.decider})
	mid.Add(ChildSpec{Service: leaf})
	top := New(Spec{Name: "top", MaxRestarts: 1, Clock: clock, Backoff: noDelay, Decider: atTop.decider})
	top.Add(ChildSpec{Service: mid})
	Progress(context.Background()) // not from a supervisor: a no-op
	s := serve(top)

	// mid incarnation 1: progress, then a failure without.
	worker.waitStart(t, 1)
	worker.progress(t)
	worker.fail(t, errBoom)
	atMid.next(t, "1/restart/true")
	worker.waitStart(t, 2)
	worker.fail(t, errBoom)
	atMid.next(t, "2/escalate/false")
	atTop.next(t, "1/restart/true") // mid's incarnation made progress through its grandchild

	// mid incarnation 2: no progress at all.
	worker.waitStart(t, 3)
	worker.fail(t, errBoom)
	atMid.next(t, "1/restart/false")
	worker.waitStart(t, 4)
	worker.fail(t, errBoom)
	atMid.next(t, "2/escalate/false")
	atTop.next(t, "2/escalate/false")

	var esc *EscalationError
	if err := s.wait(t); !errors.As(err, &esc) || esc.Supervisor != "top" || esc.Child != "mid" || !errors.Is(err, errBoom) {
		t.Fatalf("top Serve = %v", err)
	}
}

// After a failure with progress the backoff restarts from Min, whatever the
// uptime (ResetAfter is off here), and grows again from there.
func TestBackoffRestartsFromMinAfterProgress(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	clock := NewFakeClock(t0)
	sup := New(Spec{Name: "s", Clock: clock, EventHook: rec.hook, MaxRestarts: 100,
		Backoff: Backoff{Min: time.Second, Max: time.Minute, RandomFactor: -1, ResetAfter: -1}})
	c := newCtl("w", nil)
	c.add(t, sup, ChildSpec{})
	s := serve(sup)
	n := 1
	fail := func(progress bool, wantDelay time.Duration) {
		t.Helper()
		c.waitStart(t, n)
		n++
		if progress {
			c.progress(t)
		}
		c.fail(t, errBoom)
		e := rec.waitFor(t, EventRestart, "w")
		if e.Delay != wantDelay || e.Stats.Progressed != progress {
			t.Fatalf("progress %v: delay %v (progressed %v), want %v", progress, e.Delay, e.Stats.Progressed, wantDelay)
		}
		clock.BlockUntil(1)
		clock.Advance(e.Delay)
	}
	fail(false, time.Second)
	fail(false, 2*time.Second)
	fail(false, 4*time.Second)
	fail(true, time.Second)
	fail(false, 2*time.Second)
	fail(true, time.Second)
	c.waitStart(t, n)
	s.stop(t)
}

// HealthyAfter: an incarnation that ran that long before failing counts as
// having made progress (for its own intensity and for its ancestors); a
// shorter one does not. The child's setting overrides the Spec's, and a
// negative one turns it off.
func TestHealthyAfterCountsAsProgress(t *testing.T) {
	defer goleak.VerifyNone(t)
	clock := NewFakeClock(t0)
	worker := newCtl("worker", nil)
	off := newCtl("off", nil)
	atSub, atTop := newDecisions(), newDecisions()
	sub := New(Spec{Name: "sub", MaxRestarts: 1, Window: time.Minute, HealthyAfter: 5 * time.Second, Clock: clock, Backoff: noDelay,
		Decider: func(f Failure) Directive {
			if f.Child == "off" {
				if f.Stats.Progressed {
					t.Errorf("off: HealthyAfter -1 counted %v uptime as progress", f.Stats.LastUptime)
				}
				return Restart
			}
			return atSub.decider(f)
		}})
	worker.add(t, sub, ChildSpec{})
	off.add(t, sub, ChildSpec{HealthyAfter: -1})
	top := New(Spec{Name: "top", MaxRestarts: 1, Clock: clock, Backoff: noDelay, Decider: atTop.decider})
	top.Add(ChildSpec{Service: sub})
	s := serve(top)

	worker.waitStart(t, 1)
	off.waitStart(t, 1)
	clock.Advance(time.Hour)
	off.fail(t, errBoom)
	off.waitStart(t, 2)
	for i := 1; i <= 10; i++ {
		clock.Advance(5 * time.Second)
		worker.fail(t, errBoom)
		atSub.next(t, "1/restart/true")
		worker.waitStart(t, i+1)
	}
	clock.Advance(4 * time.Second)
	worker.fail(t, errBoom)
	atSub.next(t, "2/escalate/false")
	atTop.next(t, "1/restart/true") // the healthy runs were progress of sub's incarnation
	worker.waitStart(t, 12)
	if err := s.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v", err)
	}
}

// The decider sees Progressed in Failure.Stats, so a custom one can decide on
// it; events carry it for metrics and logs.
func TestProgressedInEvents(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	sup := New(Spec{Name: "s", Clock: NewFakeClock(t0), Backoff: noDelay, EventHook: rec.hook})
	c := newCtl("w", nil)
	c.add(t, sup, ChildSpec{})
	s := serve(sup)
	c.waitStart(t, 1)
	c.progress(t)
	c.fail(t, errBoom)
	var got []string
	for _, k := range []EventKind{EventFailure, EventRestart, EventStart} {
		e := rec.waitFor(t, k, "w")
		got = append(got, fmt.Sprintf("%v:%v", k, e.Stats.Progressed))
	}
	c.waitStart(t, 2)
	c.fail(t, errBoom)
	e := rec.waitFor(t, EventFailure, "w")
	got = append(got, fmt.Sprintf("%v:%v", e.Kind, e.Stats.Progressed))
	c.waitStart(t, 3)
	s.stop(t)
	if want := []string{"failure:true", "restart:true", "start:true", "failure:false"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
