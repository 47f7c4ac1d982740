package supervision

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"
)

// receiver is a process that waits in Receive and keeps what it receives.
type receiver struct {
	mu   sync.Mutex
	got  []Signal
	trap bool
}

func (r *receiver) Serve(ctx context.Context) error {
	self := Self(ctx)
	self.TrapExits(r.trap)
	for {
		s, err := self.Receive(ctx)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.got = append(r.got, s)
		r.mu.Unlock()
	}
}

func (r *receiver) signals() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.got {
		out = append(out, s.String())
	}
	return out
}

// blocker is a process that runs until its context ends and then returns
// the error it was given (nil: a normal exit).
func blocker(ret error) ServiceFunc {
	return func(ctx context.Context) error {
		<-ctx.Done()
		return ret
	}
}

// spawnIdle spawns a receiver and waits until it waits in Receive.
func spawnIdle(t *testing.T, ctx context.Context, name string, trap bool) (*Process, *receiver) {
	t.Helper()
	r := &receiver{trap: trap}
	p := Spawn(ctx, name, r)
	if err := p.Idle(ctx); err != nil {
		t.Fatal(err)
	}
	return p, r
}

func equal(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// Every outcome of a link, in one table: the party exits normally or not,
// the other traps exits or not, the link is made before the exit or after
// it (then it is delivered at once), or removed before it.
func TestLinkOutcomes(t *testing.T) {
	errAbc := errors.New("abc")
	for _, tc := range []struct {
		name      string
		reason    error // the linked party's exit
		trap      bool
		after     bool // link once the party has exited
		unlink    bool // unlink before the exit
		wantState ProcessState
		wantSigs  []string
	}{
		{name: "abnormal ends a non-trapping party", reason: errAbc, wantState: ProcessExited},
		{name: "abnormal reaches a trapping party as a message", reason: errAbc, trap: true, wantState: ProcessWaiting, wantSigs: []string{"Exit(q, abc)"}},
		{name: "normal ends nobody", wantState: ProcessWaiting},
		{name: "normal reaches a trapping party as a message", trap: true, wantState: ProcessWaiting, wantSigs: []string{"Exit(q, normal)"}},
		{name: "link to an exited party, abnormal", reason: errAbc, after: true, wantState: ProcessExited},
		{name: "link to an exited party, trapping", reason: errAbc, trap: true, after: true, wantState: ProcessWaiting, wantSigs: []string{"Exit(q, abc)"}},
		{name: "link to an exited party, normal", after: true, wantState: ProcessWaiting},
		{name: "unlinked before the exit", reason: errAbc, unlink: true, wantState: ProcessWaiting},
		{name: "unlinked before the exit, trapping", reason: errAbc, trap: true, unlink: true, wantState: ProcessWaiting},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p, r := spawnIdle(t, ctx, "p", tc.trap)
			end := make(chan struct{})
			q := Spawn(ctx, "q", ServiceFunc(func(context.Context) error { <-end; return tc.reason }))
			if !tc.after {
				if err := p.Link(q); err != nil {
					t.Fatal(err)
				}
				if tc.unlink {
					q.Unlink(p) // either side removes the link
				}
			}
			close(end)
			<-q.Done()
			if tc.after {
				if err := p.Link(q); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Idle(ctx); err != nil {
				t.Fatal(err)
			}
			if st := p.State(); st != tc.wantState {
				t.Fatalf("p is %v, want %v", st, tc.wantState)
			}
			if got := r.signals(); !equal(got, tc.wantSigs) {
				t.Fatalf("p received %v, want %v", got, tc.wantSigs)
			}
			if tc.wantState == ProcessExited && !errors.Is(p.Reason(), tc.reason) {
				t.Fatalf("p exited with %v, want q's reason %v", p.Reason(), tc.reason)
			}
			if tc.wantState == ProcessExited {
				if err := p.Link(q); !errors.Is(err, ErrExited) {
					t.Fatalf("Link from an exited process = %v, want ErrExited", err)
				}
			}
			cancel()
			<-p.Done()
		})
	}
}

