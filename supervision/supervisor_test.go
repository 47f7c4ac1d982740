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

func TestRestartOnFailure(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	clock := NewFakeClock(t0)
	sup := New(Spec{Name: "root", Clock: clock, EventHook: rec.hook, Backoff: Backoff{Min: time.Second, RandomFactor: -1}})
	c := newCtl("a", nil)
	var beforeStart int
	var hookCause error
	if err := sup.Add(ChildSpec{Name: "a", Service: c, Hooks: Hooks{
		BeforeStart:   func() { beforeStart++ },
		BeforeRestart: func(err error) { hookCause = err },
	}}); err != nil {
		t.Fatal(err)
	}
	s := serve(sup)
	c.waitStart(t, 1)
	rec.waitFor(t, EventStart, "a")

	c.fail(t, errBoom)
	f := rec.waitFor(t, EventFailure, "a")
	if f.Directive != Restart || !errors.Is(f.Err, errBoom) || f.Stats.Failures != 1 || f.Supervisor != "root" {
		t.Fatalf("failure event: %+v", f)
	}
	r := rec.waitFor(t, EventRestart, "a")
	if r.Delay != time.Second || r.Stats.TotalRestarts != 1 {
		t.Fatalf("restart event: %+v", r)
	}
	clock.BlockUntil(1)
	clock.Advance(time.Second)
	c.waitStart(t, 2)
	rec.waitFor(t, EventStart, "a")

	if err := s.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v", err)
	}
	if beforeStart != 2 || !errors.Is(hookCause, errBoom) {
		t.Fatalf("hooks: beforeStart=%d cause=%v", beforeStart, hookCause)
	}
	if rs := c.restartCauses(); len(rs) != 1 || !errors.Is(rs[0], errBoom) {
		t.Fatalf("BeforeRestart method calls: %v", rs)
	}
	if _, term := c.count(); term != 1 {
		t.Fatalf("Terminated called %d times on shutdown, want 1", term)
	}
}

// failing fails on every start.
func failing(err error) ServiceFunc {
	return func(context.Context) error { return err }
}

