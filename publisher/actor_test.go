package publisher_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/internal/fakeamqp"
	"github.com/publisher-dev/publisher/publisher"
)

// The actor's logic against internal/fakeamqp inside testing/synctest
// bubbles: time is fake (a nack backoff or a confirm timeout passes at
// once, exactly), and synctest.Wait replaces every sleep. The real-broker
// tests in publisher_test.go cover the same paths against RabbitMQ.

// actor runs a Publisher's incarnations one after another, as a supervisor
// with no backoff would, until the test ends.
type actor struct {
	t      *testing.T
	pub    *publisher.Publisher
	b      *fakeamqp.Broker
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	fails []error // the errors incarnations returned
}

func startActor(t *testing.T, b *fakeamqp.Broker, edit func(*publisher.Config)) *actor {
	t.Helper()
	cfg := publisher.Config{
		Dial:           b.Dial,
		ConfirmTimeout: 10 * time.Second,
		Logger:         slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(&cfg)
	}
	pub, err := publisher.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &actor{t: t, pub: pub, b: b, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for ctx.Err() == nil {
			if err := pub.Serve(ctx); err != nil {
				a.mu.Lock()
				a.fails = append(a.fails, err)
				a.mu.Unlock()
				time.Sleep(10 * time.Millisecond) // a supervisor's backoff, in fake time
			}
		}
	}()
	t.Cleanup(a.stop)
	return a
}

// stop ends the incarnation and terminates the publisher, as a supervisor
// does at shutdown: Terminated after Serve returned.
func (a *actor) stop() {
	a.cancel()
	<-a.done
	a.pub.Terminated(context.Canceled)
}

func (a *actor) failures() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.fails)
}

// bubble runs f in a synctest bubble and checks that nothing outlived it.
func bubble(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	synctest.Test(t, f)
	goleak.VerifyNone(t)
}

func plain(key string) *publisher.Message {
	return &publisher.Message{RoutingKey: key, Body: []byte("x"), Mandatory: true}
}

func TestActorConfirms(t *testing.T) {
	bubble(t, func(t *testing.T) {
		a := startActor(t, &fakeamqp.Broker{}, nil)
		if err := a.pub.Publish(context.Background(), plain("q")); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if n := len(a.b.Published()); n != 1 {
			t.Fatalf("broker received %d messages, want 1", n)
		}
	})
}

// A basic.return marks the oldest unconfirmed message with its id on its
// channel: of two messages with the same id, only the returned one fails.
func TestActorMatchesReturnToTheOldestWithItsID(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b := &fakeamqp.Broker{}
		var n int
		b.Handle = func(p fakeamqp.Publishing) fakeamqp.Reply {
			n++
			if n == 1 {
				return fakeamqp.Return
			}
			return fakeamqp.Ack
		}
		a := startActor(t, b, nil)
		errs := make(chan error, 2)
		for range 2 {
			m := plain("q")
			m.MessageID = "same-id"
			if _, err := a.pub.Send(context.Background(), m, time.Time{}, func(err error) { errs <- err }); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		first, second := <-errs, <-errs
		var re *publisher.ReturnError
		if !errors.As(first, &re) || re.Code != amqp.NoRoute || second != nil {
			t.Fatalf("outcomes %v, %v; want the first returned (312 NO_ROUTE), the second confirmed", first, second)
		}
		if k := publisher.Classify(first); k != publisher.Unroutable {
			t.Fatalf("Kind %v, want Unroutable", k)
		}
	})
}

// A nacked message is published again after 50 ms, then 100 ms, ... while
// its deadline allows; the caller sees only the final outcome.
func TestActorRetriesNacksWithBackoff(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b := &fakeamqp.Broker{}
		var times []time.Time
		b.Handle = func(p fakeamqp.Publishing) fakeamqp.Reply {
			times = append(times, time.Now())
			if len(times) <= 3 {
				return fakeamqp.Nack
			}
			return fakeamqp.Ack
		}
		a := startActor(t, b, nil)
		if err := a.pub.Publish(context.Background(), plain("q")); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		var gaps []time.Duration
		for i := 1; i < len(times); i++ {
			gaps = append(gaps, times[i].Sub(times[i-1]))
		}
		want := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}
		if !slices.Equal(gaps, want) {
			t.Fatalf("gaps between attempts %v, want %v", gaps, want)
		}
	})
}

