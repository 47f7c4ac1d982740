package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/publisher-dev/publisher/internal/promtext"
)

// heldFraction of -memory-messages is what the service must hold for the
// measurement to count as complete.
const heldFraction = 0.99

// measureMemory reads the service's RSS while it holds cfg.memoryMessages
// messages: a broker memory alarm blocks publishing, the messages are posted by
// as many concurrent requests, and RSS is read once the service's
// buffered+inflight gauges reach (nearly) that count. The alarm is then
// cleared and the requests drain. Everything is bounded in time.
func (b *bench) measureMemory(ctx context.Context) *memResult {
	n := b.cfg.memoryMessages
	res := &memResult{Messages: n}
	if res.Skipped = b.memorySkipReason(ctx); res.Skipped != "" {
		return res
	}
	var err error
	if res.RSSIdleBytes, err = procRSS(b.svc.pid()); err != nil {
		res.Skipped = "reading RSS: " + err.Error()
		return res
	}
	clearAlarm, err := b.raiseMemoryAlarm()
	if err != nil {
		res.Skipped = err.Error()
		return res
	}
	defer clearAlarm()
	b.waitBlocked(ctx)
	reqs := b.postHeld(ctx, n)
	defer reqs.cancel()
	b.watchHeld(ctx, res, reqs.done)
	logf("memory: RSS %s with %.0f messages held", fmtBytes(res.RSSHeldBytes), res.Held)
	if res.Held < float64(n)*heldFraction {
		b.note("memory: the service held %.0f messages, not %d (see the failures)", res.Held, n)
	}
	clearAlarm()
	res.DrainSeconds = reqs.drain(b.cfg.serviceConfirmTimeout + 10*time.Second).Seconds()
	res.Failed, res.FailedSample = reqs.failures()
	res.Confirmed = n - res.Failed
	return res
}

// memorySkipReason says why the memory measurement cannot run ("": it can).
func (b *bench) memorySkipReason(ctx context.Context) string {
	switch {
	case b.cfg.memoryMessages == 0:
		return "-memory-messages is 0"
	case b.svc == nil:
		return "mode service was not run"
	case b.cfg.node == "":
		return "no -rabbitmqctl-node to raise a memory alarm with"
	case ctx.Err() != nil:
		return "interrupted"
	}
	return ""
}

// raiseMemoryAlarm sets the broker's memory high watermark so low that its
// alarm blocks publishing. clearAlarm restores the default; it may be called
// more than once and notes a failure.
func (b *bench) raiseMemoryAlarm() (clearAlarm func(), err error) {
	logf("memory: raising a memory alarm on %s", b.cfg.node)
	if err := b.rabbitmqctl("set_vm_memory_high_watermark", "0.000001"); err != nil {
		return nil, err
	}
	alarmOn := true
	return func() {
		if alarmOn {
			logf("memory: clearing the memory alarm")
			if err := b.rabbitmqctl("set_vm_memory_high_watermark", "0.4"); err != nil {
				b.note("clearing the memory alarm failed: %v", err)
			}
			alarmOn = false
		}
	}, nil
}

// waitBlocked waits, at most 10 s, until the service has seen
// connection.blocked.
func (b *bench) waitBlocked(ctx context.Context) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		m, err := b.svc.scrape()
		if err == nil {
			blocked, err := m.Get("publisher_connection_blocked")
			if err != nil {
				b.note("memory: %v", err) // renamed: waiting would not end
				return
			}
			if blocked >= 1 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// heldRequests are the measurement's publish requests, each on a connection
// of its own, which the service holds while the broker blocks publishing.
type heldRequests struct {
	done   chan struct{} // closed once every request has ended
	cancel context.CancelFunc
	mu     sync.Mutex
	failed int
	sample string // the last failure
}

// postHeld starts n publish requests to the service.
func (b *bench) postHeld(ctx context.Context, n int) *heldRequests {
	client := b.memoryClient()
	rctx, cancel := context.WithCancel(ctx)
	reqs := &heldRequests{done: make(chan struct{}), cancel: cancel}
	u, h := b.serviceRequest()
	want := []byte(`"confirmed"`)
	var wg sync.WaitGroup
	logf("memory: posting %d messages while the broker blocks publishing", n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := doPost(rctx, client, u, h, b.body, want); err != nil {
				reqs.fail(err)
			}
		}()
	}
	go func() {
		wg.Wait()
		client.CloseIdleConnections()
		close(reqs.done)
	}()
	return reqs
}

// memoryClient is the client of postHeld: no keep-alive (each request on a
// connection of its own), -memory-dials dials at a time, and requests
// bounded by the service's confirm timeout.
func (b *bench) memoryClient() *http.Client {
	dialSem := make(chan struct{}, b.cfg.memoryConc)
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{
		Timeout: b.cfg.serviceConfirmTimeout,
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				select {
				case dialSem <- struct{}{}:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				defer func() { <-dialSem }()
				return dialer.DialContext(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 1,
			DisableKeepAlives:   true,
			DisableCompression:  true,
		},
	}
}

func (r *heldRequests) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed++
	r.sample = err.Error()
}

// failures returns how many requests failed and the last failure.
func (r *heldRequests) failures() (int, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed, r.sample
}

// drain waits up to limit for every request to end, then cancels the rest
// and waits for them; it returns how long it took.
func (r *heldRequests) drain(limit time.Duration) time.Duration {
	start := time.Now()
	select {
	case <-r.done:
	case <-time.After(limit):
		r.cancel()
		<-r.done
	}
	return time.Since(start)
}

// watchHeld polls, every 200 ms for at most 30 s, how many messages the
// service holds (buffered + inflight) and its RSS, into res. It stops once
// the service holds (nearly) res.Messages, once the count has stayed put
// for 5 s (requests failing fast, 503 when the buffer is full, never reach
// the target), or once every request has ended (nothing is held any more).
func (b *bench) watchHeld(ctx context.Context, res *memResult, allDone <-chan struct{}) {
	target := float64(res.Messages) * heldFraction
	stableSince, lastHeld := time.Now(), -1.0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(200 * time.Millisecond)
		m, err := b.svc.scrape()
		if err != nil {
			continue
		}
		held, err := heldMessages(m)
		if err != nil {
			b.note("memory: %v", err)
			break
		}
		rss, err := procRSS(b.svc.pid())
		if err != nil {
			break
		}
		res.RSSPeakBytes = max(res.RSSPeakBytes, rss)
		if held >= res.Held {
			res.Held, res.RSSHeldBytes = held, rss
			heap, err1 := m.Get("go_memstats_heap_inuse_bytes")
			goroutines, err2 := m.Get("go_goroutines")
			if err := errors.Join(err1, err2); err != nil {
				b.note("memory: %v", err)
				break
			}
			res.HeapInuseBytes, res.Goroutines = heap, goroutines
		}
		if held != lastHeld {
			lastHeld, stableSince = held, time.Now()
		}
		if held >= target || (time.Since(stableSince) > 5*time.Second && held > 0) {
			break
		}
		select {
		case <-allDone:
			deadline = time.Now()
		default:
		}
	}
}

// heldMessages is what the service holds: publisher_buffered_messages plus
// publisher_inflight_messages; an error when either is missing.
func heldMessages(m promtext.Samples) (float64, error) {
	buffered, err := m.Get("publisher_buffered_messages")
	if err != nil {
		return 0, err
	}
	inflight, err := m.Get("publisher_inflight_messages")
	if err != nil {
		return 0, err
	}
	return buffered + inflight, nil
}