func TestWindowNFailuresRestartThenEscalate(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	sup := New(Spec{Name: "s", MaxRestarts: 3, Window: 10 * time.Second, Clock: NewFakeClock(t0), Backoff: noDelay, EventHook: rec.hook})
	sup.Add(ChildSpec{Name: "w", Service: failing(errBoom)})
	err := sup.Serve(context.Background())
	var esc *EscalationError
	if !errors.As(err, &esc) || esc.Supervisor != "s" || esc.Child != "w" || !errors.Is(err, errBoom) {
		t.Fatalf("Serve = %v", err)
	}
	var got []string
	for len(rec.ch) > 0 {
		e := <-rec.ch
		if e.Kind == EventFailure {
			got = append(got, fmt.Sprintf("%d/%v/%v", e.Stats.Failures, e.Directive, e.Stats.TotalRestarts))
		}
		if e.Kind == EventEscalation {
			got = append(got, "escalation")
		}
	}
	want := []string{"1/restart/0", "2/restart/1", "3/restart/2", "4/escalate/3", "escalation"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestFailuresSpreadOverWindowKeepRestarting(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	clock := NewFakeClock(t0)
	var seen []Failure
	sup := New(Spec{Name: "s", MaxRestarts: 2, Window: 10 * time.Second, Clock: clock, Backoff: noDelay, EventHook: rec.hook,
		Decider: func(f Failure) Directive { seen = append(seen, f); return DefaultDecider(f) }})
	c := newCtl("w", nil)
	sup.Add(ChildSpec{Name: "w", Service: c})
	s := serve(sup)
	for i := 1; i <= 8; i++ {
		c.waitStart(t, i)
		clock.Advance(6 * time.Second)
		c.fail(t, errBoom)
		rec.waitFor(t, EventRestart, "w")
	}
	c.waitStart(t, 9)
	if err := s.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v", err)
	}
	for i, f := range seen {
		wantFailures := min(i+1, 2)
		if f.Exhausted || f.Stats.Failures != wantFailures || f.Stats.TotalRestarts != i || f.Stats.LastUptime != 6*time.Second {
			t.Fatalf("failure %d: %+v", i, f)
		}
		if wantFailures == 2 && f.Stats.FirstFailure != f.Stats.LastFailure.Add(-6*time.Second) {
			t.Fatalf("failure %d window: %+v", i, f.Stats)
		}
	}
	// Exactly the window length apart is outside the window.
	var c2 child
	c2.recordFailure(t0, 10*time.Second, false)
	c2.recordFailure(t0.Add(10*time.Second), 10*time.Second, false)
	if len(c2.failures) != 1 {
		t.Fatalf("failure exactly Window old still counted")
	}
}

func TestEscalationThroughTwoLevelsToRoot(t *testing.T) {
	defer goleak.VerifyNone(t)
	errDisk := errors.New("disk on fire")
	clock := NewFakeClock(t0)

	leaf := New(Spec{Name: "leaf", MaxRestarts: 1, Clock: clock, Backoff: noDelay})
	worker := newCtl("worker", nil)
	leaf.Add(ChildSpec{Name: "worker", Service: worker})

	mid := New(Spec{Name: "mid", Clock: clock, Backoff: noDelay,
		Decider: func(Failure) Directive { return Escalate }})
	mid.Add(ChildSpec{Service: leaf}) // name taken from leaf.Name()

	type seen struct {
		f          Failure
		terminated int
	}
	decisions := make(chan seen, 10)
	calls := 0
	rec := newRecorder()
	root := New(Spec{Name: "root", Clock: clock, Backoff: noDelay, EventHook: rec.hook,
		Decider: func(f Failure) Directive {
			_, term := worker.count()
			decisions <- seen{f, term}
			calls++
			if calls == 1 {
				return Restart
			}
			return Stop
		}})
	root.Add(ChildSpec{Service: mid})

	s := serve(root)
	for round := 1; round <= 2; round++ {
		// leaf: first failure restarts, second is exhausted and escalates.
		worker.waitStart(t, 2*round-1)
		worker.fail(t, errDisk)
		worker.waitStart(t, 2*round)
		worker.fail(t, errDisk)

		d := <-decisions
		if !errors.Is(d.f.Err, errDisk) {
			t.Fatalf("root decider: errors.Is(%v, errDisk) = false", d.f.Err)
		}
		var esc *EscalationError
		if !errors.As(d.f.Err, &esc) || esc.Supervisor != "mid" || esc.Child != "leaf" || d.f.Child != "mid" || d.f.Supervisor != "root" {
			t.Fatalf("root decider saw %+v", d.f)
		}
		var inner *EscalationError
		if !errors.As(esc.Err, &inner) || inner.Supervisor != "leaf" || inner.Child != "worker" {
			t.Fatalf("inner escalation: %v", esc.Err)
		}
		if d.terminated != 0 {
			t.Fatalf("worker terminated before root decided")
		}
		if round == 1 {
			rec.waitFor(t, EventRestart, "mid")
		}
	}
	stop := rec.waitFor(t, EventStop, "mid")
	if !errors.Is(stop.Err, errDisk) {
		t.Fatalf("stop reason %v", stop.Err)
	}
	if _, term := worker.count(); term != 1 {
		t.Fatalf("worker Terminated %d times after root Stop, want 1", term)
	}
	if n, _ := worker.count(); n != 4 {
		t.Fatalf("worker started %d times, want 4 (no re-creation after Stop)", n)
	}
	if err := s.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("root Serve = %v", err)
	}
	if _, term := worker.count(); term != 1 {
		t.Fatalf("worker Terminated %d times, want 1", term)
	}
	// The subtree restart reached the worker as BeforeRestart with the escalation.
	var sawSubtree bool
	for _, c := range worker.restartCauses() {
		var esc *EscalationError
		if errors.As(c, &esc) && esc.Supervisor == "mid" {
			sawSubtree = true
		}
	}
	if !sawSubtree {
		t.Fatalf("worker BeforeRestart causes %v lack the subtree restart", worker.restartCauses())
	}
}

