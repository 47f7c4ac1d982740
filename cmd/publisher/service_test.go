package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/loadtest"
	"github.com/publisher-dev/publisher/internal/poll"
)

// specVariables are configuration variables docs/configuration.md's table
// documents.
var specVariables = []string{
	"PUBLISHER_AMQP_URLS", "PUBLISHER_LISTEN_ADDR", "PUBLISHER_ADMIN_ADDR", "PUBLISHER_AUTH_TOKEN",
	"PUBLISHER_AUTH_TOKEN_FILE", "PUBLISHER_ALLOWED_EXCHANGES", "PUBLISHER_MAX_BODY_BYTES",
	"PUBLISHER_CONFIRM_TIMEOUT", "PUBLISHER_BUFFER_SIZE", "PUBLISHER_CHANNELS",
	"PUBLISHER_MAX_PUBLISH_ATTEMPTS", "PUBLISHER_MAX_RESTARTS", "PUBLISHER_RESTART_WINDOW",
	"PUBLISHER_BACKOFF_MIN", "PUBLISHER_BACKOFF_MAX", "PUBLISHER_ON_GIVE_UP", "PUBLISHER_TOPOLOGY_FILE",
	"PUBLISHER_SHUTDOWN_TIMEOUT",
}

func TestHelpListsEveryVariable(t *testing.T) {
	out, err := exec.Command(binary, "-help").CombinedOutput()
	if err != nil {
		t.Fatalf("publisher -help: %v\n%s", err, out)
	}
	for _, v := range specVariables {
		if !bytes.Contains(out, []byte(v+"\n")) {
			t.Errorf("-help does not list %s", v)
		}
	}
	if !bytes.Contains(out, []byte("amqp://guest:guest@localhost:5672/")) {
		t.Error("-help does not show the default of PUBLISHER_AMQP_URLS")
	}
}

func TestInvalidConfigurationExits2NamingTheVariable(t *testing.T) {
	cases := []struct{ name, value string }{
		{"PUBLISHER_CHANNELS", "many"},
		{"PUBLISHER_CHANNELS", "0"},
		{"PUBLISHER_CONFIRM_TIMEOUT", "soon"},
		{"PUBLISHER_ON_GIVE_UP", "maybe"},
		{"PUBLISHER_AMQP_URLS", "http://user:s3cret@host/"},
		{"PUBLISHER_MAX_BODY_BYTES", "-1"},
		{"PUBLISHER_LISTEN_ADDR", "nonsense"},
		{"PUBLISHER_AUTH_TOKEN_FILE", "/nonexistent/token"},
		{"PUBLISHER_TOPOLOGY_FILE", "/nonexistent/topology.yaml"},
		{"PUBLISHER_BACKOFF_MAX", "1ms"},
	}
	for _, c := range cases {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			cmd := exec.Command(binary)
			cmd.Env = append(os.Environ(), c.name+"="+c.value)
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
				t.Fatalf("exit = %v, want status 2; output:\n%s", err, out)
			}
			if !bytes.Contains(out, []byte(c.name)) {
				t.Fatalf("message does not name %s:\n%s", c.name, out)
			}
			if bytes.Contains(out, []byte("s3cret")) {
				t.Fatalf("message leaks a password:\n%s", out)
			}
		})
	}
}

