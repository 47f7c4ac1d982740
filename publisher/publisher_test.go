package publisher_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/loadtest"
	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/supervision"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tree runs a Publisher under an escalating one-for-one "broker" supervisor
// below a "root" supervisor, as the service does, and records every event.
type tree struct {
	pub    *publisher.Publisher
	mu     sync.Mutex
	events []supervision.Event
	done   chan error
}

func (tr *tree) count(kind supervision.EventKind, child string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, ev := range tr.events {
		if ev.Kind == kind && (child == "" || ev.Child == child) {
			n++
		}
	}
	return n
}

type treeOpts struct {
	maxRestarts int
	window      time.Duration
	rootDecider supervision.Decider
}

func startTree(t *testing.T, cfg publisher.Config, o treeOpts) *tree {
	t.Helper()
	if o.maxRestarts == 0 {
		o.maxRestarts = 1000
	}
	if o.window == 0 {
		o.window = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	pub, err := publisher.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := &tree{pub: pub, done: make(chan error, 1)}
	hook := func(ev supervision.Event) {
		tr.mu.Lock()
		tr.events = append(tr.events, ev)
		tr.mu.Unlock()
	}
	backoff := supervision.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	broker := supervision.New(supervision.Spec{Name: "broker", MaxRestarts: o.maxRestarts, Window: o.window, Backoff: backoff, EventHook: hook})
	if err := broker.Add(supervision.ChildSpec{Name: "publisher", Service: pub}); err != nil {
		t.Fatal(err)
	}
	root := supervision.New(supervision.Spec{Name: "root", MaxRestarts: 0, Window: time.Minute, Backoff: backoff, EventHook: hook, Decider: o.rootDecider})
	if err := root.Add(supervision.ChildSpec{Name: "broker", Service: broker}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { tr.done <- root.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-tr.done:
		case <-time.After(30 * time.Second):
			t.Error("supervision tree did not stop")
		}
	})
	return tr
}

func msg(queue string) *publisher.Message {
	return &publisher.Message{RoutingKey: queue, Body: []byte("hello"), Persistent: true, Mandatory: true}
}

func TestPublishConfirmedAndDelivered(t *testing.T) {
	checkLeaks(t)
	url := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, url, "pubtest-basic")
	tr := startTree(t, publisher.Config{URLs: []string{url}}, treeOpts{})
	m := msg(q)
	m.Headers = map[string]any{"k": "v"}
	if err := tr.pub.Publish(context.Background(), m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if m.MessageID == "" {
		t.Fatal("no message id generated")
	}
	got := brokertest.Drain(t, url, q)
	if got[m.MessageID] != 1 || len(got) != 1 {
		t.Fatalf("queue holds %v, want exactly %s once", got, m.MessageID)
	}
}

func TestUnroutableMandatoryIsReturned(t *testing.T) {
	checkLeaks(t)
	url := brokertest.SharedURL(t)
	tr := startTree(t, publisher.Config{URLs: []string{url}}, treeOpts{})
	err := tr.pub.Publish(context.Background(), msg("no-such-queue-anywhere"))
	var re *publisher.ReturnError
	if !errors.Is(err, publisher.ErrUnroutable) || !errors.As(err, &re) || re.Code != 312 {
		t.Fatalf("Publish = %v, want ErrUnroutable with 312 NO_ROUTE", err)
	}
	// Not mandatory: confirmed (and dropped by the broker).
	m := msg("no-such-queue-anywhere")
	m.Mandatory = false
	if err := tr.pub.Publish(context.Background(), m); err != nil {
		t.Fatalf("non-mandatory Publish = %v", err)
	}
}

func TestInvalidHeaderFailsOnlyThatMessage(t *testing.T) {
	checkLeaks(t)
	url := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, url, "pubtest-invalid")
	tr := startTree(t, publisher.Config{URLs: []string{url}}, treeOpts{})
	bad := msg(q)
	bad.Headers = map[string]any{"ch": make(chan int)}
	if err := tr.pub.Publish(context.Background(), bad); !errors.Is(err, publisher.ErrInvalidMessage) {
		t.Fatalf("Publish = %v, want ErrInvalidMessage", err)
	}
	if err := tr.pub.Publish(context.Background(), msg(q)); err != nil {
		t.Fatalf("good Publish after bad: %v", err)
	}
	if n := tr.count(supervision.EventFailure, ""); n != 0 {
		t.Fatalf("%d failures, want 0", n)
	}
}

