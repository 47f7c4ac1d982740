package service

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/internal/fakeamqp"
	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/publisher"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

// start runs a Service whose publisher connects to b, a fake broker (the
// real publisher's logic against RabbitMQ is tested in package publisher
// and, for the whole service, in cmd/publisher).
func start(t *testing.T, cfg Config, b *fakeamqp.Broker) *running {
	t.Helper()
	return startWith(t, cfg, b, discard())
}

// startWith is start with the service logging to logger.
func startWith(t *testing.T, cfg Config, b *fakeamqp.Broker, logger *slog.Logger) *running {
	t.Helper()
	s, err := newService(cfg, Options{Logger: logger}, b.Dial)
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
	checkLeaks(t)
	b := &fakeamqp.Broker{}
	r := start(t, testConfig(), b)
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
	b.Conn().Block(true, "low on memory")
	poll.Within(t, 10*time.Second, "not ready while blocked", func() bool { c, _ := r.get("/readyz"); return c == 503 })
	if _, body := r.get("/readyz"); body["broker_up"] != false || body["blocked"] != true {
		t.Fatalf("/readyz %v with the broker blocking, want broker_up=false, blocked=true", body)
	}
}

// Without a spool, PUBLISHER_ON_GIVE_UP=exit: Run returns ErrGaveUp and what
// still waits is failed back (Terminated).
func TestGiveUpExits(t *testing.T) {
	checkLeaks(t)
	b := &fakeamqp.Broker{}
	b.Refuse(fakeamqp.ErrRefused)
	cfg := testConfig()
	cfg.OnGiveUp = "exit"
	r := start(t, cfg, b)
	select {
	case err := <-r.done:
		r.done <- err
		if !errors.Is(err, ErrGaveUp) {
			t.Fatalf("Run = %v, want ErrGaveUp", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tree did not give up")
	}
	if _, err := r.pub.Send(context.Background(), &publisher.Message{}, time.Time{}, func(error) {}); !errors.Is(err, publisher.ErrClosed) {
		t.Fatalf("Send after giving up = %v, want ErrClosed (the publisher terminated)", err)
	}
}

// PUBLISHER_ON_GIVE_UP=degrade: the process stays, not ready, 503 with
// Retry-After, given_up in /readyz and the metric; the first connection ends
// it, without reading changing anything.
func TestDegradeThenRecovers(t *testing.T) {
	checkLeaks(t)
	b := &fakeamqp.Broker{}
	b.Refuse(fakeamqp.ErrRefused)
	cfg := testConfig()
	cfg.OnGiveUp = "degrade"
	r := start(t, cfg, b)
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
	b.Refuse(nil)
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

// answered is publisher_http_requests_total summed over its codes; it fails
// the test when the series is missing.
func (r *running) answered(t *testing.T) float64 {
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Error(err)
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() == "publisher_http_requests_total" {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Error("no publisher_http_requests_total in the registry")
	return -1
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
	checkLeaks(t)
	b := &fakeamqp.Broker{}
	b.Refuse(fakeamqp.ErrRefused)
	cfg := testConfig()
	cfg.SpoolDir = t.TempDir()
	r := start(t, cfg, b)
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

// A shutdown against a broker that blocks publishing (a memory alarm): new
// publishes get 503 at once while the drain runs, every publish in flight
// is answered 503 "not published" (it never left the buffer) before the
// listener closes, the broker subtree stops after the HTTP side, and Run
// returns within the timeout plus a second.
func TestShutdownAnswersEveryPublishInFlight(t *testing.T) {
	checkLeaks(t)
	b := &fakeamqp.Broker{}
	cfg := testConfig()
	r := start(t, cfg, b)
	// When the publisher's connection closes, every answer must have been
	// given: the n in flight and the one refused while draining.
	answeredAtClose := make(chan float64, 1)
	b.OnClose = func(int) { answeredAtClose <- r.answered(t) }
	poll.Within(t, 10*time.Second, "ready", func() bool { c, _ := r.get("/readyz"); return c == 200 })
	b.Conn().Block(true, "low on memory")
	poll.Within(t, 10*time.Second, "blocked", func() bool { return r.pub.State().Blocked })
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
	poll.Within(t, 10*time.Second, "publishes waiting", func() bool { return r.pub.State().Buffered == n })
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
	if got := <-answeredAtClose; got != n+1 {
		t.Errorf("%v publishes answered when the broker connection closed, want %d: the broker subtree stopped first", got, n+1)
	}
	for _, p := range b.Published() {
		t.Errorf("published %s, after it was answered 503 not published", p.MessageId)
	}
}

// withDefaults gives every zero field the default its envconfig tag states.
func TestDefaultsMatchTheTags(t *testing.T) {
	checkLeaks(t)
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
	checkLeaks(t)
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