// Every status code docs/http-api.md documents for a publish, from a
// real request against a real broker; afterwards the service still publishes
// and no bad input restarted anything.
func TestEveryStatusCode(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	stamp := time.Now().UnixNano()
	q := fmt.Sprintf("svc-status-%d", stamp)
	full := fmt.Sprintf("svc-full-%d", stamp)
	brokertest.DeclareQueue(t, amqpURL, q)
	brokertest.DeclareQueueArgs(t, amqpURL, full, amqp.Table{"x-max-length": int64(1), "x-overflow": "reject-publish"})
	const token = "t0ken-for-tests"
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":         amqpURL,
		"PUBLISHER_AUTH_TOKEN":        token,
		"PUBLISHER_ALLOWED_EXCHANGES": "amq.default,amq.direct,no-such-exchange",
		"PUBLISHER_MAX_BODY_BYTES":    "1024",
		"PUBLISHER_CONFIRM_TIMEOUT":   "3s", // a nacked message is retried until then
	})
	p.waitReady()
	auth := map[string]string{"Authorization": "Bearer " + token}
	with := func(extra map[string]string) map[string]string {
		h := map[string]string{"Authorization": "Bearer " + token}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	// The x-max-length=1 queue takes one message; the next is nacked.
	if r, err := p.publish("amq.default", full, []byte("first"), auth); err != nil || r.code != 200 {
		t.Fatalf("filling %s: %+v %v", full, r, err)
	}
	cases := []struct {
		name     string
		exchange string
		key      string
		body     []byte
		headers  map[string]string
		want     int
	}{
		{"confirmed", "amq.default", q, []byte("ok"), auth, 200},
		{"confirmed via amq.direct", "amq.direct", q, []byte("ok"), auth, 422}, // not bound: returned
		{"malformed priority", "amq.default", q, []byte("x"), with(map[string]string{"X-Priority": "high"}), 400},
		{"malformed expiration", "amq.default", q, []byte("x"), with(map[string]string{"X-Expiration": "-5"}), 400},
		{"malformed persistent", "amq.default", q, []byte("x"), with(map[string]string{"X-Persistent": "perhaps"}), 400},
		{"missing token", "amq.default", q, []byte("x"), nil, 401},
		{"wrong token", "amq.default", q, []byte("x"), map[string]string{"Authorization": "Bearer nope"}, 401},
		{"exchange not allowed", "amq.topic", q, []byte("x"), auth, 403},
		{"exchange does not exist", "no-such-exchange", q, []byte("x"), auth, 404},
		{"body too large", "amq.default", q, bytes.Repeat([]byte("x"), 2048), auth, 413},
		{"unroutable", "amq.default", "no-queue-here-" + q, []byte("x"), auth, 422},
		{"nacked", "amq.default", full, []byte("second"), auth, 502},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := p.publish(c.exchange, c.key, c.body, c.headers)
			if err != nil {
				t.Fatal(err)
			}
			if r.code != c.want {
				t.Fatalf("status %d (%q), want %d", r.code, r.errText, c.want)
			}
			// Answers about a message that reached the publisher carry its id.
			if (r.code == 200 || r.code == 404 || r.code == 422 || r.code == 502) && r.id == "" {
				t.Fatalf("answer without message_id: %+v", r)
			}
			if r.code != 200 && r.errText == "" {
				t.Fatalf("error answer without error text: %+v", r)
			}
		})
	}

	// 503 (buffer full) and 504 (confirm timeout) from a service whose broker
	// is unreachable, with a one-message buffer.
	dead := freeAddr(t)
	p2 := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":       "amqp://guest:guest@" + dead + "/",
		"PUBLISHER_BUFFER_SIZE":     "1",
		"PUBLISHER_CONFIRM_TIMEOUT": "2s",
		"PUBLISHER_MAX_RESTARTS":    "1000",
	})
	poll.Within(t, waitLimit, "second service up", func() bool { return p2.answers("/healthz", 200) })
	first := make(chan publishResult, 1)
	go func() {
		r, err := p2.publish("amq.default", q, []byte("waits"), nil)
		if err != nil {
			t.Error(err)
		}
		first <- r
	}()
	poll.Within(t, waitLimit, "one message buffered", func() bool { return p2.metric("publisher_buffered_messages") == 1 })
	r, err := p2.publish("amq.default", q, []byte("no room"), nil)
	if err != nil || r.code != 503 || r.retryAfter == "" {
		t.Fatalf("buffer full: %+v %v, want 503 with Retry-After", r, err)
	}
	if r := <-first; r.code != 504 {
		t.Fatalf("unconfirmed: %+v, want 504", r)
	}

	// After the whole table: still publishing, and no restart anywhere.
	for i := range 20 {
		if r, err := p.publish("amq.default", q, []byte(fmt.Sprint("after-", i)), auth); err != nil || r.code != 200 {
			t.Fatalf("publish after the table: %+v %v", r, err)
		}
	}
	if n := p.metric("publisher_supervision_failures_total"); n != 0 {
		t.Fatalf("%v supervision failures after bad input, want 0", n)
	}
	if n := p.metric("publisher_supervision_restarts_total"); n != 0 {
		t.Fatalf("%v restarts after bad input, want 0", n)
	}
	if strings.Contains(p.Logs(), token) {
		t.Fatal("the auth token appears in the logs")
	}
}

// httpLoad runs n HTTP clients publishing to queue (with headers) until stop
// closes; a 2xx answer is an acknowledgement, outcome "0" a connection error.
func httpLoad(p *proc, queue string, n int, headers map[string]string, stop <-chan struct{}) <-chan *loadtest.Result {
	return loadtest.Start(n, stop, func() (string, bool, string) {
		r, err := p.publish("amq.default", queue, []byte("payload"), headers)
		if err != nil {
			return "", false, "0"
		}
		return r.id, r.code/100 == 2, strconv.Itoa(r.code)
	})
}