// A message to a missing exchange fails with a not-found error; a concurrent
// stream of good publishes sees no failure and the connection no restart.
func TestMissingExchangeCostsOnlyThatRequest(t *testing.T) {
	checkLeaks(t)
	url := brokertest.SharedURL(t)
	q := fmt.Sprintf("pubtest-404-%d", time.Now().UnixNano())
	brokertest.DeclareQueue(t, url, q)
	tr := startTree(t, publisher.Config{URLs: []string{url}, Channels: 2}, treeOpts{})

	stop := make(chan struct{})
	good := loadtest.Start(8, stop, func() (string, bool, string) {
		m := msg(q)
		if err := tr.pub.Publish(context.Background(), m); err != nil {
			return m.MessageID, false, err.Error()
		}
		return m.MessageID, true, "confirmed"
	})
	for i := range 50 {
		m := msg(q)
		m.Exchange = fmt.Sprintf("missing-exchange-%d", i%5)
		err := tr.pub.Publish(context.Background(), m)
		var ce *publisher.ChannelError
		if !errors.Is(err, publisher.ErrExchangeNotFound) || !errors.As(err, &ce) || ce.Code != 404 {
			t.Fatalf("Publish to missing exchange = %v, want ErrExchangeNotFound (404)", err)
		}
	}
	close(stop)
	res := <-good
	if len(res.Acked) == 0 {
		t.Fatal("no good publishes ran concurrently")
	}
	if len(res.Acked) != res.Total {
		t.Fatalf("good publishes failed: %v", res.Outcomes)
	}
	if n := tr.count(supervision.EventFailure, "publisher"); n != 0 {
		t.Fatalf("publisher failed %d times, want 0 (no connection restart)", n)
	}
	brokertest.CheckDelivered(t, url, q, res.Acked, res.Total)
}

// A message the broker refuses by closing the channel every time (an invalid
// expiration) is a poison message: it is failed back after
// MaxPublishAttempts, never crash-looping anything.
func TestPoisonMessageFailsAfterMaxAttempts(t *testing.T) {
	checkLeaks(t)
	url := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, url, "pubtest-poison")
	tr := startTree(t, publisher.Config{URLs: []string{url}, MaxPublishAttempts: 3}, treeOpts{})
	bad := msg(q)
	bad.Expiration = "not-a-number"
	err := tr.pub.Publish(context.Background(), bad)
	if !errors.Is(err, publisher.ErrTooManyAttempts) {
		t.Fatalf("Publish = %v, want ErrTooManyAttempts", err)
	}
	if err := tr.pub.Publish(context.Background(), msg(q)); err != nil {
		t.Fatalf("good Publish after poison: %v", err)
	}
	if n := tr.count(supervision.EventFailure, "publisher"); n != 0 {
		t.Fatalf("publisher failed %d times, want 0", n)
	}
}

// load runs n publishers until stop closes.
func load(pub *publisher.Publisher, queue string, n int, stop <-chan struct{}) *loadtest.Result {
	return loadtest.Run(n, stop, func() (string, bool, string) {
		m := msg(queue)
		if err := pub.Publish(context.Background(), m); err != nil {
			return m.MessageID, false, err.Error()
		}
		return m.MessageID, true, "confirmed"
	})
}

