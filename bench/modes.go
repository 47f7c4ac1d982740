package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	modeService   = "service"
	modeRaw       = "raw"
	modePipelined = "pipelined"
	modeBest      = "best"
	modeMgmt      = "mgmt"
	modeSpooled   = "spooled"
	modeBatch     = "batch"
	modeStream    = "stream"
	modeTraced    = "traced"
	// modeServiceKeyed and modeBatchKeyed are (a) and (f) with idempotency
	// keys (keyed.go).
	modeServiceKeyed = "service-keyed"
	modeBatchKeyed   = "batch-keyed"
)

var allModes = []string{modeService, modeRaw, modePipelined, modeBest, modeMgmt, modeSpooled, modeBatch, modeStream, modeTraced, modeServiceKeyed, modeBatchKeyed}

var modeLabels = map[string]string{
	modeService:      "(a) service HTTP",
	modeRaw:          "(b) raw amqp091",
	modePipelined:    "(c) raw pipelined",
	modeBest:         "(c′) raw pipelined, best",
	modeMgmt:         "(d) mgmt API",
	modeSpooled:      "(e) service spooled",
	modeBatch:        "(f) service batch",
	modeStream:       "(g) service stream",
	modeTraced:       "(h) service HTTP, traced",
	modeServiceKeyed: "(i) service HTTP, keyed",
	modeBatchKeyed:   "(j) service batch, keyed",
}

// modeCounts says what each mode's msgs/s counts.
var modeCounts = map[string]string{
	modeService:      "200 confirmed",
	modeRaw:          "broker confirms",
	modePipelined:    "broker confirms",
	modeBest:         "broker confirms",
	modeMgmt:         "200 routed:true",
	modeSpooled:      "202 spooled (durable on the service's disk, not yet confirmed by the broker)",
	modeBatch:        "results with status 200 (confirmed) in /v1/batch answers",
	modeStream:       "result lines with status 200 (confirmed) on /v1/stream",
	modeTraced:       "200 confirmed, with OpenTelemetry spans exported over OTLP/HTTP to pubbench's own sink",
	modeServiceKeyed: "200 confirmed, each request with a new Idempotency-Key",
	modeBatchKeyed:   "results with status 200 (confirmed) in /v1/batch answers, each message with a new idempotency_key",
}

// latencyOf says what one latency sample of mode measures.
func (b *bench) latencyOf(mode string) string {
	switch mode {
	case modeRaw, modePipelined, modeBest:
		return "message, publish to confirm"
	case modeBatch, modeBatchKeyed:
		return fmt.Sprintf("request of %d messages, sent to answer read", b.cfg.batchSize)
	case modeStream:
		return "message, its line written to its result line read"
	}
	return "request, sent to answer read"
}

// isServiceMode reports whether mode loads a service child (whose CPU is
// then measured).
func isServiceMode(mode string) bool {
	switch mode {
	case modeService, modeSpooled, modeBatch, modeStream, modeTraced, modeServiceKeyed, modeBatchKeyed:
		return true
	}
	return false
}

// opTimeout bounds one publish (request, or publish plus confirm).
const opTimeout = 30 * time.Second

// publishing is the AMQP message every raw mode sends.
func (b *bench) publishing() amqp.Publishing {
	p := amqp.Publishing{ContentType: "application/octet-stream", Body: b.body}
	if b.cfg.persistent {
		p.DeliveryMode = amqp.Persistent
	}
	return p
}

// publishConfirmed publishes on a confirm channel and waits for the confirm.
func publishConfirmed(ctx context.Context, ch *amqp.Channel, queue string, msg amqp.Publishing) error {
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, msg)
	if err != nil {
		return err
	}
	ack, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ack {
		return errors.New("nacked")
	}
	return nil
}

