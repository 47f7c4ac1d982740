package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/spool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// noLeaks makes the test fail if a goroutine it started outlives it: the
// check runs after every cleanup registered later (the spool's Close, the
// broker's), so call it first.
func noLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// fakePublisher records submissions; the test settles them by hand.
type fakePublisher struct {
	mu        sync.Mutex
	submitted []*publisher.Message
	pending   []func(error)
	missing   map[string]bool // exchanges that do not exist
	arrived   chan struct{}
	refuse    error // Send refuses every message with it when set
}

func newFake() *fakePublisher {
	return &fakePublisher{missing: map[string]bool{}, arrived: make(chan struct{}, 1000)}
}

func (f *fakePublisher) Send(_ context.Context, msg *publisher.Message, _ time.Time, done func(error)) (publisher.Ticket, error) {
	if f.refuse != nil {
		return publisher.Ticket{}, f.refuse
	}
	f.mu.Lock()
	f.submitted = append(f.submitted, msg)
	f.pending = append(f.pending, done)
	f.mu.Unlock()
	f.arrived <- struct{}{}
	return publisher.Ticket{}, nil
}

func (f *fakePublisher) CheckExchange(_ context.Context, ex string) error {
	if f.missing[ex] {
		return &publisher.ChannelError{Code: 404, Reason: "NOT_FOUND - no exchange '" + ex + "' in vhost '/'"}
	}
	return nil
}

// settle answers the oldest unsettled submission.
func (f *fakePublisher) settle(err error) {
	f.mu.Lock()
	done := f.pending[0]
	f.pending = f.pending[1:]
	f.mu.Unlock()
	done(err)
}

func (f *fakePublisher) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.submitted)
}

func (f *fakePublisher) waitSubmissions(t *testing.T, n int) {
	t.Helper()
	for f.count() < n {
		select {
		case <-f.arrived:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d submissions, want %d", f.count(), n)
		}
	}
}

