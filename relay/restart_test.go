package relay

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/spool"
)

var seedFlag = flag.Uint64("seed", 0, "seed of the forwarder restart tests' random schedule; 0: $RELAY_TEST_SEED, else from the clock (logged, to replay a failure)")

// testRand returns the random source of a test, seeded from -seed,
// $RELAY_TEST_SEED or the clock, and logs the seed.
func testRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		if v := os.Getenv("RELAY_TEST_SEED"); v != "" {
			s, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatalf("RELAY_TEST_SEED=%q: %v", v, err)
			}
			seed = s
		}
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -seed=%d or RELAY_TEST_SEED=%d)", seed, seed, seed)
	return rand.New(rand.NewPCG(seed, seed))
}

// restartForwarder starts r.Serve and restarts it n times, as a supervisor
// restarting the forwarder would: each incarnation is cancelled after a
// random time in [lo, hi) (drawn from rng), and the next one starts as soon
// as it returned, which must be with nil within 10 s. beforeCancel (if not
// nil) runs just before incarnation i is cancelled, afterStart (if not nil)
// just after incarnation i+1 started. It returns the stop function of the
// last incarnation, which runs on.
func restartForwarder(t *testing.T, r *Relay, rng *rand.Rand, n int, lo, hi time.Duration, beforeCancel, afterStart func(i int)) (stop func()) {
	t.Helper()
	start := func() (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Serve(ctx) }()
		return cancel, done
	}
	cancel, done := start()
	stopped := false
	t.Cleanup(func() { // after a failure
		if !stopped {
			cancel()
			<-done
		}
	})
	for i := range n {
		time.Sleep(lo + time.Duration(rng.Int64N(int64(hi-lo))))
		if beforeCancel != nil {
			beforeCancel(i)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("incarnation %d: Serve = %v, want nil after its cancellation", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("incarnation %d: Serve did not return within 10 s of its cancellation", i)
		}
		cancel, done = start()
		if afterStart != nil {
			afterStart(i)
		}
	}
	return func() {
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

// appender publishes (async: spooled, not awaited) messages with ids
// prefix-000000, prefix-000001, ... to the relay from one goroutine, without
// pause, until finished, and remembers the ids the spool took.
type appender struct {
	gate     sync.Mutex // held by each append, and by pause until resume
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	ids      []string
	err      error // the first refusal
}

func startAppender(t *testing.T, r *Relay, prefix string, newMsg func(id string) *publisher.Message) *appender {
	a := &appender{stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(a.halt) // after a failure
	go func() {
		defer close(a.done)
		for i := 0; ; i++ {
			select {
			case <-a.stop:
				return
			default:
			}
			id := fmt.Sprintf("%s-%06d", prefix, i)
			a.gate.Lock()
			d, err := r.Publish(context.Background(), newMsg(id), true)
			a.gate.Unlock()
			a.mu.Lock()
			if err == nil && d == Spooled {
				a.ids = append(a.ids, id)
			} else if a.err == nil {
				a.err = fmt.Errorf("Publish(%s) = %v, %v", id, d, err)
			}
			a.mu.Unlock()
		}
	}()
	return a
}

// pause returns once the append in progress (if any) returned; no append
// starts until resume.
func (a *appender) pause() { a.gate.Lock() }

func (a *appender) resume() { a.gate.Unlock() }

// halt stops the appender (again: no-op) and waits for it.
func (a *appender) halt() {
	a.stopOnce.Do(func() { close(a.stop) })
	<-a.done
}

// finish stops the appender and returns the ids it spooled.
func (a *appender) finish(t *testing.T) []string {
	t.Helper()
	a.halt()
	if a.err != nil {
		t.Fatalf("appender: %v", a.err)
	}
	return a.ids
}

// settlingPublisher is a publisher that settles what it is given on its own
// goroutine, in order, like the real one: a transient failure with
// probability failRate (the relay then submits the record again), else a
// confirm. Its buffer holds bufSize messages; beyond that Send answers
// ErrBufferFull. With stallRate, it stalls before a settlement with that
// probability, for up to 5 ms (a slow broker), so that its buffer fills.
type settlingPublisher struct {
	jobs     chan settleJob
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	confirms map[string]int
	submits  int
	full     int // ErrBufferFull answers
}

type settleJob struct {
	id   string
	done func(error)
}

func startSettling(rng *rand.Rand, bufSize int, failRate, stallRate float64) *settlingPublisher {
	p := &settlingPublisher{jobs: make(chan settleJob, bufSize), stop: make(chan struct{}), done: make(chan struct{}), confirms: map[string]int{}}
	// The settler owns its own source, drawn from the test's before it runs.
	srng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case j := <-p.jobs:
				if srng.Float64() < stallRate {
					time.Sleep(time.Duration(srng.Int64N(int64(5 * time.Millisecond))))
				}
				if srng.Float64() < failRate {
					j.done(fmt.Errorf("%w (1): connection lost while in flight", publisher.ErrTooManyAttempts))
					continue
				}
				p.mu.Lock()
				p.confirms[j.id]++
				p.mu.Unlock()
				j.done(nil)
			}
		}
	}()
	return p
}