// runRaw is mode (b): c goroutines on one connection, each with its own
// confirm channel, publishing and waiting for its own confirm.
func (b *bench) runRaw(ctx context.Context, w window) (merged, error) {
	conn, err := amqp.Dial(b.cfg.amqpURL)
	if err != nil {
		return merged{}, fmt.Errorf("raw: dial: %w", err)
	}
	defer conn.Close()
	chans := make([]*amqp.Channel, b.cfg.c)
	for i := range chans {
		if chans[i], err = conn.Channel(); err != nil {
			return merged{}, fmt.Errorf("raw: channel: %w", err)
		}
		if err = chans[i].Confirm(false); err != nil {
			return merged{}, fmt.Errorf("raw: confirm mode: %w", err)
		}
	}
	msg := b.publishing()
	return runClosedLoop(ctx, w, b.cfg.c, opTimeout, func(ctx context.Context, i int) error {
		return publishConfirmed(ctx, chans[i], b.cfg.queue, msg)
	}), nil
}

// runPipelined is mode (c): pipeChannels channels, each keeping up to
// pipeWindow unconfirmed messages in flight; a collector per channel waits for
// the confirms in publish order.
func (b *bench) runPipelined(ctx context.Context, w window) (merged, error) {
	return b.runPipelinedWith(ctx, w, pipeSetting{channels: b.cfg.pipeChannels, window: b.cfg.pipeWindow})
}

// runPipelinedWith runs the pipelined client with set's channels and window
// (mode (c), mode (c′) and the search for (c′)'s setting).
func (b *bench) runPipelinedWith(ctx context.Context, w window, set pipeSetting) (merged, error) {
	conn, err := amqp.Dial(b.cfg.amqpURL)
	if err != nil {
		return merged{}, fmt.Errorf("pipelined: dial: %w", err)
	}
	defer conn.Close()
	type pending struct {
		dc    *amqp.DeferredConfirmation
		begin time.Time
	}
	n := set.channels
	rs := make([]*recorder, n)
	var wg sync.WaitGroup
	msg := b.publishing()
	for i := range n {
		ch, err := conn.Channel()
		if err != nil {
			return merged{}, fmt.Errorf("pipelined: channel: %w", err)
		}
		if err := ch.Confirm(false); err != nil {
			return merged{}, fmt.Errorf("pipelined: confirm mode: %w", err)
		}
		rec := newRecorder(w)
		rs[i] = rec
		queue := make(chan pending, set.window) // its capacity is the window
		wg.Add(2)
		go func() { // publisher
			defer wg.Done()
			defer close(queue)
			for ctx.Err() == nil && time.Now().Before(w.measureEnd) {
				begin := time.Now()
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", b.cfg.queue, true, false, msg)
				if err != nil {
					// the collector owns rec; hand the failure over in order
					select {
					case queue <- pending{begin: begin}:
					case <-ctx.Done():
					}
					time.Sleep(20 * time.Millisecond)
					continue
				}
				select {
				case queue <- pending{dc: dc, begin: begin}:
				case <-ctx.Done():
				}
			}
		}()
		go func() { // collector
			defer wg.Done()
			for p := range queue {
				if p.dc == nil {
					rec.record(p.begin, time.Now(), errors.New("publish failed"))
					continue
				}
				wctx, cancel := context.WithTimeout(ctx, opTimeout)
				ack, err := p.dc.WaitContext(wctx)
				cancel()
				if err == nil && !ack {
					err = errors.New("nacked")
				}
				rec.record(p.begin, time.Now(), err)
			}
		}()
	}
	wg.Wait()
	return merge(rs), nil
}

// newHTTPClient returns a keep-alive client for conc concurrent requests to
// one loopback host.
func newHTTPClient(conc int, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil, // loopback only, never through a proxy
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conc + 16,
			MaxIdleConnsPerHost: conc + 16,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		},
	}
}

// doPost posts body and returns an error unless the answer is 200 and its
// body contains want.
func doPost(ctx context.Context, client *http.Client, u string, header http.Header, body []byte, want []byte) error {
	return doPostStatus(ctx, client, u, header, body, http.StatusOK, want)
}

// doPostStatus posts body and returns an error unless the answer has status
// code and its body contains want.
func doPostStatus(ctx context.Context, client *http.Client, u string, header http.Header, body []byte, code int, want []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = header.Clone()
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	if err != nil {
		return err
	}
	return checkAnswer(resp.StatusCode, got, code, want)
}