// Nacked through its deadline: ErrNacked once the next backoff would pass
// the deadline, never later than it.
func TestActorNackedUntilTheDeadline(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b := &fakeamqp.Broker{Handle: func(fakeamqp.Publishing) fakeamqp.Reply { return fakeamqp.Nack }}
		a := startActor(t, b, func(c *publisher.Config) { c.ConfirmTimeout = time.Second })
		start := time.Now()
		err := a.pub.Publish(context.Background(), plain("q"))
		if publisher.Classify(err) != publisher.Nacked {
			t.Fatalf("Publish = %v, want ErrNacked", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("answered after %v, beyond the 1s deadline", d)
		}
	})
}

// A channel the broker closes (here 406) while messages are in flight is
// reopened (a new generation); its messages are published again, charged an
// attempt each, and a confirm of the old generation cannot settle one of the
// new.
func TestActorReopensAClosedChannel(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b := &fakeamqp.Broker{Handle: func(fakeamqp.Publishing) fakeamqp.Reply { return fakeamqp.Hold }}
		a := startActor(t, b, nil)
		errs := make(chan error, 3)
		for range 3 {
			if _, err := a.pub.Send(context.Background(), plain("q"), time.Time{}, func(err error) { errs <- err }); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		held := b.Published()
		if len(held) != 3 {
			t.Fatalf("%d published, want 3", len(held))
		}
		// A stale ack from the old generation, sent before the close, must
		// not be mistaken for one of the republished messages'.
		b.Settle(held[0], true)
		synctest.Wait()
		if got := <-errs; got != nil {
			t.Fatalf("the acked message: %v", got)
		}
		closeChannel(t, b, held[1], &amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - test"})
		synctest.Wait()
		again := b.Published()[3:]
		if len(again) != 2 || again[0].MessageId != held[1].MessageId || again[1].MessageId != held[2].MessageId {
			t.Fatalf("republished %v, want the two unconfirmed messages in order", ids(again))
		}
		if again[0].Channel == held[1].Channel {
			t.Fatalf("republished on the closed channel %d", again[0].Channel)
		}
		for _, p := range again {
			b.Settle(p, true)
		}
		synctest.Wait()
		if e1, e2 := <-errs, <-errs; e1 != nil || e2 != nil {
			t.Fatalf("republished messages: %v, %v", e1, e2)
		}
		if f := a.failures(); len(f) != 0 {
			t.Fatalf("a channel error restarted the incarnation: %v", f)
		}
	})
}

// closeChannel closes the channel p was published on.
func closeChannel(t *testing.T, b *fakeamqp.Broker, p fakeamqp.Publishing, err *amqp.Error) {
	t.Helper()
	if !b.CloseChannel(p, err) {
		t.Fatalf("channel %d of connection %d is not open", p.Channel, p.Conn)
	}
}

func ids(ps []fakeamqp.Publishing) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.MessageId)
	}
	return out
}

// Messages in flight when the connection dies are carried to the next
// incarnation and published again first, with the same ids; one that has
// been in flight through MaxPublishAttempts failures is failed back.
func TestActorCarriesInFlightMessagesAcrossIncarnations(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b := &fakeamqp.Broker{Handle: func(fakeamqp.Publishing) fakeamqp.Reply { return fakeamqp.Hold }}
		a := startActor(t, b, func(c *publisher.Config) { c.MaxPublishAttempts = 2 })
		errs := make(chan error, 1)
		m := plain("q")
		if _, err := a.pub.Send(context.Background(), m, time.Time{}, func(err error) { errs <- err }); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		lose := &amqp.Error{Code: amqp.ConnectionForced, Reason: "CONNECTION_FORCED - test"}
		b.Conn().Lose(lose)
		time.Sleep(time.Second) // past the restart's backoff (fake time)
		synctest.Wait()         // the next incarnation dialled and published it again
		pubs := b.Published()
		if len(pubs) != 2 || pubs[1].MessageId != m.MessageID || pubs[1].Conn != 2 {
			t.Fatalf("published %v on connections %v, want the same id again on connection 2", ids(pubs), pubs)
		}
		if st := a.pub.State(); st.Connects != 2 {
			t.Fatalf("Connects = %d, want 2", st.Connects)
		}
		b.Conn().Lose(lose) // the second failure in flight: MaxPublishAttempts
		time.Sleep(time.Second)
		synctest.Wait()
		if err := <-errs; publisher.Classify(err) != publisher.TooManyAttempts {
			t.Fatalf("outcome %v, want ErrTooManyAttempts", err)
		}
		if n := len(b.Published()); n != 2 {
			t.Fatalf("published %d times, want 2", n)
		}
		if f := a.failures(); len(f) != 2 {
			t.Fatalf("incarnations failed %d times, want 2: %v", len(f), f)
		}
	})
}

