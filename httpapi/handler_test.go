package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/relay"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "s3cret-token"

var testNow = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// fakePublisher records what Publish received and answers with err, or with
// fn when set; a nil error is answered as relay.Confirmed, or as
// relay.Spooled when spool is set (the durable spool: at once when the
// request asked for async).
type fakePublisher struct {
	mu    sync.Mutex
	calls []*publisher.Message
	async []bool
	err   error
	fn    func(ctx context.Context, msg *publisher.Message) error
	spool bool
	hold  bool                          // Send keeps the callbacks in held
	held  []func(relay.Delivery, error) // guarded by mu
}

func (f *fakePublisher) publish(ctx context.Context, msg *publisher.Message, async bool) (relay.Delivery, error) {
	f.mu.Lock()
	f.calls = append(f.calls, msg)
	f.async = append(f.async, async)
	fn, err, spool := f.fn, f.err, f.spool
	f.mu.Unlock()
	if fn != nil {
		err = fn(ctx, msg)
	}
	switch {
	case err != nil:
		return 0, err
	case spool:
		return relay.Spooled, nil
	}
	return relay.Confirmed, nil
}

// Send answers each message as publish does, at once, unless hold is set:
// then it keeps the callbacks for the test to settle (or never).
func (f *fakePublisher) Send(ctx context.Context, msgs []*publisher.Message, opts relay.SendOptions,
	done func(int, relay.Delivery, error)) func(int, error) (relay.Delivery, error) {
	async := opts.Async
	for i, m := range msgs {
		f.mu.Lock()
		hold := f.hold
		if hold {
			f.calls = append(f.calls, m)
			f.held = append(f.held, func(d relay.Delivery, err error) { done(i, d, err) })
			f.mu.Unlock()
			continue
		}
		f.mu.Unlock()
		d, err := f.publish(ctx, m, async)
		done(i, d, err)
	}
	return func(i int, cause error) (relay.Delivery, error) {
		return 0, fmt.Errorf("%w: %w", publisher.ErrNotPublished, cause)
	}
}

func (f *fakePublisher) received() []*publisher.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*publisher.Message(nil), f.calls...)
}

// codeRecorder collects OnResponse calls.
type codeRecorder struct {
	mu    sync.Mutex
	codes []int
}

func (c *codeRecorder) record(code int) {
	c.mu.Lock()
	c.codes = append(c.codes, code)
	c.mu.Unlock()
}

func (c *codeRecorder) get() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.codes...)
}

// testHandler builds the handler with a fixed clock; edit adjusts the config.
func testHandler(pub relay.Sender, rec *codeRecorder, edit func(*Config)) http.Handler {
	cfg := Config{
		Sender:       pub,
		AuthToken:    testToken,
		MaxBodyBytes: 16,
		RetryAfter:   1500 * time.Millisecond,
		Logger:       discardLogger(),
	}
	if rec != nil {
		cfg.OnResponse = rec.record
	}
	if edit != nil {
		edit(&cfg)
	}
	h := NewHandler(cfg)
	h.now = func() time.Time { return testNow }
	return h
}

// generated marks a MessageID the handler must have generated.
const generated = "<generated>"

// msg returns the message an accepted request with no options produces.
func msg(exchange, key, body string, edit func(*publisher.Message)) *publisher.Message {
	m := &publisher.Message{
		Exchange: exchange, RoutingKey: key, MessageID: generated,
		Persistent: true, Mandatory: true, Timestamp: testNow,
	}
	if body != "" {
		m.Body = []byte(body)
	}
	if edit != nil {
		edit(m)
	}
	return m
}

