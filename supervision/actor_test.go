package supervision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// testReceiver records messages; "boom" fails the incarnation.
type testReceiver struct {
	id    int
	count int
	log   *log
	done  chan string // receives every processed message
}

func (r *testReceiver) Receive(_ context.Context, msg string) error {
	if msg == "boom" {
		return errBoom
	}
	r.count++
	r.log.add(fmt.Sprintf("%d:%s:%d", r.id, msg, r.count))
	r.done <- msg
	return nil
}

type receiverFactory struct {
	mu   sync.Mutex
	n    int
	log  log
	done chan string
}

func newFactory() *receiverFactory { return &receiverFactory{done: make(chan string, 100)} }

func (f *receiverFactory) new() Receiver[string] {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return &testReceiver{id: f.n, log: &f.log, done: f.done}
}

func (f *receiverFactory) built() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *receiverFactory) wait(t *testing.T, msg string) {
	t.Helper()
	select {
	case got := <-f.done:
		if got != msg {
			t.Fatalf("processed %q, want %q", got, msg)
		}
	case <-time.After(safety):
		t.Fatalf("%q not processed", msg)
	}
}

func TestStopThenSendReturnsErrStopped(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	f := newFactory()
	a := NewActor(10, f.new)
	var afterStop error
	var pending []string
	a.OnTerminated(func(_ error, p []string) { pending = p })
	sup := New(Spec{Name: "s", Clock: NewFakeClock(t0), Backoff: noDelay, EventHook: rec.hook,
		Decider: func(Failure) Directive { return Stop }})
	sup.Add(ChildSpec{Name: "actor", Service: a, Hooks: Hooks{AfterStop: func(err error) { afterStop = err }}})
	s := serve(sup)

	if err := a.Send("hello"); err != nil {
		t.Fatal(err)
	}
	f.wait(t, "hello")
	a.Send("boom")
	if e := rec.waitFor(t, EventStop, "actor"); !errors.Is(e.Err, errBoom) {
		t.Fatalf("stop reason %v", e.Err)
	}
	for i := 0; i < 3; i++ {
		if err := a.Send("again"); !errors.Is(err, ErrStopped) {
			t.Fatalf("Send after Stop = %v, want ErrStopped", err)
		}
	}
	s.stop(t)
	if f.built() != 1 {
		t.Fatalf("receiver built %d times; a stopped actor must not be re-created", f.built())
	}
	if !errors.Is(afterStop, errBoom) || pending != nil {
		t.Fatalf("AfterStop %v, pending %v", afterStop, pending)
	}
}

func TestMessagesDuringRestartProcessedInOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	clock := NewFakeClock(t0)
	f := newFactory()
	a := NewActor(10, f.new)
	sup := New(Spec{Name: "s", Clock: clock, EventHook: rec.hook, Backoff: Backoff{Min: time.Second, RandomFactor: -1}})
	sup.Add(ChildSpec{Name: "actor", Service: a})
	s := serve(sup)

	a.Send("m0")
	f.wait(t, "m0")
	a.Send("boom")
	rec.waitFor(t, EventRestart, "actor")
	clock.BlockUntil(1) // the backoff timer: the actor is down now
	for i := 1; i <= 5; i++ {
		if err := a.Send(fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.Mailbox().Len(); n != 5 {
		t.Fatalf("mailbox holds %d messages during the restart, want 5", n)
	}
	clock.Advance(time.Second)
	for i := 1; i <= 5; i++ {
		f.wait(t, fmt.Sprintf("m%d", i))
	}
	s.stop(t)
	want := []string{"1:m0:1", "2:m1:1", "2:m2:2", "2:m3:3", "2:m4:4", "2:m5:5"}
	if got := f.log.get(); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestResumeKeepsReceiverState(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := newRecorder()
	f := newFactory()
	a := NewActor(10, f.new)
	sup := New(Spec{Name: "s", Clock: NewFakeClock(t0), EventHook: rec.hook,
		Decider: func(Failure) Directive { return Resume }})
	sup.Add(ChildSpec{Name: "actor", Service: a})
	s := serve(sup)
	for _, m := range []string{"a", "b", "boom", "c", "boom", "d"} {
		if err := a.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []string{"a", "b", "c", "d"} {
		f.wait(t, m)
	}
	s.stop(t)
	if got, want := f.log.get(), []string{"1:a:1", "1:b:2", "1:c:3", "1:d:4"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	var resumes int
	for len(rec.ch) > 0 {
		switch e := <-rec.ch; e.Kind {
		case EventResume:
			resumes++
		case EventRestart:
			t.Fatal("Resume must not restart")
		}
	}
	if resumes != 2 || f.built() != 1 {
		t.Fatalf("resumes=%d receivers=%d", resumes, f.built())
	}
}

func TestMailboxFullReturnsError(t *testing.T) {
	m := NewMailbox[int](2)
	if err := m.Send(1); err != nil {
		t.Fatal(err)
	}
	if err := m.Send(2); err != nil {
		t.Fatal(err)
	}
	if err := m.Send(3); !errors.Is(err, ErrMailboxFull) {
		t.Fatalf("Send to a full mailbox = %v", err)
	}
	if m.Len() != 2 {
		t.Fatalf("Len = %d", m.Len())
	}
	if got := <-m.Receive(); got != 1 {
		t.Fatalf("Receive = %d", got)
	}
	if err := m.Send(3); err != nil {
		t.Fatalf("Send after a Receive = %v", err)
	}
}

func TestMailboxCloseReturnsPending(t *testing.T) {
	m := NewMailbox[string](10)
	for _, s := range []string{"a", "b", "c"} {
		m.Send(s)
	}
	<-m.Receive()
	select {
	case <-m.Done():
		t.Fatal("Done closed early")
	default:
	}
	if got := m.Close(); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("Close = %v", got)
	}
	<-m.Done()
	if err := m.Send("d"); !errors.Is(err, ErrStopped) {
		t.Fatalf("Send after Close = %v", err)
	}
	if got := m.Close(); got != nil {
		t.Fatalf("second Close = %v", got)
	}
	if m.Len() != 0 {
		t.Fatalf("Len = %d", m.Len())
	}
}

func TestActorTerminatedFailsBackPending(t *testing.T) {
	f := newFactory()
	a := NewActor(10, f.new)
	var got []string
	a.OnTerminated(func(reason error, p []string) { got = p })
	a.Send("x")
	a.Send("y")
	a.Terminated(context.Canceled)
	a.Terminated(context.Canceled)
	if !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("pending %v", got)
	}
	if err := a.Serve(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Serve after Terminated = %v", err)
	}
}