func TestOneForAllRestartsAllSiblings(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := &log{}
	rec := newRecorder()
	sup := New(Spec{Name: "s", Strategy: OneForAll, Clock: NewFakeClock(t0), Backoff: noDelay, EventHook: rec.hook})
	cs := []*ctl{newCtl("a", l), newCtl("b", l), newCtl("c", l)}
	for _, c := range cs {
		c.add(t, sup, ChildSpec{})
	}
	s := serve(sup)
	for _, c := range cs {
		c.waitStart(t, 1)
	}
	cs[1].fail(t, errBoom)
	for _, c := range cs {
		c.waitStart(t, 2)
	}
	got := l.get()[3:]
	want := []string{"stop c", "stop a", "start a", "start b", "start c"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	for _, c := range cs {
		if rs := c.restartCauses(); len(rs) != 1 || !errors.Is(rs[0], errBoom) {
			t.Fatalf("%s BeforeRestart: %v", c.name, rs)
		}
		if _, term := c.count(); term != 0 {
			t.Fatalf("%s terminated during a restart", c.name)
		}
	}
	s.stop(t)
}

func TestRestForOneRestartsLaterSiblings(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := &log{}
	sup := New(Spec{Name: "s", Strategy: RestForOne, Clock: NewFakeClock(t0), Backoff: noDelay})
	cs := []*ctl{newCtl("a", l), newCtl("b", l), newCtl("c", l), newCtl("d", l)}
	for _, c := range cs {
		c.add(t, sup, ChildSpec{})
	}
	s := serve(sup)
	for _, c := range cs {
		c.waitStart(t, 1)
	}
	cs[1].fail(t, errBoom)
	for _, c := range cs[1:] {
		c.waitStart(t, 2)
	}
	got := l.get()[4:]
	want := []string{"stop d", "stop c", "start b", "start c", "start d"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if n, _ := cs[0].count(); n != 1 {
		t.Fatalf("earlier sibling restarted")
	}
	s.stop(t)
	if got := l.get()[9:]; !slices.Equal(got, []string{"stop d", "stop c", "stop b", "stop a"}) {
		t.Fatalf("shutdown order %v", got)
	}
}

func TestPanicIsFailure(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	sup := New(Spec{Name: "s", Clock: NewFakeClock(t0), Backoff: noDelay, EventHook: rec.hook})
	c := newCtl("p", nil)
	first := true
	sup.Add(ChildSpec{Name: "p", Service: ServiceFunc(func(ctx context.Context) error {
		if first {
			first = false
			panic("kaboom")
		}
		return c.Serve(ctx)
	})})
	s := serve(sup)
	e := rec.waitFor(t, EventFailure, "p")
	var pe *PanicError
	if !errors.As(e.Err, &pe) || pe.Value != "kaboom" || len(e.Stack) == 0 || len(pe.Stack) == 0 || e.Directive != Restart {
		t.Fatalf("failure event %+v", e)
	}
	c.waitStart(t, 1) // restarted after the panic
	s.stop(t)
}

func TestShutdownReverseOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := &log{}
	rec := newRecorder()
	sup := New(Spec{Name: "s", Clock: NewFakeClock(t0), EventHook: rec.hook})
	var cs []*ctl
	for _, n := range []string{"a", "b", "c"} {
		c := newCtl(n, l)
		cs = append(cs, c)
		c.add(t, sup, ChildSpec{Hooks: Hooks{AfterStop: func(error) { l.add("afterstop " + n) }}})
	}
	s := serve(sup)
	for _, c := range cs {
		c.waitStart(t, 1)
	}
	if err := s.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v", err)
	}
	want := []string{"start a", "start b", "start c", "stop c", "stop b", "stop a", "afterstop c", "afterstop b", "afterstop a"}
	if got := l.get(); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, n := range []string{"c", "b", "a"} {
		if e := rec.waitFor(t, EventStop, n); !errors.Is(e.Err, context.Canceled) {
			t.Fatalf("stop reason %v", e.Err)
		}
	}
}

func TestShutdownTimeout(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	clock := NewFakeClock(t0)
	sup := New(Spec{Name: "s", Clock: clock, EventHook: rec.hook})
	release := make(chan struct{})
	exited := make(chan struct{})
	started := make(chan struct{})
	sup.Add(ChildSpec{Name: "polite", Service: newCtl("polite", nil)})
	sup.Add(ChildSpec{Name: "stubborn", ShutdownTimeout: 3 * time.Second, Service: ServiceFunc(func(context.Context) error {
		defer close(exited)
		close(started)
		<-release // ignores its context
		return nil
	})})
	s := serve(sup)
	<-started
	s.cancel()
	clock.BlockUntil(1)
	clock.Advance(3 * time.Second)
	if err := s.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v", err)
	}
	rec.waitFor(t, EventStopTimeout, "stubborn")
	rec.waitFor(t, EventStop, "polite")
	close(release)
	<-exited
}

