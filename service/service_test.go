package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/publisher"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBroker stands in for the publisher actor: Serve runs serve (default:
// connected until ctx ends), Publish runs publish (default: confirmed).
type fakeBroker struct {
	serve   func(ctx context.Context, f *fakeBroker) error
	publish func(ctx context.Context, msg *publisher.Message) error

	connected  atomic.Bool
	connects   atomic.Uint64
	stopped    atomic.Int64 // UnixNano when the last Serve returned
	terminated atomic.Bool
}

func (f *fakeBroker) Serve(ctx context.Context) error {
	defer func() { f.stopped.Store(time.Now().UnixNano()) }()
	if f.serve != nil {
		return f.serve(ctx, f)
	}
	f.connect()
	<-ctx.Done()
	f.connected.Store(false)
	return nil
}

func (f *fakeBroker) connect() {
	f.connected.Store(true)
	f.connects.Add(1)
}

func (f *fakeBroker) Publish(ctx context.Context, msg *publisher.Message) error {
	if f.publish != nil {
		return f.publish(ctx, msg)
	}
	return nil
}

func (f *fakeBroker) Submit(ctx context.Context, msg *publisher.Message, done func(error)) error {
	return publisher.ErrClosed // the spool keeps what it cannot forward
}

func (f *fakeBroker) Send(ctx context.Context, msg *publisher.Message, deadline time.Time, done func(error)) (publisher.Ticket, error) {
	go func() { done(f.Publish(ctx, msg)) }()
	return publisher.Ticket{}, nil
}

func (f *fakeBroker) CheckExchange(context.Context, string) error { return publisher.ErrCannotCheck }

func (f *fakeBroker) State() publisher.State {
	c := f.connected.Load()
	st := publisher.State{Connected: c, Connects: f.connects.Load()}
	if c {
		st.Channels = 1
	}
	return st
}

func (f *fakeBroker) Ready() bool             { return f.connected.Load() }
func (f *fakeBroker) Terminated(reason error) { f.terminated.Store(true) }