// Load through HTTP with the broker connections cut every 500 ms for 10 s.
func TestHTTPLoadWithConnectionCuts(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-cuts")
	proxy := faultproxy.ForURL(t, amqpURL)
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":            proxy.AMQPURL(),
		"PUBLISHER_CONFIRM_TIMEOUT":      "30s",
		"PUBLISHER_MAX_PUBLISH_ATTEMPTS": "10",
		"PUBLISHER_MAX_RESTARTS":         "100",
		"PUBLISHER_BACKOFF_MIN":          "10ms",
		"PUBLISHER_BACKOFF_MAX":          "200ms",
	})
	p.waitReady()
	stop := proxy.CutEvery(500*time.Millisecond, 20) // for 10 s
	res := <-httpLoad(p, q, 16, nil, stop)
	t.Logf("status codes: %v", res.Outcomes)
	brokertest.CheckDelivered(t, amqpURL, q, res.Acked, res.Total)
	if n := p.metric("publisher_supervision_restarts_total", `child="publisher"`); n < 5 {
		t.Fatalf("publisher restarts = %v for 20 cuts", n)
	}
	if n := p.metric("publisher_republished_total"); n == 0 {
		t.Log("no message was in flight at a cut (possible, but unusual)")
	}
}

// Broker unreachable: restarts, escalation, then exit status 3 within the
// time the limits imply; the logs say why and leak no password.
func TestUnreachableBrokerExits3(t *testing.T) {
	dead := freeAddr(t)
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":           "amqp://guest:s3cret@" + dead + "/",
		"PUBLISHER_MAX_RESTARTS":        "3",
		"PUBLISHER_RESTART_WINDOW":      "1m",
		"PUBLISHER_ROOT_MAX_RESTARTS":   "1",
		"PUBLISHER_ROOT_RESTART_WINDOW": "5m",
		"PUBLISHER_BACKOFF_MIN":         "10ms",
		"PUBLISHER_BACKOFF_MAX":         "100ms",
		"PUBLISHER_ON_GIVE_UP":          "exit",
	})
	// (3+1 failures) x 2 broker incarnations, each delay <= 100ms x 1.2: well
	// under a minute even on a loaded machine.
	if code := p.wait(time.Minute); code != 3 {
		t.Fatalf("exit status %d, want 3", code)
	}
	logs := p.Logs()
	for _, want := range []string{"child failed", "child restarting", "escalating", "gave up", "connection refused"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	if strings.Contains(logs, "s3cret") {
		t.Fatal("logs leak the broker password")
	}
}

// PUBLISHER_ON_GIVE_UP=degrade: the process stays up, not ready, answering
// 503 with Retry-After, and recovers when the broker returns.
func TestDegradeStaysUpAndRecovers(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-degrade")
	proxy := faultproxy.ForURL(t, amqpURL)
	proxy.SetRefuse(true)
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":         proxy.AMQPURL(),
		"PUBLISHER_ON_GIVE_UP":        "degrade",
		"PUBLISHER_MAX_RESTARTS":      "2",
		"PUBLISHER_ROOT_MAX_RESTARTS": "1",
		"PUBLISHER_BACKOFF_MIN":       "10ms",
		"PUBLISHER_BACKOFF_MAX":       "300ms",
		"PUBLISHER_CONFIRM_TIMEOUT":   "2s",
	})
	poll.Within(t, waitLimit, "degraded", func() bool { return strings.Contains(p.Logs(), "degraded") })
	if !p.Running() {
		t.Fatal("process exited in degrade mode")
	}
	if code, body := p.mustGet("/readyz"); code != 503 || !strings.Contains(body, `"given_up":true`) {
		t.Fatalf("/readyz = %d %s, want 503 given_up", code, body)
	}
	if code, _ := p.mustGet("/healthz"); code != 200 {
		t.Fatalf("/healthz = %d while degraded, want 200 (alive)", code)
	}
	r, err := p.publish("amq.default", q, []byte("x"), nil)
	if err != nil || r.code != 503 || r.retryAfter == "" {
		t.Fatalf("publish while degraded: %+v %v, want 503 with Retry-After", r, err)
	}
	proxy.SetRefuse(false)
	p.waitReady()
	r, err = p.publish("amq.default", q, []byte("back"), nil)
	if err != nil || r.code != 200 {
		t.Fatalf("publish after recovery: %+v %v", r, err)
	}
	if n := p.metric("publisher_supervision_escalations_total", `supervisor="broker"`); n < 2 {
		t.Fatalf("broker escalations = %v, want >= 2", n)
	}
}

// SIGTERM under load: exit 0, every 2xx message in the queue, no request left
// hanging.
func TestSIGTERMUnderLoad(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-sigterm")
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":        amqpURL,
		"PUBLISHER_SHUTDOWN_TIMEOUT": "10s",
	})
	p.waitReady()
	stop := make(chan struct{})
	res := httpLoad(p, q, 16, nil, stop)
	poll.Within(t, waitLimit, "some confirmed", func() bool { return p.metric("publisher_messages_total", `outcome="confirmed"`) > 200 })
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := p.wait(30 * time.Second)
	close(stop)
	var r *loadtest.Result
	select {
	case r = <-res:
	case <-time.After(90 * time.Second):
		t.Fatal("requests left hanging after shutdown")
	}
	if code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	t.Logf("%d requests, codes %v (0 = connection refused/closed after shutdown)", r.Total, r.Outcomes)
	brokertest.CheckDelivered(t, amqpURL, q, r.Acked, 0)
	for c := range r.Outcomes {
		if c != "0" && c != "200" && c != "503" {
			t.Fatalf("unexpected status %s during shutdown: %v", c, r.Outcomes)
		}
	}
	if !strings.Contains(p.Logs(), "shutdown complete") {
		t.Fatal("no clean shutdown in the logs")
	}
}