func (p *settlingPublisher) Send(_ context.Context, msg *publisher.Message, _ time.Time, done func(error)) (publisher.Ticket, error) {
	select {
	case p.jobs <- settleJob{id: msg.MessageID, done: done}:
		p.mu.Lock()
		p.submits++
		p.mu.Unlock()
		return publisher.Ticket{}, nil
	default:
		p.mu.Lock()
		p.full++
		p.mu.Unlock()
		return publisher.Ticket{}, publisher.ErrBufferFull
	}
}

// counts returns the submissions taken and those answered ErrBufferFull.
func (p *settlingPublisher) counts() (submits, full int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.submits, p.full
}

// unconfirmed returns the ids of ids never confirmed.
func (p *settlingPublisher) unconfirmed(ids []string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, id := range ids {
		if p.confirms[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

func (p *settlingPublisher) CheckExchange(context.Context, string) error { return nil }

// close stops the settler; what it still holds is never settled.
func (p *settlingPublisher) close() {
	close(p.stop)
	<-p.done
}

// TestRestartStrandsNoRecord pins a race (issue 21): a forwarder
// incarnation is cancelled just as a record becomes durable, and the next one
// starts at once. Before Serve waited for its reader (and spool.Next checked
// its ctx), the cancelled incarnation's reader could still take that record
// from the spool after the next incarnation's Rewind and drop it, moving the
// shared cursor past it: it stayed spooled until the forwarder restarted
// again. So after every restart the spool must drain with no further one.
func TestRestartStrandsNoRecord(t *testing.T) {
	noLeaks(t)
	rng := testRand(t)
	sp, err := spool.Open(t.TempDir(), spool.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	pub := startSettling(rng, 16, 0, 0)
	defer pub.close()
	r := New(Config{Spool: sp, Publisher: pub, Window: 8, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})

	const restarts = 500
	var ids []string
	stop := restartForwarder(t, r, rng, restarts, 0, time.Millisecond, func(i int) {
		id := fmt.Sprintf("r-%06d", i)
		if _, err := r.Publish(context.Background(), &publisher.Message{RoutingKey: "q", MessageID: id}, true); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		ids = append(ids, id)
	}, func(i int) {
		// The new incarnation alone must forward the record.
		drained(t, sp, 5*time.Second, fmt.Sprintf("after restart %d", i+1))
	})
	stop()
	checkWindowEmpty(t, r)
	if missing := pub.unconfirmed(ids); len(missing) > 0 {
		t.Fatalf("%d records never confirmed, e.g. %s", len(missing), missing[0])
	}
}

// The forwarder restarted a thousand times while records are appended
// without pause, the publisher stalls now and then so that its buffer
// overflows (ErrBufferFull: the forwarder backs off, and may be cancelled
// while it does), and one publish in twenty fails transiently (the
// record is submitted again, by whichever incarnation runs when the failure
// arrives): afterwards one incarnation drains the spool, every record was
// confirmed, none was dead-lettered, and the window is empty.
func TestRestartsWithRetriesAndFullBuffer(t *testing.T) {
	noLeaks(t)
	rng := testRand(t)
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	pub := startSettling(rng, 4, 0.05, 0.05)
	defer pub.close()
	r := New(Config{Spool: sp, Publisher: pub, Window: 64, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})

	app := startAppender(t, r, "m", func(id string) *publisher.Message {
		return &publisher.Message{RoutingKey: "q", MessageID: id}
	})
	const restarts = 1000
	stop := restartForwarder(t, r, rng, restarts, 0, 2*time.Millisecond, nil, nil)
	ids := app.finish(t)
	drained(t, sp, 10*time.Second, fmt.Sprintf("after the last of %d restarts", restarts))
	stop()
	checkWindowEmpty(t, r)
	if len(ids) == 0 {
		t.Fatal("nothing was appended")
	}
	if missing := pub.unconfirmed(ids); len(missing) > 0 {
		t.Fatalf("%d of %d records never confirmed, e.g. %s", len(missing), len(ids), missing[0])
	}
	if _, err := os.Stat(filepath.Join(dir, "dead-letter.log")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dead-letter.log: %v, want none", err)
	}
	submits, full := pub.counts()
	t.Logf("%d records appended across %d restarts, %d submissions, %d answered ErrBufferFull", len(ids), restarts, submits, full)
	if full == 0 {
		t.Fatal("the publisher's buffer never overflowed: the backoff path was not exercised")
	}
}

// drained waits up to limit for the spool's Status to report no message,
// with no restart of the forwarder meanwhile. A running forwarder takes
// milliseconds for what these tests append; a stranded record stays until the
// next restart, however long one waits, so the limit only keeps a slow,
// shared machine from failing a record that is merely late.
func drained(t *testing.T, sp *spool.Spool, limit time.Duration, when string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		st := sp.Status()
		if st.Messages == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d message(s) still spooled %v later, with the forwarder running: stranded", when, st.Messages, limit)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkWindowEmpty fails the test unless the forwarding window is empty:
// every token given back, no record left pending (call it with the spool
// drained and the forwarder stopped).
func checkWindowEmpty(t *testing.T, r *Relay) {
	t.Helper()
	r.pendMu.Lock()
	pending := len(r.pending)
	r.pendMu.Unlock()
	if n := len(r.sem); n != 0 || pending != 0 {
		t.Fatalf("window: %d token(s) held, %d record(s) pending, want none once drained and stopped", n, pending)
	}
}