func TestHandler(t *testing.T) {
	checkLeaks(t)
	auth := [][2]string{{"Authorization", "Bearer " + testToken}}
	with := func(extra ...[2]string) [][2]string { return append(append([][2]string{}, auth...), extra...) }
	long := strings.Repeat("a", 256)
	max := strings.Repeat("a", 255)

	tests := []struct {
		name     string
		cfg      func(*Config)
		method   string // default POST
		target   string
		header   [][2]string
		body     string
		chunked  bool // hide the body's length (ContentLength -1)
		pubErr   error
		wantCode int
		wantMsg  *publisher.Message // nil: Publish must not be called
		wantHdr  map[string]string
		wantID   string // message_id expected in the answer ("" = none, generated = any)
		wantErr  string // substring of the error text
		notRoute bool   // not a publish route: OnResponse is not called
	}{
		{
			name: "minimal", target: "/v1/publish/orders/order.created", header: auth, body: "hello",
			wantCode: 200, wantMsg: msg("orders", "order.created", "hello", nil), wantID: generated,
		},
		{
			name: "every header", target: "/v1/publish/orders/rk", body: "{}",
			header: with(
				[2]string{"Content-Type", "application/json"},
				[2]string{"Content-Encoding", "gzip"},
				[2]string{"X-Message-Id", "m-1"},
				[2]string{"X-Correlation-Id", "c-1"},
				[2]string{"X-Reply-To", "replies"},
				[2]string{"X-Type", "order.created.v1"},
				[2]string{"X-Expiration", "60000"},
				[2]string{"X-Priority", "7"},
				[2]string{"X-Persistent", "FALSE"},
				[2]string{"X-Mandatory", "false"},
				[2]string{"X-Header-Tenant", "acme"},
				[2]string{"x-header-trace-id", "abc"},
				[2]string{"X-Header-Multi", "1"},
				[2]string{"X-Header-Multi", "2"},
			),
			wantCode: 200, wantID: "m-1",
			wantMsg: msg("orders", "rk", "{}", func(m *publisher.Message) {
				m.ContentType, m.ContentEncoding = "application/json", "gzip"
				m.MessageID, m.CorrelationID, m.ReplyTo, m.Type = "m-1", "c-1", "replies", "order.created.v1"
				m.Expiration, m.Priority = "60000", 7
				m.Persistent, m.Mandatory = false, false
				m.Headers = map[string]any{"tenant": "acme", "trace-id": "abc", "multi": "1, 2"}
			}),
		},
		{
			name: "persistent and mandatory true in any case", target: "/v1/publish/ex/rk", body: "x",
			header:   with([2]string{"X-Persistent", "True"}, [2]string{"X-Mandatory", "TRUE"}),
			wantCode: 200, wantID: generated, wantMsg: msg("ex", "rk", "x", nil),
		},
		{
			name: "expiration bounds and leading zeros", target: "/v1/publish/ex/rk",
			header:   with([2]string{"X-Expiration", "0002147483647"}, [2]string{"X-Priority", "255"}),
			wantCode: 200, wantID: generated,
			wantMsg: msg("ex", "rk", "", func(m *publisher.Message) { m.Expiration, m.Priority = "2147483647", 255 }),
		},
		{
			name: "zero expiration and priority", target: "/v1/publish/ex/rk",
			header:   with([2]string{"X-Expiration", "0"}, [2]string{"X-Priority", "0"}),
			wantCode: 200, wantID: generated,
			wantMsg: msg("ex", "rk", "", func(m *publisher.Message) { m.Expiration = "0" }),
		},
		{
			name: "amq.default is the default exchange", target: "/v1/publish/amq.default/my-queue", header: auth, body: "b",
			wantCode: 200, wantID: generated, wantMsg: msg("", "my-queue", "b", nil),
		},
		{
			name: "routing key with slashes", target: "/v1/publish/ex/a/b/c", header: auth,
			wantCode: 200, wantID: generated, wantMsg: msg("ex", "a/b/c", "", nil),
		},
		{
			name: "percent-encoded routing key", target: "/v1/publish/ex/a%2F%2Fb%20c%2E%2E", header: auth,
			wantCode: 200, wantID: generated, wantMsg: msg("ex", "a//b c..", "", nil),
		},
		{
			name: "empty routing key with slash", target: "/v1/publish/ex/", header: auth,
			wantCode: 200, wantID: generated, wantMsg: msg("ex", "", "", nil),
		},
		{
			name: "empty routing key without slash", target: "/v1/publish/ex", header: auth,
			wantCode: 200, wantID: generated, wantMsg: msg("ex", "", "", nil),
		},
		{
			name: "longest names", target: "/v1/publish/" + max + "/" + max,
			header:   with([2]string{"X-Message-Id", max}),
			wantCode: 200, wantID: max, wantMsg: msg(max, max, "", func(m *publisher.Message) { m.MessageID = max }),
		},
		{
			name: "body at the limit", target: "/v1/publish/ex/rk", header: auth, body: strings.Repeat("b", 16),
			wantCode: 200, wantID: generated, wantMsg: msg("ex", "rk", strings.Repeat("b", 16), nil),
		},
		{
			name: "streamed body at the limit", target: "/v1/publish/ex/rk", header: auth, body: strings.Repeat("b", 16), chunked: true,
			wantCode: 200, wantID: generated, wantMsg: msg("ex", "rk", strings.Repeat("b", 16), nil),
		},
		{
			name: "no auth configured", cfg: func(c *Config) { c.AuthToken = "" }, target: "/v1/publish/ex/rk",
			wantCode: 200, wantID: generated, wantMsg: msg("ex", "rk", "", nil),
		},
		{
			name: "bearer scheme is case-insensitive", target: "/v1/publish/ex/rk",
			header:   [][2]string{{"Authorization", "bearer " + testToken}},
			wantCode: 200, wantID: generated, wantMsg: msg("ex", "rk", "", nil),
		},

		// 401
		{name: "missing token", target: "/v1/publish/ex/rk", wantCode: 401,
			wantHdr: map[string]string{"WWW-Authenticate": "Bearer"}, wantErr: "token"},
		{name: "wrong token", target: "/v1/publish/ex/rk", header: [][2]string{{"Authorization", "Bearer nope"}},
			wantCode: 401, wantHdr: map[string]string{"WWW-Authenticate": "Bearer"}},
		{name: "token prefix", target: "/v1/publish/ex/rk", header: [][2]string{{"Authorization", "Bearer " + testToken[:4]}},
			wantCode: 401},
		{name: "basic scheme", target: "/v1/publish/ex/rk", header: [][2]string{{"Authorization", "Basic " + testToken}},
			wantCode: 401},
		{name: "bare token", target: "/v1/publish/ex/rk", header: [][2]string{{"Authorization", testToken}},
			wantCode: 401},
		{name: "two authorization headers", target: "/v1/publish/ex/rk",
			header: [][2]string{{"Authorization", "Bearer " + testToken}, {"Authorization", "Bearer " + testToken}}, wantCode: 401},
		{name: "405 before auth", method: http.MethodGet, target: "/v1/publish/ex/rk", wantCode: 405},
		// The client's id is echoed by the early rejections too.
		{name: "401 echoes the client id", target: "/v1/publish/ex/rk", header: [][2]string{{"X-Message-Id", "m-401"}},
			wantCode: 401, wantID: "m-401"},
		{name: "403 echoes the client id", cfg: allow("orders"), target: "/v1/publish/payments/rk",
			header: with([2]string{"X-Message-Id", "m-403"}), wantCode: 403, wantID: "m-403"},
		{name: "413 echoes the client id", target: "/v1/publish/ex/rk", header: with([2]string{"X-Message-Id", "m-413"}),
			body: strings.Repeat("b", 17), wantCode: 413, wantID: "m-413"},
		{name: "405 echoes the client id", method: http.MethodPut, target: "/v1/publish/ex/rk",
			header: [][2]string{{"X-Message-Id", "m-405"}}, wantCode: 405, wantID: "m-405"},
		{name: "an unusable client id is not echoed", target: "/v1/publish/ex/rk",
			header: [][2]string{{"X-Message-Id", "a"}, {"X-Message-Id", "b"}}, wantCode: 401},
		{name: "a too long client id is not echoed", target: "/v1/publish/ex/rk",
			header: [][2]string{{"X-Message-Id", long}}, wantCode: 401},

		// 403 allow-list
		{name: "exchange not allowed", cfg: allow("orders", "amq.default"), target: "/v1/publish/payments/rk", header: auth,
			wantCode: 403, wantErr: "not allowed"},
		{name: "allowed exchange", cfg: allow("orders", "amq.default"), target: "/v1/publish/orders/rk", header: auth,
			wantCode: 200, wantID: generated, wantMsg: msg("orders", "rk", "", nil)},
		{name: "allowed default exchange", cfg: allow("orders", "amq.default"), target: "/v1/publish/amq.default/q", header: auth,
			wantCode: 200, wantID: generated, wantMsg: msg("", "q", "", nil)},
		{name: "default exchange not allowed", cfg: allow("orders"), target: "/v1/publish/amq.default/q", header: auth,
			wantCode: 403},
		{name: "auth before allow-list", cfg: allow("orders"), target: "/v1/publish/payments/rk", wantCode: 401},

		// 413
		{name: "content-length over the limit", target: "/v1/publish/ex/rk", header: auth, body: strings.Repeat("b", 17),
			wantCode: 413, wantErr: "16 bytes"},
		{name: "streamed body over the limit", target: "/v1/publish/ex/rk", header: auth, body: strings.Repeat("b", 17), chunked: true,
			wantCode: 413},
		{name: "streamed body over the limit keeps the id", target: "/v1/publish/ex/rk", header: with([2]string{"X-Message-Id", "m-9"}),
			body: strings.Repeat("b", 100), chunked: true, wantCode: 413, wantID: "m-9"},
		{name: "default limit is 1 MiB", cfg: func(c *Config) { c.MaxBodyBytes = 0 }, target: "/v1/publish/ex/rk", header: auth,
			body: strings.Repeat("b", 1<<20+1), wantCode: 413},

		// 400
		{name: "invalid exchange", target: "/v1/publish/bad%24name/rk", header: auth, wantCode: 400, wantErr: "exchange"},
		{name: "exchange with slash", target: "/v1/publish/a%2Fb/rk", header: auth, wantCode: 400},
		{name: "exchange too long", target: "/v1/publish/" + long + "/rk", header: auth, wantCode: 400},
		{name: "routing key too long", target: "/v1/publish/ex/" + long, header: auth, wantCode: 400, wantErr: "routing key"},
		{name: "message id too long", target: "/v1/publish/ex/rk", header: with([2]string{"X-Message-Id", long}), wantCode: 400},
		{name: "correlation id too long", target: "/v1/publish/ex/rk", header: with([2]string{"X-Message-Id", "m-2"}, [2]string{"X-Correlation-Id", long}),
			wantCode: 400, wantID: "m-2"},
		{name: "type too long", target: "/v1/publish/ex/rk", header: with([2]string{"X-Type", long}), wantCode: 400},
		{name: "content-type too long", target: "/v1/publish/ex/rk", header: with([2]string{"Content-Type", long}), wantCode: 400},
		{name: "negative expiration", target: "/v1/publish/ex/rk", header: with([2]string{"X-Expiration", "-1"}), wantCode: 400, wantErr: "X-Expiration"},
		{name: "signed expiration", target: "/v1/publish/ex/rk", header: with([2]string{"X-Expiration", "+5"}), wantCode: 400},
		{name: "expiration too big", target: "/v1/publish/ex/rk", header: with([2]string{"X-Expiration", "2147483648"}), wantCode: 400},
		{name: "expiration not a number", target: "/v1/publish/ex/rk", header: with([2]string{"X-Expiration", "1s"}), wantCode: 400},
		{name: "priority too big", target: "/v1/publish/ex/rk", header: with([2]string{"X-Priority", "256"}), wantCode: 400, wantErr: "X-Priority"},
		{name: "negative priority", target: "/v1/publish/ex/rk", header: with([2]string{"X-Priority", "-1"}), wantCode: 400},
		{name: "priority twice", target: "/v1/publish/ex/rk", header: with([2]string{"X-Priority", "1"}, [2]string{"X-Priority", "1"}), wantCode: 400},
		{name: "persistent not a bool", target: "/v1/publish/ex/rk", header: with([2]string{"X-Persistent", "yes"}), wantCode: 400, wantErr: "X-Persistent"},
		{name: "mandatory not a bool", target: "/v1/publish/ex/rk", header: with([2]string{"X-Mandatory", "0"}), wantCode: 400, wantErr: "X-Mandatory"},
		{name: "message id twice", target: "/v1/publish/ex/rk", header: with([2]string{"X-Message-Id", "a"}, [2]string{"X-Message-Id", "b"}), wantCode: 400},
		{name: "header without a name", target: "/v1/publish/ex/rk", header: with([2]string{"X-Header-", "v"}), wantCode: 400},
		{name: "header name too long", target: "/v1/publish/ex/rk", header: with([2]string{"X-Header-" + long, "v"}), wantCode: 400},
		{name: "empty path segment is not redirected", target: "/v1/publish//rk", header: auth, wantCode: 400, wantErr: "percent-encode"},
		{name: "dot-dot segment is not redirected", target: "/v1/publish/ex/a/../b", header: auth, wantCode: 400},
		{name: "validation before accepting", cfg: func(c *Config) { c.Accepting = func() error { return publisher.ErrClosed } },
			target: "/v1/publish/ex/rk", header: with([2]string{"X-Priority", "x"}), wantCode: 400},

		// 405, 404
		{name: "GET on the publish path", method: http.MethodGet, target: "/v1/publish/ex/rk", header: auth,
			wantCode: 405, wantHdr: map[string]string{"Allow": "POST"}},
		{name: "PUT on the publish path", method: http.MethodPut, target: "/v1/publish/ex", header: auth,
			wantCode: 405, wantHdr: map[string]string{"Allow": "POST"}},
		{name: "unknown path", target: "/v2/publish/ex/rk", header: auth, wantCode: 404, notRoute: true},
		{name: "root", method: http.MethodGet, target: "/", wantCode: 404, notRoute: true},
		{name: "publish without exchange", target: "/v1/publish/", header: auth, wantCode: 404, notRoute: true},
		{name: "publish prefix only", target: "/v1/publish", header: auth, wantCode: 404, notRoute: true},
		{name: "longer first segment", target: "/v1/publishers/ex/rk", header: auth, wantCode: 404, notRoute: true},
		{name: "unclean unknown path", target: "/v2//x", header: auth, wantCode: 404, notRoute: true},

		// 503 from Accepting
		{name: "not accepting: shutting down", cfg: func(c *Config) { c.Accepting = func() error { return publisher.ErrClosed } },
			target: "/v1/publish/ex/rk", header: auth, body: "x",
			wantCode: 503, wantHdr: map[string]string{"Retry-After": "2"}, wantErr: "shutting down"},
		{name: "not accepting: given up", cfg: func(c *Config) {
			c.Accepting = func() error { return errors.New("dial amqp://guest:hunter2@broker: refused") }
			c.RetryAfter = 0
		},
			target: "/v1/publish/ex/rk", header: with([2]string{"X-Message-Id", "m-3"}), body: strings.Repeat("b", 100), chunked: true,
			wantCode: 503, wantHdr: map[string]string{"Retry-After": "1"}, wantID: "m-3"},
		{name: "auth before accepting", cfg: func(c *Config) { c.Accepting = func() error { return publisher.ErrClosed } },
			target: "/v1/publish/ex/rk", wantCode: 401},
		{name: "accepting nil error", cfg: func(c *Config) { c.Accepting = func() error { return nil } },
			target: "/v1/publish/ex/rk", header: auth, wantCode: 200, wantID: generated, wantMsg: msg("ex", "rk", "", nil)},

		// Publish errors
		{name: "exchange not found", target: "/v1/publish/ex/rk", header: auth,
			pubErr:   &publisher.ChannelError{Code: 404, Reason: "NOT_FOUND - no exchange 'ex' in vhost '/'"},
			wantCode: 404, wantID: generated, wantMsg: msg("ex", "rk", "", nil), wantErr: "no exchange 'ex'"},
		{name: "exchange not found sentinel", target: "/v1/publish/ex/rk", header: auth, pubErr: publisher.ErrExchangeNotFound,
			wantCode: 404, wantID: generated, wantMsg: msg("ex", "rk", "", nil)},
		{name: "unroutable", target: "/v1/publish/ex/rk", header: auth, pubErr: &publisher.ReturnError{Code: 312, Text: "NO_ROUTE"},
			wantCode: 422, wantID: generated, wantMsg: msg("ex", "rk", "", nil), wantErr: "NO_ROUTE"},
		{name: "unroutable sentinel", target: "/v1/publish/ex/rk", header: auth, pubErr: fmt.Errorf("wrapped: %w", publisher.ErrUnroutable),
			wantCode: 422, wantID: generated, wantMsg: msg("ex", "rk", "", nil)},
		{name: "nacked", target: "/v1/publish/ex/rk", header: auth, pubErr: publisher.ErrNacked,
			wantCode: 502, wantID: generated, wantMsg: msg("ex", "rk", "", nil), wantErr: "nacked"},
		{name: "too many attempts", target: "/v1/publish/ex/rk", header: auth,
			pubErr:   fmt.Errorf("%w: %w", publisher.ErrTooManyAttempts, publisher.ErrClosed),
			wantCode: 502, wantID: generated, wantMsg: msg("ex", "rk", "", nil)},
		{name: "access refused", target: "/v1/publish/ex/rk", header: auth,
			pubErr:   fmt.Errorf("publish: %w", &publisher.ChannelError{Code: 403, Reason: "ACCESS_REFUSED - write access"}),
			wantCode: 403, wantID: generated, wantMsg: msg("ex", "rk", "", nil), wantErr: "ACCESS_REFUSED"},
		{name: "precondition failed", target: "/v1/publish/ex/rk", header: auth,
			pubErr:   &publisher.ChannelError{Code: 406, Reason: "PRECONDITION_FAILED"},
			wantCode: 400, wantID: generated, wantMsg: msg("ex", "rk", "", nil), wantErr: "406 PRECONDITION_FAILED"},
		{name: "rejected sentinel", target: "/v1/publish/ex/rk", header: auth, pubErr: publisher.ErrRejected,
			wantCode: 400, wantID: generated, wantMsg: msg("ex", "rk", "", nil)},
		{name: "invalid message", target: "/v1/publish/ex/rk", header: auth, pubErr: publisher.ErrInvalidMessage,
			wantCode: 400, wantID: generated, wantMsg: msg("ex", "rk", "", nil)},
		{name: "buffer full", target: "/v1/publish/ex/rk", header: auth, pubErr: publisher.ErrBufferFull,
			wantCode: 503, wantHdr: map[string]string{"Retry-After": "2"}, wantID: generated, wantMsg: msg("ex", "rk", "", nil), wantErr: "buffer full"},
		{name: "closed", target: "/v1/publish/ex/rk", header: auth, pubErr: publisher.ErrClosed,
			wantCode: 503, wantHdr: map[string]string{"Retry-After": "2"}, wantID: generated, wantMsg: msg("ex", "rk", "", nil)},
		{name: "confirm timeout", target: "/v1/publish/ex/rk", header: auth, pubErr: publisher.ErrConfirmTimeout,
			wantCode: 504, wantID: generated, wantMsg: msg("ex", "rk", "", nil)},
		{name: "deadline exceeded", target: "/v1/publish/ex/rk", header: auth, pubErr: fmt.Errorf("wait: %w", context.DeadlineExceeded),
			wantCode: 504, wantID: generated, wantMsg: msg("ex", "rk", "", nil)},
		{name: "unknown error", target: "/v1/publish/ex/rk", header: auth, pubErr: errors.New("amqp://guest:hunter2@x: boom"),
			wantCode: 503, wantHdr: map[string]string{"Retry-After": "2"}, wantID: generated, wantMsg: msg("ex", "rk", "", nil)},
		{name: "canceled without a cancelled request is unknown", target: "/v1/publish/ex/rk", header: auth, pubErr: context.Canceled,
			wantCode: 503, wantHdr: map[string]string{"Retry-After": "2"}, wantID: generated, wantMsg: msg("ex", "rk", "", nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{err: tt.pubErr}
			rec := &codeRecorder{}
			h := testHandler(pub, rec, tt.cfg)

			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = struct{ io.Reader }{body} // hides the length
			}
			req := httptest.NewRequest(method, tt.target, body)
			if tt.chunked {
				req.ContentLength = -1
			}
			for _, kv := range tt.header {
				req.Header[kv[0]] = append(req.Header[kv[0]], kv[1]) // as sent, not canonicalized
			}
			req.Header = canonical(req.Header)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)

			if w.Code != tt.wantCode {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tt.wantCode, w.Body)
			}
			wantCodes := []int{tt.wantCode}
			if tt.notRoute {
				wantCodes = nil
			}
			if got := rec.get(); !reflect.DeepEqual(got, wantCodes) {
				t.Errorf("OnResponse calls = %v, want %v", got, wantCodes)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			for k, v := range tt.wantHdr {
				if got := w.Header().Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tt.wantCode != 503 && w.Header().Get("Retry-After") != "" {
				t.Errorf("Retry-After on a %d", tt.wantCode)
			}
			for _, secret := range []string{testToken, "hunter2"} {
				if strings.Contains(w.Body.String(), secret) {
					t.Errorf("answer leaks a secret: %s", w.Body)
				}
			}

			var ans struct {
				MessageID *string `json:"message_id"`
				Status    string  `json:"status"`
				Error     string  `json:"error"`
			}
			dec := json.NewDecoder(bytes.NewReader(w.Body.Bytes()))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&ans); err != nil {
				t.Fatalf("answer is not the expected JSON: %v: %s", err, w.Body)
			}
			if tt.wantCode == 200 {
				if ans.Status != "confirmed" || ans.Error != "" {
					t.Errorf("answer = %s", w.Body)
				}
			} else if ans.Error == "" || ans.Status != "" || !strings.Contains(ans.Error, tt.wantErr) {
				t.Errorf("answer = %s, want an error containing %q", w.Body, tt.wantErr)
			}
			switch {
			case tt.wantID == "":
				if ans.MessageID != nil || w.Header().Get("X-Message-Id") != "" {
					t.Errorf("unexpected message id: %s, header %q", w.Body, w.Header().Get("X-Message-Id"))
				}
			case ans.MessageID == nil || *ans.MessageID == "":
				t.Errorf("no message_id in %s", w.Body)
			case w.Header().Get("X-Message-Id") != *ans.MessageID:
				t.Errorf("X-Message-Id header %q != JSON %q", w.Header().Get("X-Message-Id"), *ans.MessageID)
			case tt.wantID != generated && *ans.MessageID != tt.wantID:
				t.Errorf("message_id = %q, want %q", *ans.MessageID, tt.wantID)
			}

			calls := pub.received()
			if tt.wantMsg == nil {
				if len(calls) != 0 {
					t.Fatalf("Publish called for a rejected request: %+v", calls[0])
				}
				return
			}
			if len(calls) != 1 {
				t.Fatalf("Publish called %d times, want 1", len(calls))
			}
			got, want := *calls[0], *tt.wantMsg
			if want.MessageID == generated {
				if got.MessageID == "" || got.MessageID != *ans.MessageID {
					t.Errorf("generated id %q, answered %q", got.MessageID, *ans.MessageID)
				}
				want.MessageID = got.MessageID
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Publish got\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func allow(names ...string) func(*Config) {
	return func(c *Config) { c.AllowedExchanges = names }
}

// canonical re-keys h as net/http's server does.
func canonical(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		for _, v := range vs {
			out.Add(k, v)
		}
	}
	return out
}

func TestGeneratedIDsDiffer(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	h := testHandler(pub, nil, func(c *Config) { c.AuthToken = "" })
	for range 2 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v1/publish/ex/rk", nil))
	}
	calls := pub.received()
	if len(calls) != 2 || calls[0].MessageID == calls[1].MessageID || calls[0].MessageID == "" {
		t.Fatalf("ids: %q, %q", calls[0].MessageID, calls[1].MessageID)
	}
}

func TestPublishGetsTheRequestContext(t *testing.T) {
	checkLeaks(t)
	type key struct{}
	pub := &fakePublisher{fn: func(ctx context.Context, _ *publisher.Message) error {
		if ctx.Value(key{}) != "v" {
			return errors.New("not the request's context")
		}
		return nil
	}}
	h := testHandler(pub, nil, func(c *Config) { c.AuthToken = "" })
	req := httptest.NewRequestWithContext(context.WithValue(context.Background(), key{}, "v"),
		http.MethodPost, "/v1/publish/ex/rk", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
}

func TestClientCancelled(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{fn: func(ctx context.Context, _ *publisher.Message) error {
		<-ctx.Done()
		return ctx.Err()
	}}
	rec := &codeRecorder{}
	h := testHandler(pub, rec, func(c *Config) { c.AuthToken = "" })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/publish/ex/rk", strings.NewReader("x")))
	if w.Code/100 == 2 {
		t.Fatalf("status %d for a cancelled request", w.Code)
	}
	if got := rec.get(); !reflect.DeepEqual(got, []int{StatusClientClosedRequest}) {
		t.Fatalf("OnResponse = %v", got)
	}
}

// TestServer goes through a real net/http server: routing, chunked uploads,
// cancellation by a client that goes away.
func TestServer(t *testing.T) {
	checkLeaks(t)
	started := make(chan struct{}, 1)
	pub := &fakePublisher{fn: func(ctx context.Context, m *publisher.Message) error {
		if m.RoutingKey != "block" {
			return nil
		}
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}}
	codes := make(chan int, 16)
	h := testHandler(pub, nil, func(c *Config) { c.OnResponse = func(code int) { codes <- code } })
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return errors.New("redirected") }
	defer client.CloseIdleConnections()

	do := func(ctx context.Context, path string, body io.Reader) (*http.Response, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := client.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}

	for _, tc := range []struct {
		path string
		body io.Reader
		want int
	}{
		{"/v1/publish/ex/a/b%2Fc", strings.NewReader("ok"), 200},
		{"/v1/publish/ex", nil, 200},
		{"/v1/publish//rk", nil, 400},
		{"/v1/publish/ex/./rk", nil, 400},
		{"/v1/publish/ex/rk", struct{ io.Reader }{strings.NewReader(strings.Repeat("x", 64<<10))}, 413},
		{"/v1/publish/ex/rk", struct{ io.Reader }{strings.NewReader("small")}, 200},
	} {
		resp, body, err := do(context.Background(), tc.path, tc.body)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.path, resp.StatusCode, tc.want, body)
		}
		if got := <-codes; got != tc.want {
			t.Errorf("%s: OnResponse %d", tc.path, got)
		}
	}
	calls := pub.received()
	if calls[0].RoutingKey != "a/b/c" || calls[0].Exchange != "ex" || string(calls[0].Body) != "ok" {
		t.Errorf("first message: %+v", calls[0])
	}

	// A client that goes away while Publish waits for the confirm.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := do(ctx, "/v1/publish/ex/block", nil)
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; err == nil {
		t.Error("cancelled request succeeded")
	}
	if got := <-codes; got != StatusClientClosedRequest {
		t.Errorf("OnResponse %d, want %d", got, StatusClientClosedRequest)
	}
}

