package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// measureMemory reads the service's RSS while it holds cfg.memoryMessages
// messages: a broker memory alarm blocks publishing, the messages are posted by
// as many concurrent requests, and RSS is read once the service's
// buffered+inflight gauges reach (nearly) that count. The alarm is then
// cleared and the requests drain. Everything is bounded in time.
func (b *bench) measureMemory(ctx context.Context) *memResult {
	n := b.cfg.memoryMessages
	res := &memResult{Messages: n}
	switch {
	case n == 0:
		res.Skipped = "-memory-messages is 0"
		return res
	case b.svc == nil:
		res.Skipped = "mode service was not run"
		return res
	case b.cfg.node == "":
		res.Skipped = "no -rabbitmqctl-node to raise a memory alarm with"
		return res
	case ctx.Err() != nil:
		res.Skipped = "interrupted"
		return res
	}
	metricsClient := newMetricsClient()
	defer metricsClient.CloseIdleConnections()
	var err error
	if res.RSSIdleBytes, err = procRSS(b.svc.pid()); err != nil {
		res.Skipped = "reading RSS: " + err.Error()
		return res
	}
	logf("memory: raising a memory alarm on %s", b.cfg.node)
	if err := b.rabbitmqctl("set_vm_memory_high_watermark", "0.000001"); err != nil {
		res.Skipped = err.Error()
		return res
	}
	alarmOn := true
	clearAlarm := func() {
		if alarmOn {
			logf("memory: clearing the memory alarm")
			if err := b.rabbitmqctl("set_vm_memory_high_watermark", "0.4"); err != nil {
				b.note("clearing the memory alarm failed: %v", err)
			}
			alarmOn = false
		}
	}
	defer clearAlarm()

	// wait (bounded) until the service has seen connection.blocked
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		if m, err := b.svc.scrape(metricsClient); err == nil && m.Value("publisher_connection_blocked") >= 1 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// fire n requests, each on its own connection; dials are bounded
	dialSem := make(chan struct{}, b.cfg.memoryConc)
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	reqTimeout := b.cfg.serviceConfirmTimeout
	client := &http.Client{
		Timeout: reqTimeout,
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
	defer client.CloseIdleConnections()
	u, h := b.serviceRequest()
	want := []byte(`"confirmed"`)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
		sample string
	)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	logf("memory: posting %d messages while the broker blocks publishing", n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := doPost(rctx, client, u, h, b.body, want); err != nil {
				mu.Lock()
				failed++
				sample = err.Error()
				mu.Unlock()
			}
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()

	// poll until the service holds (nearly) n messages, or 30 s
	target := float64(n) * 0.99
	stableSince, lastHeld := time.Now(), -1.0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(200 * time.Millisecond)
		m, err := b.svc.scrape(metricsClient)
		if err != nil {
			continue
		}
		held := m.Value("publisher_buffered_messages") + m.Value("publisher_inflight_messages")
		rss, err := procRSS(b.svc.pid())
		if err != nil {
			break
		}
		res.RSSPeakBytes = max(res.RSSPeakBytes, rss)
		if held >= res.Held {
			res.Held, res.RSSHeldBytes = held, rss
			res.HeapInuseBytes, res.Goroutines = m.Value("go_memstats_heap_inuse_bytes"), m.Value("go_goroutines")
		}
		if held != lastHeld {
			lastHeld, stableSince = held, time.Now()
		}
		if held >= target {
			break
		}
		// requests failing fast (503: buffer full) never reach the target
		if time.Since(stableSince) > 5*time.Second && held > 0 {
			break
		}
		select {
		case <-allDone:
			deadline = time.Now() // everything already answered: nothing is held
		default:
		}
	}
	logf("memory: RSS %s with %.0f messages held", fmtBytes(res.RSSHeldBytes), res.Held)
	if res.Held < target {
		b.note("memory: the service held %.0f messages, not %d (see the failures)", res.Held, n)
	}
	clearAlarm()
	start := time.Now()
	select {
	case <-allDone:
	case <-time.After(reqTimeout + 10*time.Second):
		cancel()
		<-allDone
	}
	res.DrainSeconds = time.Since(start).Seconds()
	res.Failed = failed
	res.Confirmed = n - failed
	res.FailedSample = sample
	return res
}