func TestBackoffDelayFormula(t *testing.T) {
	r := 0.5
	b := Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, RandomFactor: 0.2, Rand: func() float64 { return r }}
	for n, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond} {
		if got := b.Delay(n); got != want {
			t.Fatalf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
	if got := b.Delay(1000); got != 10*time.Second {
		t.Fatalf("Delay(1000) = %v", got)
	}
	r = 0 // lowest jitter factor: 1 - RandomFactor
	if got := b.Delay(2); got != 320*time.Millisecond {
		t.Fatalf("low jitter: %v", got)
	}
	r = 0.75 // factor 1.1
	if got := b.Delay(2); got != 440*time.Millisecond {
		t.Fatalf("high jitter: %v", got)
	}
	if got := b.Delay(100); got != 10*time.Second {
		t.Fatalf("jitter above Max must be capped: %v", got)
	}
	// Zero value: documented defaults (100ms, x2, 10s) with jitter in [0.8, 1.2].
	var z Backoff
	z.Rand = func() float64 { return 0.5 }
	if got := z.Delay(0); got != 100*time.Millisecond {
		t.Fatalf("zero value Delay(0) = %v", got)
	}
	if got := z.Delay(7); got != 10*time.Second {
		t.Fatalf("zero value Delay(7) = %v", got)
	}
	for i := 0; i < 100; i++ {
		if d := (Backoff{}).Delay(3); d < 640*time.Millisecond || d > 960*time.Millisecond {
			t.Fatalf("random jitter out of range: %v", d)
		}
	}
	if got := noDelay.Delay(5); got != 0 {
		t.Fatalf("negative Min: %v", got)
	}
}

func TestBackoffResetAfterHealthyRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	clock := NewFakeClock(t0)
	sup := New(Spec{Name: "s", Clock: clock, EventHook: rec.hook, MaxRestarts: 100,
		Backoff: Backoff{Min: time.Second, Max: time.Minute, RandomFactor: -1, ResetAfter: 30 * time.Second}})
	c := newCtl("w", nil)
	sup.Add(ChildSpec{Name: "w", Service: c})
	s := serve(sup)
	n := 1
	failAfter := func(uptime, wantDelay time.Duration) {
		t.Helper()
		c.waitStart(t, n)
		n++
		clock.Advance(uptime)
		c.fail(t, errBoom)
		e := rec.waitFor(t, EventRestart, "w")
		if e.Delay != wantDelay {
			t.Fatalf("after %v uptime: delay %v, want %v", uptime, e.Delay, wantDelay)
		}
		clock.BlockUntil(1)
		clock.Advance(e.Delay)
	}
	failAfter(0, time.Second)
	failAfter(time.Second, 2*time.Second)
	failAfter(29*time.Second, 4*time.Second)
	failAfter(30*time.Second, time.Second) // healthy run resets the attempts
	failAfter(0, 2*time.Second)
	c.waitStart(t, n)
	s.stop(t)
}

func TestTransientAndTemporary(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	sup := New(Spec{Name: "s", Clock: NewFakeClock(t0), Backoff: noDelay, EventHook: rec.hook})
	trOK, trFail := newCtl("tr-ok", nil), newCtl("tr-fail", nil)
	tmpOK, tmpFail := newCtl("tmp-ok", nil), newCtl("tmp-fail", nil)
	perm := newCtl("perm", nil)
	sup.Add(ChildSpec{Name: "tr-ok", Service: trOK, Restart: Transient})
	sup.Add(ChildSpec{Name: "tr-fail", Service: trFail, Restart: Transient})
	sup.Add(ChildSpec{Name: "tmp-ok", Service: tmpOK, Restart: Temporary})
	sup.Add(ChildSpec{Name: "tmp-fail", Service: tmpFail, Restart: Temporary})
	sup.Add(ChildSpec{Name: "perm", Service: perm})
	s := serve(sup)
	for _, c := range []*ctl{trOK, trFail, tmpOK, tmpFail, perm} {
		c.waitStart(t, 1)
	}

	trOK.fail(t, nil) // normal exit: ends for good
	if e := rec.waitFor(t, EventStop, "tr-ok"); e.Err != nil {
		t.Fatalf("transient stop reason %v", e.Err)
	}
	trFail.fail(t, errBoom) // failure: restarted
	trFail.waitStart(t, 2)

	tmpOK.fail(t, nil)
	rec.waitFor(t, EventStop, "tmp-ok")
	tmpFail.fail(t, errBoom)
	if e := rec.waitFor(t, EventFailure, "tmp-fail"); e.Directive != Stop {
		t.Fatalf("temporary failure directive %v", e.Directive)
	}
	if e := rec.waitFor(t, EventStop, "tmp-fail"); !errors.Is(e.Err, errBoom) {
		t.Fatalf("temporary stop reason %v", e.Err)
	}

	perm.fail(t, nil) // a permanent child must not return
	if e := rec.waitFor(t, EventFailure, "perm"); !errors.Is(e.Err, ErrUnexpectedReturn) || e.Directive != Restart {
		t.Fatalf("permanent nil return: %+v", e)
	}
	perm.waitStart(t, 2)

	s.stop(t)
	for _, c := range []*ctl{trOK, tmpOK, tmpFail} {
		if n, term := c.count(); n != 1 || term != 1 {
			t.Fatalf("%s: starts=%d terminated=%d, want 1/1", c.name, n, term)
		}
	}
	// Removed children are not started again by a later Serve.
	s = serve(sup)
	trFail.waitStart(t, 3)
	perm.waitStart(t, 3)
	s.stop(t)
	if n, _ := trOK.count(); n != 1 {
		t.Fatal("removed child re-created")
	}
}