func TestNewHandlerNeedsPublisher(t *testing.T) {
	checkLeaks(t)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	NewHandler(Config{})
}

func TestRetryAfterSeconds(t *testing.T) {
	checkLeaks(t)
	for d, want := range map[time.Duration]string{
		0: "1", -time.Second: "1", time.Nanosecond: "1", time.Second: "1",
		time.Second + 1: "2", 30 * time.Second: "30", 90500 * time.Millisecond: "91",
	} {
		if got := retryAfterSeconds(d); got != want {
			t.Errorf("retryAfterSeconds(%v) = %q, want %q", d, got, want)
		}
	}
}

// discardWriter is a ResponseWriter that keeps only the status, for the
// benchmark.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }

// benchPublish is the handler the handler benchmarks serve (a Sender that
// confirms at once) and one prepared single publish; serve answers it
// again, failing b unless with 200.
func benchPublish(b *testing.B) (req *http.Request, serve func()) {
	h := NewHandler(Config{
		Sender:           &nopPublisher{},
		AuthToken:        testToken,
		AllowedExchanges: []string{"orders"},
		Logger:           discardLogger(),
		OnResponse:       func(int) {},
	})
	payload := []byte(`{"order":42,"items":["a","b"]}`)
	body := bytes.NewReader(payload)
	req = httptest.NewRequest(http.MethodPost, "/v1/publish/orders/order.created", io.NopCloser(body))
	req.ContentLength = int64(len(payload))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	w := &discardWriter{h: make(http.Header)}
	return req, func() {
		body.Reset(payload)
		clear(w.h)
		h.ServeHTTP(w, req)
		if w.code != 200 {
			b.Fatalf("status %d", w.code)
		}
	}
}