// A monitor delivers one Down with the reason, whatever the reason and
// whether the monitor traps exits or not, and never ends the monitor; a
// monitor of an exited party delivers at once; Demonitor means no Down, even
// one already queued. Run in a synctest bubble so that "no Down arrives" is
// checked once every goroutine is durably blocked, not after a sleep.
func TestMonitor(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		m, r := spawnIdle(t, ctx, "m", false)
		ends := map[string]chan struct{}{}
		spawn := func(name string, reason error) *Process {
			end := make(chan struct{})
			ends[name] = end
			return Spawn(ctx, name, ServiceFunc(func(context.Context) error { <-end; return reason }))
		}
		a := spawn("a", errors.New("boom"))
		b := spawn("b", nil)
		c := spawn("c", errors.New("never seen"))
		d := spawn("d", errors.New("queued, then demonitored"))
		for _, q := range []*Process{a, b} {
			if _, err := m.Monitor(q); err != nil {
				t.Fatal(err)
			}
		}
		refA2, _ := m.Monitor(a) // two monitors, two Downs
		refC, _ := m.Monitor(c)
		if !m.Demonitor(refC) {
			t.Fatal("Demonitor of an active monitor reported false")
		}
		m.TrapExits(true) // trapping changes nothing for monitors
		m.TrapExits(false)
		for _, name := range []string{"a", "b", "c"} {
			close(ends[name])
		}
		for _, q := range []*Process{a, b, c} {
			<-q.Done()
		}
		synctest.Wait()
		want := []string{"Down(a, boom)", "Down(a, boom)", "Down(b, normal)"}
		if got := r.signals(); !equal(sortedCopy(got), want) {
			t.Fatalf("m received %v, want %v (in any order)", got, want)
		}
		if st := m.State(); st != ProcessWaiting {
			t.Fatalf("the monitor is %v after abnormal exits, want waiting", st)
		}
		if m.Demonitor(refA2) {
			t.Fatal("Demonitor after the Down was taken reported true")
		}

		// Monitoring an exited party: the Down comes at once.
		if _, err := m.Monitor(a); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := r.signals(); len(got) != 4 || got[3] != "Down(a, boom)" {
			t.Fatalf("after monitoring an exited party m received %v", got)
		}

		// A Down queued and not yet taken is removed by Demonitor: stop m's
		// Receive first by monitoring d from a process that does not receive.
		quiet := Spawn(ctx, "quiet", blocker(nil))
		refD, _ := quiet.Monitor(d)
		close(ends["d"])
		<-d.Done()
		if !quiet.Demonitor(refD) {
			t.Fatal("Demonitor of a queued Down reported false")
		}
		if s, ok := quiet.takeSignal(); ok {
			t.Fatalf("a demonitored Down stayed queued: %v", s)
		}
		cancel()
		<-m.Done()
		<-quiet.Done()
	})
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// A link made while the other party exits is told exactly once: either the
// link is in place when the exit is propagated, or the Link finds the party
// exited and delivers the notice itself. Likewise for monitors. Run many
// times with the race detector; the iteration count bounds it.
func TestLinkAndMonitorRaceWithExit(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const rounds = 500
	for i := range rounds {
		p, r := spawnIdle(t, ctx, "p", true)
		end := make(chan struct{})
		q := Spawn(ctx, "q", ServiceFunc(func(context.Context) error { <-end; return errBoom }))
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); close(end) }()
		go func() {
			defer wg.Done()
			if err := p.Link(q); err != nil {
				t.Error(err)
			}
			if _, err := p.Monitor(q); err != nil {
				t.Error(err)
			}
		}()
		wg.Wait()
		<-q.Done()
		if err := p.Idle(ctx); err != nil {
			t.Fatal(err)
		}
		got := sortedCopy(r.signals())
		if want := []string{"Down(q, boom)", "Exit(q, boom)"}; !equal(got, want) {
			t.Fatalf("round %d: p received %v, want %v", i, got, want)
		}
		p.Kill(nil) // a trapping process takes even this as a message
		if err := p.Idle(ctx); err != nil {
			t.Fatal(err)
		}
		if got := r.signals(); got[len(got)-1] != "Exit(<nil>, normal)" {
			t.Fatalf("Kill(nil) of a trapping process: received %v", got)
		}
		p.TrapExits(false)
		p.Kill(errBoom)
		<-p.Done()
		if !errors.Is(p.Reason(), errBoom) {
			t.Fatalf("killed process exited with %v", p.Reason())
		}
	}
}