func setup(t *testing.T) (*Relay, *fakePublisher, *spool.Spool, string) {
	t.Helper()
	noLeaks(t)
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	f := newFake()
	r := New(Config{Spool: sp, Publisher: f, ConfirmTimeout: 50 * time.Millisecond, MaxAttempts: 3,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return r, f, sp, dir
}

func serve(t *testing.T, r *Relay) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

func TestConfirmedWithinTimeoutIsNil(t *testing.T) {
	r, f, sp, _ := setup(t)
	defer serve(t, r)()
	go func() {
		f.waitSubmissions(t, 1)
		f.settle(nil)
	}()
	if d, err := r.Publish(context.Background(), &publisher.Message{RoutingKey: "q"}, false); err != nil || d != Confirmed {
		t.Fatalf("Publish = %v, %v, want confirmed", d, err)
	}
	waitLive(t, sp, 0)
}

func TestUnconfirmedIsSpooledThenDelivered(t *testing.T) {
	r, f, sp, _ := setup(t)
	defer serve(t, r)()
	if d, err := r.Publish(context.Background(), &publisher.Message{RoutingKey: "q"}, false); err != nil || d != Spooled {
		t.Fatalf("Publish = %v, %v, want spooled after the confirm timeout", d, err)
	}
	if d, err := r.Publish(context.Background(), &publisher.Message{RoutingKey: "q"}, true); err != nil || d != Spooled {
		t.Fatalf("Publish(async) = %v, %v, want spooled", d, err)
	}
	f.waitSubmissions(t, 2)
	if n, _ := sp.Stats(); n != 2 {
		t.Fatalf("%d live records, want 2", n)
	}
	f.settle(nil)
	f.settle(nil)
	waitLive(t, sp, 0)
}

func TestMissingExchangeIsNotSpooled(t *testing.T) {
	r, f, sp, _ := setup(t)
	f.missing["nope"] = true
	_, err := r.Publish(context.Background(), &publisher.Message{Exchange: "nope"}, true)
	if !errors.Is(err, publisher.ErrExchangeNotFound) {
		t.Fatalf("Publish(async) = %v, want ErrExchangeNotFound", err)
	}
	if n, _ := sp.Stats(); n != 0 {
		t.Fatalf("%d records spooled for a missing exchange", n)
	}
}

// A permanent refusal is dead-lettered (and answered to a waiting caller);
// a transient failure is submitted again, up to MaxAttempts.
func TestPermanentDeadLetteredTransientRetried(t *testing.T) {
	r, f, sp, dir := setup(t)
	defer serve(t, r)()
	type answer struct {
		d   Delivery
		err error
	}
	res := make(chan answer, 1)
	go func() {
		d, err := r.Publish(context.Background(), &publisher.Message{RoutingKey: "gone", MessageID: "m1"}, false)
		res <- answer{d, err}
	}()
	f.waitSubmissions(t, 1)
	f.settle(&publisher.ReturnError{Code: 312, Text: "NO_ROUTE"})
	if a := <-res; !errors.Is(a.err, publisher.ErrUnroutable) && !(a.err == nil && a.d == Spooled) {
		t.Fatalf("Publish = %v, %v", a.d, a.err)
	}
	waitLive(t, sp, 0)
	b, err := os.ReadFile(filepath.Join(dir, "dead-letter.log"))
	if err != nil || !strings.Contains(string(b), "NO_ROUTE") {
		t.Fatalf("dead-letter.log: %q %v", b, err)
	}

	if d, err := r.Publish(context.Background(), &publisher.Message{RoutingKey: "q", MessageID: "m2"}, true); err != nil || d != Spooled {
		t.Fatal(d, err)
	}
	f.waitSubmissions(t, 2)
	f.settle(publisher.ErrTooManyAttempts) // transient: submitted again
	f.waitSubmissions(t, 3)
	if id := f.submitted[2].MessageID; id != "m2" {
		t.Fatalf("resubmitted %q, want m2", id)
	}
	f.settle(nil)
	waitLive(t, sp, 0)
}

// Records handed to the publisher by a forwarder incarnation that then died
// are not submitted a second time by the next incarnation; their outcome
// still settles them.
func TestRestartedForwarderSkipsPending(t *testing.T) {
	r, f, sp, _ := setup(t)
	stop := serve(t, r)
	for range 3 {
		if d, err := r.Publish(context.Background(), &publisher.Message{RoutingKey: "q"}, true); err != nil || d != Spooled {
			t.Fatal(d, err)
		}
	}
	f.waitSubmissions(t, 3)
	stop() // the forwarder crashes / restarts
	defer serve(t, r)()
	if d, err := r.Publish(context.Background(), &publisher.Message{RoutingKey: "q", MessageID: "fourth"}, true); err != nil || d != Spooled {
		t.Fatal(d, err)
	}
	f.waitSubmissions(t, 4)
	if id := f.submitted[3].MessageID; id != "fourth" {
		t.Fatalf("the restarted forwarder submitted %q again", id)
	}
	for range 4 {
		f.settle(nil)
	}
	waitLive(t, sp, 0)
	if n := f.count(); n != 4 {
		t.Fatalf("%d submissions, want 4", n)
	}
}

func waitLive(t *testing.T, sp *spool.Spool, want int) {
	t.Helper()
	poll.Within(t, 10*time.Second, fmt.Sprintf("%d live records", want), func() bool { n, _ := sp.Stats(); return n == want })
}

// A message the publisher's Send itself refuses for good is dead-lettered
// and its waiting caller told why at once, not answered Spooled at its
// timeout.
func TestRefusedBySendIsAnsweredAndDeadLettered(t *testing.T) {
	r, f, sp, _ := setup(t)
	f.refuse = fmt.Errorf("%w: a header AMQP cannot carry", publisher.ErrInvalidMessage)
	r.cfg.ConfirmTimeout = time.Minute
	stop := serve(t, r)
	defer stop()
	start := time.Now()
	_, err := r.Publish(context.Background(), &publisher.Message{RoutingKey: "q", MessageID: "poison"}, false)
	if !errors.Is(err, publisher.ErrInvalidMessage) {
		t.Fatalf("Publish = %v, want the refusal (ErrInvalidMessage)", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("answered after %v: the caller waited for its timeout", d)
	}
	poll.Within(t, 10*time.Second, "dead-lettered", func() bool { return sp.Status().Messages == 0 })
}
