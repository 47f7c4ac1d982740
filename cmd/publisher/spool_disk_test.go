package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/internal/tmpfs"
)

// A spool on a 16 MiB volume (a sidecar's emptyDir with a sizeLimit) with the
// default PUBLISHER_SPOOL_MAX_BYTES of 1 GiB: ready at start, it takes
// messages (synchronous and respond-async), and every one reaches the queue.
func TestSpoolOnASmallVolume(t *testing.T) {
	t.Parallel()
	dir := tmpfs.Mount(t, 16<<20)
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-spool-small")
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL, "PUBLISHER_SPOOL_DIR": dir})
	p.waitReady()
	if code, body := p.mustGet("/readyz"); code != 200 || !strings.Contains(body, `"spool_accepting":true`) {
		t.Fatalf("/readyz %d %s", code, body)
	}
	if seg := p.metric("publisher_spool_segment_bytes"); seg <= 0 || seg > 4<<20 {
		t.Fatalf("segment size %v on a 16 MiB volume", seg)
	}
	var acked []string
	for i := range 300 {
		h := async
		if i%3 == 0 {
			h = nil
		}
		r, err := p.publish("amq.default", q, make([]byte, 1024), h)
		if err != nil || (r.code != 200 && r.code != 202) {
			t.Fatalf("publish %d: %+v %v", i, r, err)
		}
		acked = append(acked, r.id)
	}
	poll.Within(t, waitLimit, "spool drained", func() bool { return p.metric("publisher_spool_messages") == 0 })
	brokertest.CheckDelivered(t, amqpURL, q, acked, 0)
}

// The volume fills while the broker is away: 202 until it is full, then 503
// with Retry-After (nothing taken is dropped), /readyz not ready, and a storm
// of refusals logs a bounded number of lines. When the broker returns the
// spool drains, reclaims its segments and accepts again within seconds by
// itself; every message answered 202 reaches the queue, and the process
// never exits (with a spool, giving up on the broker never stops it).
func TestSpoolFullDiskRecovers(t *testing.T) {
	t.Parallel()
	dir := tmpfs.Mount(t, 24<<20)
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-spool-fulldisk")
	proxy := faultproxy.ForURL(t, amqpURL)
	proxy.SetRefuse(true)
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":         proxy.AMQPURL(),
		"PUBLISHER_SPOOL_DIR":         dir,
		"PUBLISHER_LOG_LEVEL":         "info",
		"PUBLISHER_MAX_RESTARTS":      "2",
		"PUBLISHER_ROOT_MAX_RESTARTS": "1",
		"PUBLISHER_BACKOFF_MIN":       "10ms",
		"PUBLISHER_BACKOFF_MAX":       "500ms",
	})
	poll.Within(t, waitLimit, "ready with the broker away", func() bool { return p.answers("/readyz", 200) })

	// Fill the volume with 8 concurrent clients.
	var mu sync.Mutex
	var acked []string
	full := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	body := make([]byte, 4096)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-full:
					return
				default:
				}
				r, err := p.publish("amq.default", q, body, map[string]string{"Prefer": "respond-async", "X-Message-Id": fmt.Sprintf("fill-%d-%d", w, i)})
				switch {
				case err != nil:
					t.Errorf("publish: %v", err)
					return
				case r.code == 202:
					mu.Lock()
					acked = append(acked, r.id)
					mu.Unlock()
				case r.code == 503 && r.retryAfter != "":
					once.Do(func() { close(full) })
					return
				default:
					t.Errorf("while filling: %+v, want 202 or 503 with Retry-After", r)
					return
				}
			}
		}()
	}
	select {
	case <-full:
	case <-time.After(3 * time.Minute):
		t.Fatal("the volume never filled")
	}
	wg.Wait()
	t.Logf("%d messages spooled before the volume was full", len(acked))
	if code, body := p.mustGet("/readyz"); code != 503 || !strings.Contains(body, `"spool_accepting":false`) {
		t.Fatalf("/readyz %d %s with a full volume, want 503 spool_accepting false", code, body)
	}
	if code, _ := p.mustGet("/healthz"); code != 200 {
		t.Fatalf("/healthz %d: a spool full of its own messages is alive", code)
	}

	// A storm of refusals: answered 503, a bounded log (the supervision
	// tree's own lines about the broker it keeps retrying are not counted).
	logLines := func() int {
		n := 0
		for _, l := range strings.Split(p.Logs(), "\n") {
			if l != "" && !strings.Contains(l, `"supervisor":`) {
				n++
			}
		}
		return n
	}
	linesBefore := logLines()
	for i := range 1000 {
		r, err := p.publish("amq.default", q, body, async)
		if err != nil || r.code != 503 {
			t.Fatalf("refusal %d: %+v %v, want 503", i, r, err)
		}
	}
	n := logLines() - linesBefore
	if n > 10 {
		t.Errorf("1000 refusals logged %d lines, want a bounded few", n)
	}
	t.Logf("1000 refusals logged %d lines", n)

	// The broker returns: drained, reclaimed, accepting again by itself.
	proxy.SetRefuse(false)
	poll.Within(t, waitLimit, "spool drained", func() bool { return p.metric("publisher_spool_messages") == 0 })
	back := time.Now()
	poll.Within(t, waitLimit, "accepting again", func() bool { return p.answers("/readyz", 200) })
	t.Logf("accepting again %v after the drain", time.Since(back).Round(time.Millisecond))
	r, err := p.publish("amq.default", q, body, async)
	if err != nil || r.code != 202 {
		t.Fatalf("publish after recovery: %+v %v", r, err)
	}
	acked = append(acked, r.id)
	poll.Within(t, waitLimit, "spool drained again", func() bool { return p.metric("publisher_spool_messages") == 0 })
	if !p.Running() {
		t.Fatal("the service exited")
	}
	var used int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		used += fi.Size()
		if strings.HasSuffix(e.Name(), ".salvage") {
			t.Errorf("leftover %s", filepath.Join(dir, e.Name()))
		}
	}
	if seg := int64(p.metric("publisher_spool_segment_bytes")); used > 3*seg {
		t.Errorf("%d bytes left in the spool directory after the drain (segments of %d): %v", used, seg, entries)
	}
	brokertest.CheckDelivered(t, amqpURL, q, acked, 0)
}