// Every connection cut every 500 ms for 10 s under 16 concurrent publishers:
// nothing confirmed is lost and >= 99% succeed.
func TestConnectionCutsUnderLoad(t *testing.T) {
	checkLeaks(t)
	url := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, url, "pubtest-cuts")
	proxy := faultproxy.ForURL(t, url)
	tr := startTree(t, publisher.Config{URLs: []string{proxy.AMQPURL()}, ConfirmTimeout: 20 * time.Second, MaxPublishAttempts: 10}, treeOpts{})
	poll.Until(t, "first connect", tr.pub.Ready)

	stop := proxy.CutEvery(500*time.Millisecond, 20) // for 10 s
	res := load(tr.pub, q, 16, stop)
	t.Logf("outcomes: %v", res.Outcomes)
	brokertest.CheckDelivered(t, url, q, res.Acked, res.Total)
	if n := tr.count(supervision.EventRestart, "publisher"); n < 5 {
		t.Fatalf("only %d restarts of the publisher seen for 20 cuts", n)
	}
}

// The broker node stopped for 5 s and started again under load.
func TestBrokerRestartUnderLoad(t *testing.T) {
	checkLeaks(t)
	node := brokertest.Start(t, brokertest.Options{})
	q := "pubtest-restart"
	node.DeclareQueue(t, q)
	tr := startTree(t, publisher.Config{URLs: []string{node.URL()}, ConfirmTimeout: 60 * time.Second, MaxPublishAttempts: 10}, treeOpts{})
	poll.Until(t, "first connect", tr.pub.Ready)

	stop := make(chan struct{})
	go func() {
		defer close(stop)
		time.Sleep(2 * time.Second)
		if err := node.Stop(); err != nil {
			t.Errorf("stop node: %v", err)
			return
		}
		time.Sleep(5 * time.Second)
		if err := node.Restart(); err != nil {
			t.Errorf("restart node: %v", err)
			return
		}
		poll.Until(t, "reconnect", tr.pub.Ready)
		time.Sleep(2 * time.Second)
	}()
	res := load(tr.pub, q, 16, stop)
	t.Logf("outcomes: %v", res.Outcomes)
	brokertest.CheckDelivered(t, node.URL(), q, res.Acked, res.Total)
	if n := tr.count(supervision.EventFailure, "publisher"); n == 0 {
		t.Fatal("no publisher failure seen across a broker restart")
	}
}

// With the broker unreachable longer than the intensity allows, the broker
// supervisor escalates and root's decider sees the original dial error.
func TestUnreachableBrokerEscalatesWithDialError(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused

	var mu sync.Mutex
	var seen []supervision.Failure
	decider := func(f supervision.Failure) supervision.Directive {
		mu.Lock()
		seen = append(seen, f)
		mu.Unlock()
		return supervision.Stop
	}
	tr := startTree(t, publisher.Config{URLs: []string{"amqp://guest:guest@" + addr + "/"}}, treeOpts{maxRestarts: 3, window: time.Minute, rootDecider: decider})
	poll.Until(t, "escalation", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) > 0 })
	mu.Lock()
	f := seen[0]
	mu.Unlock()
	var esc *supervision.EscalationError
	if !errors.As(f.Err, &esc) || esc.Supervisor != "broker" || esc.Child != "publisher" {
		t.Fatalf("root saw %v, want an escalation from broker/publisher", f.Err)
	}
	if !errors.Is(f.Err, syscall.ECONNREFUSED) {
		t.Fatalf("root saw %v, want the original connection-refused error", f.Err)
	}
	if n := tr.count(supervision.EventRestart, "publisher"); n != 3 {
		t.Fatalf("%d restarts before escalating, want 3", n)
	}
	if n := tr.count(supervision.EventEscalation, ""); n != 1 {
		t.Fatalf("%d escalation events, want 1", n)
	}
	// Publishing while nothing runs the actor waits (bounded) rather than panicking.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := tr.pub.Publish(ctx, msg("q")); err == nil {
		t.Fatal("Publish succeeded with no broker")
	}
}