func BenchmarkHandler(b *testing.B) {
	req, serve := benchPublish(b)
	req.Header.Set("X-Message-Id", "0123456789abcdefghijklmnop")
	b.ReportAllocs()
	for b.Loop() {
		serve()
	}
}

type nopPublisher struct{}

func (*nopPublisher) Send(_ context.Context, msgs []*publisher.Message, _ relay.SendOptions,
	done func(int, relay.Delivery, error)) func(int, error) (relay.Delivery, error) {
	for i := range msgs {
		done(i, relay.Confirmed, nil)
	}
	return func(int, error) (relay.Delivery, error) { return relay.Confirmed, nil }
}

// TestLogsNoSecrets logs every kind of failure at debug level and checks that
// neither the token nor a body reaches the log.
func TestLogsNoSecrets(t *testing.T) {
	checkLeaks(t)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	const body = "body-secret-payload"
	for _, err := range []error{errors.New("boom"), publisher.ErrNacked, context.Canceled, nil} {
		accepting := error(nil)
		if err == nil {
			accepting = errors.New("gave up")
		}
		h := testHandler(&fakePublisher{err: err}, nil, func(c *Config) {
			c.Logger = logger
			c.MaxBodyBytes = 0
			c.Accepting = func() error { return accepting }
		})
		for _, auth := range []string{"Bearer " + testToken, "Bearer wrong-" + testToken} {
			req := httptest.NewRequest(http.MethodPost, "/v1/publish/ex/rk", strings.NewReader(body))
			req.Header.Set("Authorization", auth)
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
	}
	if logs.Len() == 0 {
		t.Fatal("nothing logged")
	}
	if s := logs.String(); strings.Contains(s, testToken) || strings.Contains(s, body) {
		t.Fatalf("secret in the logs:\n%s", s)
	}
}

// TestSplitPublishPath pins the routing the handler does without ServeMux:
// what the patterns /v1/publish/{exchange} and
// /v1/publish/{exchange}/{routing_key...} would match, decoded.
func TestSplitPublishPath(t *testing.T) {
	checkLeaks(t)
	for _, c := range []struct {
		path, exchange, key string
		ok, bad             bool
	}{
		{path: "/v1/publish/ex/rk", exchange: "ex", key: "rk", ok: true},
		{path: "/v1/publish/ex", exchange: "ex", ok: true},
		{path: "/v1/publish/ex/", exchange: "ex", ok: true},
		{path: "/v1/publish/ex/a/b/c", exchange: "ex", key: "a/b/c", ok: true},
		{path: "/v1/publish/a%2Fb/c%2Fd%20e", exchange: "a/b", key: "c/d e", ok: true},
		{path: "/v1/publish/amq.default/q", exchange: "amq.default", key: "q", ok: true},
		{path: "/v1/publish/"},
		{path: "/v1/publish"},
		{path: "/v1/publishers/ex/rk"},
		{path: "/"},
		{path: "/v1/publish/e%zz/rk", ok: true, bad: true},
		{path: "/v1/publish/ex/r%2", ok: true, bad: true},
	} {
		ex, key, ok, err := splitPublishPath(c.path)
		bad := err != nil
		if ok != c.ok || bad != c.bad || (ok && !bad && (ex != c.exchange || key != c.key)) {
			t.Errorf("splitPublishPath(%q) = %q, %q, ok %v, bad %v; want %q, %q, ok %v, bad %v",
				c.path, ex, key, ok, bad, c.exchange, c.key, c.ok, c.bad)
		}
	}
}

// "Prefer: respond-async" reaches the Publisher; the answer says
// Preference-Applied only when it was applied (a 202 spooled answer, RFC 7240),
// never when the message was confirmed (no spool: the preference is ignored).
func TestPreferRespondAsync(t *testing.T) {
	checkLeaks(t)
	for _, tt := range []struct {
		name        string
		spool       bool
		prefer      string
		wantCode    int
		wantApplied bool
	}{
		{"no spool ignores it", false, "respond-async", 200, false},
		{"spool applies it", true, "respond-async", 202, true},
		{"spool, among other preferences", true, "return=minimal, respond-async; wait=5", 202, true},
		{"spool without the preference", true, "", 202, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{spool: tt.spool}
			h := testHandler(pub, nil, nil)
			req := httptest.NewRequest(http.MethodPost, "/v1/publish/amq.default/q", strings.NewReader("x"))
			req.Header.Set("Authorization", "Bearer "+testToken)
			if tt.prefer != "" {
				req.Header.Set("Prefer", tt.prefer)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", rec.Code, tt.wantCode, rec.Body)
			}
			if got := rec.Header().Get("Preference-Applied") == "respond-async"; got != tt.wantApplied {
				t.Fatalf("Preference-Applied %q, want applied=%v", rec.Header().Get("Preference-Applied"), tt.wantApplied)
			}
			if got := pub.async[0]; got != (tt.prefer != "") {
				t.Fatalf("Publish got async=%v for Prefer %q", got, tt.prefer)
			}
		})
	}
}