// testConfig listens on free loopback ports, gives up fast and shuts down
// fast.
func testConfig() Config {
	return Config{
		ListenAddr:        "127.0.0.1:0",
		AdminAddr:         "127.0.0.1:0",
		MaxRestarts:       1,
		RootMaxRestarts:   1,
		BackoffMin:        time.Millisecond,
		BackoffMax:        10 * time.Millisecond,
		RestartWindow:     time.Minute,
		RootRestartWindow: time.Minute,
		ShutdownTimeout:   2 * time.Second,
		ConfirmTimeout:    10 * time.Second,
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// running is a Service started by start.
type running struct {
	*Service
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg Config, f *fakeBroker) *running {
	t.Helper()
	s, err := newService(cfg, Options{Logger: discard()}, func(publisher.Config) (broker, error) { return f, nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Service: s, t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return r
}

// stop cancels Run's ctx and returns its error and how long it took.
func (r *running) stop() (error, time.Duration) {
	t0 := time.Now()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err, time.Since(t0)
	case <-time.After(10 * time.Second):
		r.t.Fatal("Run did not return within 10s of the shutdown")
		return nil, 0
	}
}

func (r *running) get(path string) (int, map[string]any) {
	r.t.Helper()
	resp, err := http.Get("http://" + r.AdminAddr() + path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

type answer struct {
	code int
	body map[string]any
	err  error
}

func (r *running) publish(headers map[string]string) answer {
	req, _ := http.NewRequest(http.MethodPost, "http://"+r.APIAddr()+"/v1/publish/amq.default/q", strings.NewReader("hello"))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	a := answer{code: resp.StatusCode}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &a.body)
	return a
}

func TestReadinessFollowsTheBroker(t *testing.T) {
	f := &fakeBroker{}
	r := start(t, testConfig(), f)
	poll.Within(t, 10*time.Second, "ready", func() bool { c, _ := r.get("/readyz"); return c == 200 })
	_, body := r.get("/readyz")
	for _, k := range []string{"connected", "blocked", "channels", "inflight", "buffered", "broker", "broker_up", "draining", "given_up"} {
		if _, ok := body[k]; !ok {
			t.Errorf("/readyz lacks %q: %v", k, body)
		}
	}
	if c, _ := r.get("/healthz"); c != 200 {
		t.Fatalf("/healthz %d", c)
	}
	if a := r.publish(nil); a.code != 200 || a.body["status"] != "confirmed" {
		t.Fatalf("publish: %+v", a)
	}
	f.connected.Store(false)
	if c, body := r.get("/readyz"); c != 503 || body["broker_up"] != false {
		t.Fatalf("/readyz %d %v with the broker away, want 503 broker_up=false", c, body)
	}
}

// dialFails is a broker that never connects.
func dialFails(context.Context, *fakeBroker) error { return errors.New("dial: connection refused") }

// Without a spool, PUBLISHER_ON_GIVE_UP=exit: Run returns ErrGaveUp and what
// still waits is failed back (Terminated).
func TestGiveUpExits(t *testing.T) {
	f := &fakeBroker{serve: dialFails}
	r := start(t, testConfig(), f)
	select {
	case err := <-r.done:
		r.done <- err
		if !errors.Is(err, ErrGaveUp) {
			t.Fatalf("Run = %v, want ErrGaveUp", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tree did not give up")
	}
	if !f.terminated.Load() {
		t.Fatal("the publisher was not terminated after giving up")
	}
}

// PUBLISHER_ON_GIVE_UP=degrade: the process stays, not ready, 503 with
// Retry-After, given_up in /readyz and the metric; the first connection ends
// it, without reading changing anything.
func TestDegradeThenRecovers(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	f := &fakeBroker{serve: func(ctx context.Context, f *fakeBroker) error {
		if fail.Load() {
			return errors.New("dial: connection refused")
		}
		f.connect()
		<-ctx.Done()
		return nil
	}}
	cfg := testConfig()
	cfg.OnGiveUp = "degrade"
	r := start(t, cfg, f)
	poll.Within(t, 10*time.Second, "given up", func() bool { _, b := r.get("/readyz"); return b["given_up"] == true })
	for range 3 { // reading does not change the state
		if c, b := r.get("/readyz"); c != 503 || b["given_up"] != true {
			t.Fatalf("/readyz %d %v while degraded", c, b)
		}
	}
	if a := r.publish(nil); a.code != 503 {
		t.Fatalf("publish while degraded: %+v, want 503", a)
	}
	if !strings.Contains(r.metricsText(), "publisher_given_up 1") {
		t.Fatal("publisher_given_up is not 1 while degraded")
	}
	fail.Store(false)
	poll.Within(t, 10*time.Second, "recovered", func() bool { c, _ := r.get("/readyz"); return c == 200 })
	if a := r.publish(nil); a.code != 200 {
		t.Fatalf("publish after recovery: %+v", a)
	}
	if !strings.Contains(r.metricsText(), "publisher_given_up 0") {
		t.Fatal("publisher_given_up is not 0 after recovery")
	}
	if err, _ := r.stop(); err != nil {
		t.Fatalf("Run = %v after a clean shutdown", err)
	}
}

func (r *running) metricsText() string {
	resp, err := http.Get("http://" + r.AdminAddr() + "/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// With a spool that accepts, giving up on the broker never stops the process,
// whatever PUBLISHER_ON_GIVE_UP says: it stays ready and answers 202.
func TestGiveUpWithASpoolKeepsAccepting(t *testing.T) {
	f := &fakeBroker{serve: dialFails}
	cfg := testConfig()
	cfg.SpoolDir = t.TempDir()
	r := start(t, cfg, f)
	poll.Within(t, 10*time.Second, "given up", func() bool { _, b := r.get("/readyz"); return b["given_up"] == true })
	select {
	case err := <-r.done:
		r.done <- err
		t.Fatalf("Run returned %v while the spool accepts", err)
	case <-time.After(200 * time.Millisecond): // several give-up cycles at these backoffs
	}
	if c, b := r.get("/readyz"); c != 200 || b["broker_up"] != false || b["spool_accepting"] != true {
		t.Fatalf("/readyz %d %v, want ready with the broker down", c, b)
	}
	if a := r.publish(map[string]string{"Prefer": "respond-async"}); a.code != 202 || a.body["status"] != "spooled" {
		t.Fatalf("publish: %+v, want 202 spooled", a)
	}
	if err, _ := r.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// A shutdown against a broker that never answers: new publishes get 503 at
// once while the drain runs, every publish in flight is answered (here the
// fake never confirms) before the listener closes, the broker subtree stops
// after the HTTP side, and Run returns within the timeout plus a second.
func TestShutdownAnswersEveryPublishInFlight(t *testing.T) {
	var waiting, lastAnswer atomic.Int64
	f := &fakeBroker{publish: func(ctx context.Context, msg *publisher.Message) error {
		waiting.Add(1)
		<-ctx.Done() // a stalled broker: no confirm ever
		lastAnswer.Store(time.Now().UnixNano())
		return fmt.Errorf("%w: %w", publisher.ErrNotPublished, context.Cause(ctx))
	}}
	cfg := testConfig()
	r := start(t, cfg, f)
	poll.Within(t, 10*time.Second, "ready", func() bool { c, _ := r.get("/readyz"); return c == 200 })
	const n = 16
	answers := make(chan answer, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers <- r.publish(nil)
		}()
	}
	poll.Within(t, 10*time.Second, "publishes waiting", func() bool { return waiting.Load() == n })
	go func() {
		// While draining: not ready, and a new publish is answered 503 at once.
		poll.Within(t, 10*time.Second, "draining", func() bool { return r.draining.Load() })
		if c, _ := r.get("/readyz"); c != 503 {
			t.Errorf("/readyz %d while draining", c)
		}
		if a := r.publish(nil); a.code != 503 {
			t.Errorf("a new publish while draining: %+v, want 503", a)
		}
	}()
	err, took := r.stop()
	wg.Wait()
	close(answers)
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	if limit := cfg.ShutdownTimeout + time.Second; took > limit {
		t.Errorf("shutdown took %v, want at most %v", took, limit)
	}
	for a := range answers {
		if a.err != nil || a.code != 503 || a.body["message_id"] == nil {
			t.Errorf("in-flight publish answered %+v, want 503 with the message id", a)
		}
	}
	if f.stopped.Load() < lastAnswer.Load() {
		t.Error("the broker subtree stopped before the last publish was given up")
	}
}

// withDefaults gives every zero field the default its envconfig tag states.
func TestDefaultsMatchTheTags(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "PUBLISHER_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	var fromEnv Config
	if err := envconfig.Process("PUBLISHER", &fromEnv); err != nil {
		t.Fatal(err)
	}
	if got := (Config{}).withDefaults(); !reflect.DeepEqual(got, fromEnv) {
		t.Fatalf("withDefaults:\n%+v\nenvconfig defaults:\n%+v", got, fromEnv)
	}
}

func TestValidateNamesTheVariable(t *testing.T) {
	for _, tt := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Channels = -1 }, "PUBLISHER_CHANNELS"},
		{func(c *Config) { c.OnGiveUp = "maybe" }, "PUBLISHER_ON_GIVE_UP"},
		{func(c *Config) { c.BackoffMax = time.Millisecond }, "PUBLISHER_BACKOFF_MAX"},
	} {
		c := (Config{}).withDefaults()
		tt.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate = %v, want an error naming %s", err, tt.want)
		}
	}
}