// checkAnswer returns an error unless status is code and body contains want.
func checkAnswer(status int, body []byte, code int, want []byte) error {
	if status != code {
		return fmt.Errorf("HTTP %d: %s", status, bytes.TrimSpace(body))
	}
	if !bytes.Contains(body, want) {
		return fmt.Errorf("HTTP %d without %s: %s", status, want, bytes.TrimSpace(body))
	}
	return nil
}

// serviceRequest returns the URL and headers of a publish to the service.
func (b *bench) serviceRequest() (string, http.Header) {
	return b.publishRequest(b.svc)
}

// publishRequest returns the URL and headers of a publish to svc.
func (b *bench) publishRequest(svc *service) (string, http.Header) {
	u := "http://" + svc.proc.APIAddr() + "/v1/publish/amq.default/" + url.PathEscape(b.cfg.queue)
	h := http.Header{"Content-Type": {"application/octet-stream"}}
	if !b.cfg.persistent {
		h.Set("X-Persistent", "false")
	}
	return u, h
}

// runService is mode (a), and (h) with svc the traced service: c concurrent
// HTTP clients posting to svc.
func (b *bench) runService(ctx context.Context, w window, svc *service) (merged, error) {
	u, h := b.publishRequest(svc)
	op, done, err := b.poster(u, h, b.body, http.StatusOK, []byte(`"confirmed"`))
	if err != nil {
		return merged{}, err
	}
	defer done()
	return runClosedLoop(ctx, w, b.cfg.c, opTimeout, op), nil
}

// poster returns the operation of one worker of an HTTP mode: post body to u
// and fail unless the answer has status code and contains want. With
// -http-client lean every worker has a leanConn of its own; with net/http
// they share one keep-alive client. done releases the connections.
func (b *bench) poster(u string, h http.Header, body []byte, code int, want []byte) (op func(context.Context, int) error, done func(), err error) {
	if b.cfg.httpClient == "net/http" {
		client := newHTTPClient(b.cfg.c, opTimeout)
		return func(ctx context.Context, _ int) error {
			return doPostStatus(ctx, client, u, h, body, code, want)
		}, client.CloseIdleConnections, nil
	}
	conns := make([]*leanConn, b.cfg.c)
	for i := range conns {
		if conns[i], err = newLeanConn(u, h, body); err != nil {
			return nil, nil, err
		}
	}
	op = func(ctx context.Context, i int) error {
		status, resp, err := conns[i].do(ctx)
		if err != nil {
			return err
		}
		return checkAnswer(status, resp, code, want)
	}
	done = func() {
		for _, c := range conns {
			c.close()
		}
	}
	return op, done, nil
}

// runMgmt is mode (d): c concurrent clients of the management API's publish
// endpoint; a message counts when the answer says routed:true.
func (b *bench) runMgmt(ctx context.Context, w window) (merged, error) {
	base, err := url.Parse(b.cfg.mgmtURL)
	if err != nil {
		return merged{}, fmt.Errorf("mgmt: %w", err)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if base.User != nil {
		pw, _ := base.User.Password()
		req := &http.Request{Header: http.Header{}}
		req.SetBasicAuth(base.User.Username(), pw)
		h.Set("Authorization", req.Header.Get("Authorization"))
	}
	base.User = nil
	u := strings.TrimSuffix(base.String(), "/") + "/api/exchanges/%2F/amq.default/publish"
	props := map[string]any{"content_type": "application/octet-stream"}
	if b.cfg.persistent {
		props["delivery_mode"] = 2
	}
	payload, err := json.Marshal(map[string]any{
		"properties":       props,
		"routing_key":      b.cfg.queue,
		"payload":          string(b.body),
		"payload_encoding": "string",
	})
	if err != nil {
		return merged{}, err
	}
	op, done, err := b.poster(u, h, payload, http.StatusOK, []byte(`"routed":true`))
	if err != nil {
		return merged{}, err
	}
	defer done()
	return runClosedLoop(ctx, w, b.cfg.c, opTimeout, op), nil
}