// A memory alarm blocks publishers: publishes wait, readiness reports
// blocked, and everything is confirmed once the alarm clears.
func TestMemoryAlarmBlocksThenSucceeds(t *testing.T) {
	checkLeaks(t)
	node := brokertest.Start(t, brokertest.Options{})
	q := "pubtest-alarm"
	node.DeclareQueue(t, q)
	tr := startTree(t, publisher.Config{URLs: []string{node.URL()}, ConfirmTimeout: 2 * time.Minute}, treeOpts{})
	poll.Until(t, "connect", tr.pub.Ready)
	if err := node.SetMemoryAlarm(true); err != nil {
		t.Fatal(err)
	}
	// RabbitMQ sends connection.blocked when a connection publishes during an alarm.
	const n = 20
	results := make(chan error, n)
	ids := make([]string, n)
	for i := range n {
		m := msg(q)
		m.MessageID = fmt.Sprintf("alarm-%d", i)
		ids[i] = m.MessageID
		go func() { results <- tr.pub.Publish(context.Background(), m) }()
	}
	poll.Until(t, "blocked", func() bool { return tr.pub.State().Blocked })
	if tr.pub.Ready() {
		t.Fatal("Ready while blocked")
	}
	poll.Until(t, "publishes held", func() bool { s := tr.pub.State(); return s.Buffered+s.Inflight == n })
	select {
	case err := <-results:
		t.Fatalf("a publish returned while the broker blocks: %v", err)
	default:
	}
	if err := node.SetMemoryAlarm(false); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-results; err != nil {
			t.Fatalf("publish after the alarm cleared: %v", err)
		}
	}
	got := node.Drain(t, q)
	for _, id := range ids {
		if got[id] != 1 {
			t.Fatalf("message %s delivered %d times", id, got[id])
		}
	}
	if n := tr.count(supervision.EventFailure, "publisher"); n != 0 {
		t.Fatalf("publisher failed %d times during the alarm", n)
	}
}

func TestBufferFullAndClosed(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	pub, err := publisher.New(publisher.Config{URLs: []string{"amqp://guest:guest@" + addr + "/"}, BufferSize: 2, ConfirmTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing serves the mailbox: two wait, the third is refused at once.
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- pub.Publish(ctx, msg("q")) }()
	}
	poll.Until(t, "two buffered", func() bool { return pub.State().Buffered == 2 })
	if err := pub.Publish(context.Background(), msg("q")); !errors.Is(err, publisher.ErrBufferFull) {
		t.Fatalf("third Publish = %v, want ErrBufferFull", err)
	}
	pub.Terminated(nil)
	for range 2 {
		if err := <-errs; !errors.Is(err, publisher.ErrClosed) {
			t.Fatalf("buffered Publish after Terminated = %v, want ErrClosed", err)
		}
	}
	cancel()
	if err := pub.Publish(context.Background(), msg("q")); !errors.Is(err, publisher.ErrClosed) {
		t.Fatalf("Publish after Terminated = %v, want ErrClosed", err)
	}
}