// The topology file is declared on connect (a quorum queue included).
func TestTopologyFileDeclaredOnConnect(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	stamp := time.Now().UnixNano()
	ex, q := fmt.Sprintf("svc-topo-ex-%d", stamp), fmt.Sprintf("svc-topo-q-%d", stamp)
	file := filepath.Join(t.TempDir(), "topology.yaml")
	topo := fmt.Sprintf(`exchanges:
  - name: %s
    type: topic
queues:
  - name: %s
    arguments:
      x-queue-type: quorum
bindings:
  - source: %s
    destination: %s
    routing_key: "orders.#"
`, ex, q, ex, q)
	if err := os.WriteFile(file, []byte(topo), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := amqp.Dial(amqpURL); err == nil {
			if ch, err := c.Channel(); err == nil {
				_, _ = ch.QueueDelete(q, false, false, false)
				_ = ch.ExchangeDelete(ex, false, false)
			}
			c.Close()
		}
	})
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL, "PUBLISHER_TOPOLOGY_FILE": file})
	p.waitReady()
	r, err := p.publish(ex, "orders.created", []byte("{}"), map[string]string{"Content-Type": "application/json", "X-Header-Tenant": "acme"})
	if err != nil || r.code != 200 {
		t.Fatalf("publish: %+v %v", r, err)
	}
	ch := brokertest.Channel(t, amqpURL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if d.MessageId != r.id || d.ContentType != "application/json" || d.DeliveryMode != amqp.Persistent || d.Headers["tenant"] != "acme" {
				t.Fatalf("delivered %+v", d)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatal("message not delivered to the quorum queue")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A listen address in use is a runtime error (exit 1) that names the variable.
func TestListenAddressInUseExits1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "PUBLISHER_LISTEN_ADDR="+ln.Addr().String(), "PUBLISHER_ADMIN_ADDR=127.0.0.1:0")
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("exit %v, want status 1; output:\n%s", cmd.ProcessState, out)
	}
	if !bytes.Contains(out, []byte("PUBLISHER_LISTEN_ADDR")) {
		t.Fatalf("message does not name PUBLISHER_LISTEN_ADDR:\n%s", out)
	}
}

// No output of the binary quotes any part of the password of a broker URL,
// whatever is wrong with the URL: refused ones (exit 2) and the one the
// parser takes apart differently ("us" as the host) alike.
func TestMalformedBrokerURLsNeverLeak(t *testing.T) {
	urls := []string{
		"amqp://user:s3cr%zzet@127.0.0.1/",
		"amqp://user:s3cret@127.0.0.1:99999999/",
		"amqp://user:s3cret@127.0.0.1:port/",
		"amqp://user:s3cret@[::1/",
		"amqp://user:s3cr/et@127.0.0.1/",
		"amqp://user:s3cr?et@127.0.0.1/",
		"amqp://user:s3cr et@127.0.0.1/",
		"http://user:s3cret@127.0.0.1/",
		"amqp://us/er:s3cret@127.0.0.1/",
		"amqp://guest:guest@127.0.0.1:5672/,amqp://user:s3cr%zzet@127.0.0.1/",
	}
	for _, u := range urls {
		t.Run(u, func(t *testing.T) {
			// Until an event, not for a fixed time: the process exits (a URL
			// refused), or its first dial has failed and been logged ("child
			// failed", with the error that would quote the URL); then SIGTERM,
			// so the shutdown's lines are read too.
			p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": u})
			poll.Within(t, waitLimit, "an exit or a failed dial", func() bool {
				return !p.Running() || strings.Contains(p.Logs(), "child failed")
			})
			if p.Running() {
				if err := p.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			code := p.wait(waitLimit)
			out := p.Logs()
			for _, f := range []string{"s3cr", "cret", "zzet", "%zz"} {
				if strings.Contains(out, f) {
					t.Fatalf("output shows %q:\n%s", f, out)
				}
			}
			if code == 2 && !strings.Contains(out, "PUBLISHER_AMQP_URLS") {
				t.Fatalf("exit 2 without naming PUBLISHER_AMQP_URLS:\n%s", out)
			}
			t.Logf("exit status %d", code)
		})
	}
}