// An X-Message-Id that is not valid UTF-8 is refused: the JSON answer could
// only echo it changed, so the caller could not deduplicate by it.
func TestInvalidUTF8MessageIDRefused(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	h := testHandler(pub, nil, nil)
	req := httptest.NewRequest(http.MethodPost, "/v1/publish/amq.default/q", strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("X-Message-Id", "e-\xff\xfe")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "UTF-8") {
		t.Fatalf("code %d %s, want 400 naming UTF-8", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "message_id") {
		t.Fatalf("the answer echoes an id it cannot represent: %s", rec.Body)
	}
	if len(pub.received()) != 0 {
		t.Fatal("published a message with an invalid id")
	}
}

// Every publisher.Kind but Confirmed has its HTTP answer.
func TestEveryKindHasAnAnswer(t *testing.T) {
	checkLeaks(t)
	for k := publisher.NotSent; k <= publisher.Unknown; k++ {
		if _, ok := statuses[k]; !ok {
			t.Errorf("no HTTP answer for Kind %v (%d)", k, k)
		}
	}
	if p := answerFor(publisher.ErrBufferFull); p.code != http.StatusServiceUnavailable || p.text != "service unavailable: buffer full" || !p.retry {
		t.Errorf("buffer full: %+v", p)
	}
}