// Unlink racing an exit: either the exit came first (delivered) or the
// unlink did (nothing, ever); never a half of each. Checked in a synctest
// bubble, where Wait shows that nothing more is on its way.
func TestUnlinkRaceWithExit(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		delivered, none := 0, 0
		for range 200 {
			p, r := spawnIdle(t, ctx, "p", true)
			end := make(chan struct{})
			q := Spawn(ctx, "q", ServiceFunc(func(context.Context) error { <-end; return errBoom }))
			if err := q.Link(p); err != nil {
				t.Fatal(err)
			}
			go close(end)
			p.Unlink(q)
			<-q.Done()
			synctest.Wait()
			switch got := r.signals(); {
			case len(got) == 0:
				none++
			case equal(got, []string{"Exit(q, boom)"}):
				delivered++
			default:
				t.Fatalf("p received %v", got)
			}
			p.mu.Lock()
			_, stale := p.links[q]
			p.mu.Unlock()
			if stale {
				t.Fatal("p still holds the link to q")
			}
			p.Kill(nil)
			p.TrapExits(false)
			p.Kill(errBoom)
			<-p.Done()
		}
		t.Logf("exit first %d times, unlink first %d times", delivered, none)
	})
}

// A supervised child is a party: linked to a process that dies abnormally,
// it is ended with that reason, which is the failure its supervisor sees
// and restarts it for; its next incarnation is a new party.
func TestSupervisedChildEndedByLink(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	sup := New(Spec{Name: "sup", Clock: NewFakeClock(t0), Backoff: noDelay, EventHook: rec.hook})
	selves := make(chan *Process, 2)
	_ = sup.Add(ChildSpec{Name: "w", Service: ServiceFunc(func(ctx context.Context) error {
		selves <- Self(ctx)
		<-ctx.Done()
		return ctx.Err()
	})})
	s := serve(sup)
	first := <-selves
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errDB := errors.New("database gone")
	end := make(chan struct{})
	db := Spawn(ctx, "db", ServiceFunc(func(context.Context) error { <-end; return errDB }))
	if err := first.Link(db); err != nil {
		t.Fatal(err)
	}
	close(end)
	f := rec.waitFor(t, EventFailure, "w")
	if !errors.Is(f.Err, errDB) || f.Directive != Restart {
		t.Fatalf("failure event: err %v, directive %v; want %v, restart", f.Err, f.Directive, errDB)
	}
	second := <-selves
	if second == first || first.State() != ProcessExited || !errors.Is(first.Reason(), errDB) {
		t.Fatalf("incarnations: first %v (%v, %v), second same: %v", first.State(), first.Reason(), errDB, second == first)
	}
	if c := sup.WhichChildren(); len(c) != 1 || c[0].Process != second || !errors.Is(c[0].LastError, errDB) {
		t.Fatalf("snapshot: %+v", c)
	}
	if err := s.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v", err)
	}
	<-db.Done()
}

// trapper is an actor's state that records messages and signals in the
// order it gets them.
type trapper struct{ log *log }

func (r trapper) Receive(_ context.Context, msg string) error { r.log.add("msg " + msg); return nil }

func (r trapper) ReceiveSignal(_ context.Context, s Signal) error {
	r.log.add("signal " + s.String())
	return nil
}

// An Actor whose receiver is a SignalReceiver traps exits: a linked party's
// exit reaches it as a signal, before the mailbox messages sent after the
// exit, and does not end it.
func TestActorReceivesSignalsFirst(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		l := &log{}
		actor := NewActor(8, func() Receiver[string] { return trapper{log: l} })
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := Spawn(ctx, "actor", actor)
		_ = actor.Send("one")
		synctest.Wait() // "one" handled: the actor is set up and traps exits
		end := make(chan struct{})
		q := Spawn(ctx, "q", ServiceFunc(func(context.Context) error { <-end; return errBoom }))
		if err := p.Link(q); err != nil {
			t.Fatal(err)
		}
		close(end)
		<-q.Done() // the Exit is queued before q is done
		_ = actor.Send("two")
		synctest.Wait()
		if got, want := l.get(), []string{"msg one", "signal Exit(q, boom)", "msg two"}; !equal(got, want) {
			t.Fatalf("actor got %v, want %v", got, want)
		}
		if st := p.State(); st == ProcessExited || st == ProcessExiting {
			t.Fatalf("a trapping actor was ended: %v", st)
		}
		cancel()
		<-p.Done()
	})
}