func TestRedactURL(t *testing.T) {
	checkLeaks(t)
	if got := publisher.RedactURL("amqp://user:s3cret@host:5672/vh"); got != "amqp://user:xxxxx@host:5672/vh" {
		t.Fatalf("RedactURL = %q", got)
	}
	if _, err := publisher.New(publisher.Config{URLs: []string{"http://user:s3cret@host/"}}); err == nil {
		t.Fatal("New accepted a non-AMQP URL")
	} else if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

// A nack (here: a full queue with overflow=reject-publish) is retried with
// backoff; once the queue has room the message is confirmed. With no room
// until the deadline, the answer is ErrNacked.
func TestNackedMessageRetriedUntilDeadline(t *testing.T) {
	checkLeaks(t)
	url := brokertest.SharedURL(t)
	q := fmt.Sprintf("pubtest-nack-%d", time.Now().UnixNano())
	brokertest.DeclareQueueArgs(t, url, q, amqp.Table{"x-max-length": int64(1), "x-overflow": "reject-publish"})
	ch := brokertest.Channel(t, url)
	tr := startTree(t, publisher.Config{URLs: []string{url}, ConfirmTimeout: 30 * time.Second}, treeOpts{})
	if err := tr.pub.Publish(context.Background(), msg(q)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := tr.pub.Publish(ctx, msg(q)); !errors.Is(err, publisher.ErrNacked) {
		t.Fatalf("Publish to a full queue = %v, want ErrNacked", err)
	}
	second := msg(q)
	done := make(chan error, 1)
	go func() { done <- tr.pub.Publish(context.Background(), second) }()
	poll.Until(t, "a nack retried", func() bool { return tr.pub.State().Buffered+tr.pub.State().Inflight > 0 })
	if _, ok, err := ch.Get(q, true); err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Publish after the queue drained = %v", err)
	}
	d, ok, err := ch.Get(q, true)
	if err != nil || !ok || d.MessageId != second.MessageID {
		t.Fatalf("queue holds %q (%v %v), want %s", d.MessageId, ok, err, second.MessageID)
	}
}

func TestCheckExchange(t *testing.T) {
	checkLeaks(t)
	url := brokertest.SharedURL(t)
	ex := fmt.Sprintf("pubtest-check-%d", time.Now().UnixNano())
	ch := brokertest.Channel(t, url)
	if err := ch.ExchangeDeclare(ex, "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	// Never bound, so auto-delete never removes it: the shared broker must not
	// collect one exchange per run.
	t.Cleanup(func() {
		if err := ch.ExchangeDelete(ex, false, false); err != nil {
			t.Errorf("delete exchange %s: %v", ex, err)
		}
	})
	tr := startTree(t, publisher.Config{URLs: []string{url}}, treeOpts{})
	poll.Until(t, "connect", tr.pub.Ready)
	ctx := context.Background()
	for _, name := range []string{"", "amq.direct", ex, ex} { // the second look comes from the cache
		if err := tr.pub.CheckExchange(ctx, name); err != nil {
			t.Fatalf("CheckExchange(%q) = %v", name, err)
		}
	}
	if err := tr.pub.CheckExchange(ctx, ex+"-missing"); !errors.Is(err, publisher.ErrExchangeNotFound) {
		t.Fatalf("CheckExchange(missing) = %v, want ErrExchangeNotFound", err)
	}
	// Publishing still works after the checker's channel was closed by a 404.
	m := msg("")
	m.Exchange, m.Mandatory = ex, false
	if err := tr.pub.Publish(ctx, m); err != nil {
		t.Fatalf("Publish to %s: %v", ex, err)
	}
}

// Publish is bounded by ConfirmTimeout also while no incarnation serves the
// mailbox (the broker refuses connections), and a message whose caller was
// told ErrConfirmTimeout is not published once the broker is back: only the
// message published afterwards reaches the queue.
func TestConfirmTimeoutWhileUnreachableNotPublishedLater(t *testing.T) {
	checkLeaks(t)
	url := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, url, "pubtest-timeout")
	proxy := faultproxy.ForURL(t, url)
	proxy.SetRefuse(true)
	tr := startTree(t, publisher.Config{URLs: []string{proxy.AMQPURL()}, ConfirmTimeout: 300 * time.Millisecond}, treeOpts{})

	// Twice: the second Publish reuses the first one's timer.
	for i := range 2 {
		m := msg(q)
		m.MessageID = fmt.Sprintf("timed-out-%d", i)
		if err := tr.pub.Publish(context.Background(), m); !errors.Is(err, publisher.ErrConfirmTimeout) {
			t.Fatalf("Publish %d while the broker is unreachable = %v, want ErrConfirmTimeout", i, err)
		}
	}

	proxy.SetRefuse(false)
	poll.Until(t, "connect", tr.pub.Ready)
	m := msg(q)
	m.MessageID = "after"
	// A loaded machine may need more than 300 ms for a confirm: try again
	// (a timed-out attempt may still arrive, so "after" may be there twice).
	for i := 0; ; i++ {
		err := tr.pub.Publish(context.Background(), m)
		if err == nil {
			break
		}
		if i == 50 {
			t.Fatalf("Publish after the broker came back: %v", err)
		}
	}
	got := brokertest.Drain(t, url, q)
	for id := range got {
		if id != "after" {
			t.Errorf("queue holds %q (%d), told ErrConfirmTimeout while the broker was unreachable", id, got[id])
		}
	}
	if got["after"] == 0 {
		t.Errorf("queue lacks the message published after the outage: %v", got)
	}
}