// While the broker blocks publishing, messages wait in the mailbox; one
// whose caller gives up first is taken back (ErrNotPublished) and never
// published after the broker unblocks: the claim/abandon compare-and-swap.
func TestActorAbandonedWhileBlockedIsNeverPublished(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b := &fakeamqp.Broker{}
		a := startActor(t, b, func(c *publisher.Config) { c.ConfirmTimeout = time.Second })
		if err := a.pub.Publish(context.Background(), plain("q")); err != nil {
			t.Fatal(err)
		}
		b.Conn().Block(true, "low on memory")
		synctest.Wait()
		m := plain("q")
		err := a.pub.Publish(context.Background(), m)
		if publisher.Classify(err) != publisher.NotSent {
			t.Fatalf("Publish while blocked = %v, want ErrNotPublished (NotSent)", err)
		}
		b.Conn().Block(false, "")
		if err := a.pub.Publish(context.Background(), plain("q")); err != nil {
			t.Fatalf("after the unblock: %v", err)
		}
		for _, p := range b.Published() {
			if p.MessageId == m.MessageID {
				t.Fatalf("the abandoned message %s was published", m.MessageID)
			}
		}
	})
}

// A message to a missing exchange fails alone (404) and costs the other
// messages nothing: the exchange is checked on a channel of its own.
func TestActorMissingExchangeCostsOnlyItsMessage(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b := &fakeamqp.Broker{}
		a := startActor(t, b, nil)
		bad := &publisher.Message{Exchange: "nope", RoutingKey: "q"}
		if err := a.pub.Publish(context.Background(), bad); publisher.Classify(err) != publisher.NotFound {
			t.Fatalf("Publish to a missing exchange = %v, want ErrExchangeNotFound", err)
		}
		if err := a.pub.Publish(context.Background(), plain("q")); err != nil {
			t.Fatalf("the next publish: %v", err)
		}
		if n := len(b.Published()); n != 1 {
			t.Fatalf("broker received %d messages, want 1 (never the one to the missing exchange)", n)
		}
		if f := a.failures(); len(f) != 0 {
			t.Fatalf("incarnation failures: %v", f)
		}
	})
}

// Terminated fails back what waits with ErrClosed, and later sends are
// refused at once.
func TestActorTerminatedFailsBackWhatWaits(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b := &fakeamqp.Broker{}
		b.Refuse(fakeamqp.ErrRefused)
		a := startActor(t, b, nil)
		errs := make(chan error, 1)
		if _, err := a.pub.Send(context.Background(), plain("q"), time.Time{}, func(err error) { errs <- err }); err != nil {
			t.Fatal(err)
		}
		a.stop()
		if err := <-errs; publisher.Classify(err) != publisher.Closed {
			t.Fatalf("waiting message: %v, want ErrClosed", err)
		}
		if _, err := a.pub.Send(context.Background(), plain("q"), time.Time{}, func(error) {}); publisher.Classify(err) != publisher.Closed {
			t.Fatalf("Send after Terminated = %v, want ErrClosed", err)
		}
	})
}

// A redial into a path that accepts TCP and never answers the AMQP
// handshake (a load balancer in front of a dead broker) ends as soon as
// Serve's ctx does, not after the handshake's timeout: a real socket, the
// real dialer.
func TestServeEndsDuringAStalledHandshake(t *testing.T) {
	defer goleak.VerifyNone(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c // held open, never answered
		}
	}()
	pub, err := publisher.New(publisher.Config{
		URLs:        []string{"amqp://guest:guest@" + ln.Addr().String() + "/"},
		DialTimeout: time.Minute,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- pub.Serve(ctx) }()
	c := <-accepted
	defer c.Close()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after its ctx ended = %v, want nil", err)
		}
	case <-time.After(5 * time.Second): // the handshake's own timeout is a minute
		t.Fatal("Serve did not end within 5s of its ctx during a stalled handshake")
	}
	pub.Terminated(context.Canceled)
}