func TestAddDuringServeAndValidation(t *testing.T) {
	defer goleak.VerifyNone(t)
	sup := New(Spec{Name: "s", Clock: NewFakeClock(t0)})
	early := newCtl("early", nil)
	early.add(t, sup, ChildSpec{})
	s := serve(sup)
	early.waitStart(t, 1) // Serve is running now
	c := newCtl("late", nil)
	if err := sup.Add(ChildSpec{Name: "late", Service: c}); err != nil {
		t.Fatal(err)
	}
	c.waitStart(t, 1)
	if err := sup.Add(ChildSpec{Name: "late", Service: c}); err == nil {
		t.Fatal("duplicate name accepted")
	}
	if err := sup.Add(ChildSpec{Name: "x"}); err == nil {
		t.Fatal("nil service accepted")
	}
	if err := sup.Add(ChildSpec{Service: c}); err == nil {
		t.Fatal("nameless child accepted")
	}
	if err := sup.Serve(context.Background()); !errors.Is(err, errAlreadyServing) {
		t.Fatalf("second Serve = %v", err)
	}
	s.stop(t)
}

func TestStringers(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Escalate.String(), "escalate"}, {Directive(0).String(), "Directive(0)"},
		{RestForOne.String(), "rest-for-one"}, {Transient.String(), "transient"},
		{EventStopTimeout.String(), "stop-timeout"},
	} {
		if c.got != c.want {
			t.Errorf("%q != %q", c.got, c.want)
		}
	}
}

// A sibling's restart stops a sub-supervisor only to start it again: its
// actors must not be terminated (their mailboxes keep their messages), but
// they do restart with fresh state.
func TestSubtreeStoppedForRestartKeepsMailboxes(t *testing.T) {
	defer goleak.VerifyNone(t)
	clock := NewFakeClock(t0)
	rec := newRecorder()
	f := newFactory()
	a := NewActor(10, f.new)
	sub := New(Spec{Name: "sub", Clock: clock, Backoff: noDelay})
	sub.Add(ChildSpec{Name: "actor", Service: a})
	root := New(Spec{Name: "root", Strategy: OneForAll, Clock: clock, Backoff: Backoff{Min: time.Second, RandomFactor: -1}, EventHook: rec.hook})
	root.Add(ChildSpec{Service: sub})
	flaky := newCtl("flaky", nil)
	flaky.add(t, root, ChildSpec{})
	s := serve(root)
	flaky.waitStart(t, 1)
	a.Send("one")
	f.wait(t, "one")

	flaky.fail(t, errBoom)
	rec.waitFor(t, EventRestart, "flaky")
	clock.BlockUntil(1)
	if err := a.Send("two"); err != nil {
		t.Fatalf("Send while the subtree restarts = %v", err)
	}
	clock.Advance(time.Second)
	f.wait(t, "two")
	flaky.waitStart(t, 2)
	s.stop(t)
	if got, want := f.log.get(), []string{"1:one:1", "2:two:1"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if err := a.Send("three"); !errors.Is(err, ErrStopped) {
		t.Fatalf("Send after tree shutdown = %v", err)
	}
}
