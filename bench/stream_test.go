package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// ndjsonServer answers /v1/stream as the service does, full duplex over
// HTTP/1.1, but holds its results until hold lines are unanswered (a client
// that kept fewer in flight would stall), then answers them newest first
// (the client must match results by index). Line i is answered 503 when
// i%7 == 3, else 200. lines counts the lines read.
func ndjsonServer(t *testing.T, hold int, lines *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != ndjson {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":"service unavailable: shutting down"}`)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			t.Error(err)
			return
		}
		w.Header().Set("Content-Type", ndjson)
		w.WriteHeader(http.StatusOK)
		_ = rc.Flush()
		var pending []int
		answer := func() {
			for k := len(pending) - 1; k >= 0; k-- {
				i := pending[k]
				if i%7 == 3 {
					fmt.Fprintf(w, `{"index":%d,"message_id":"m%d","status":503,"error":"service unavailable: buffer full"}`+"\n", i, i)
				} else {
					fmt.Fprintf(w, `{"index":%d,"message_id":"m%d","status":200,"outcome":"confirmed"}`+"\n", i, i)
				}
			}
			pending = pending[:0]
			_ = rc.Flush()
		}
		sc := bufio.NewScanner(r.Body)
		index := 0
		for sc.Scan() {
			var e struct{ Exchange, RoutingKey, Body *string }
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Exchange == nil || *e.Exchange != "amq.default" {
				t.Errorf("line %d: %q (%v)", index, sc.Bytes(), err)
			}
			lines.Add(1)
			pending = append(pending, index)
			index++
			if len(pending) == hold {
				answer()
			}
		}
		answer()
	})
}

// TestRunOneStream runs mode stream's client against ndjsonServer: every
// line written gets its result, out of order; 200s are counted as confirmed,
// the rest as failed, and the stream ends cleanly after the window.
func TestRunOneStream(t *testing.T) {
	var lines atomic.Int64
	const window = 50
	srv := httptest.NewServer(ndjsonServer(t, window, &lines))
	defer srv.Close()
	b := &bench{cfg: &config{queue: "q", persistent: true}, body: makeBody(256)}
	obj, err := b.messageObject()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := newWindow(0, 300*time.Millisecond)
	rec := newRecorder(w)
	if err := runOneStream(ctx, w, srv.URL+"/v1/stream", http.Header{"Content-Type": {ndjson}}, append(obj, '\n'), window, rec); err != nil {
		t.Fatalf("runOneStream: %v (last error %q)", err, rec.lastError)
	}
	n := lines.Load()
	var wantErrs int64
	for i := range n {
		if i%7 == 3 {
			wantErrs++
		}
	}
	if n < 2*window || rec.okTotal+rec.errs != n || rec.errs != wantErrs {
		t.Errorf("%d lines: %d confirmed, %d failed; want %d failed and at least %d lines", n, rec.okTotal, rec.errs, wantErrs, 2*window)
	}
	if rec.measured != len(rec.lat) || rec.measured == 0 || int64(rec.measured) > rec.okTotal {
		t.Errorf("measured %d, %d samples, %d confirmed", rec.measured, len(rec.lat), rec.okTotal)
	}
	if !strings.Contains(rec.lastError, "status 503: service unavailable: buffer full") {
		t.Errorf("last error %q", rec.lastError)
	}
}

// TestRunOneStreamRefused: a stream the service refuses counts as one
// failure, with the service's answer.
func TestRunOneStreamRefused(t *testing.T) {
	var lines atomic.Int64
	srv := httptest.NewServer(ndjsonServer(t, 1, &lines))
	defer srv.Close()
	w := newWindow(0, time.Second)
	rec := newRecorder(w)
	err := runOneStream(context.Background(), w, srv.URL+"/v1/stream", http.Header{"Content-Type": {"text/plain"}}, []byte("{}\n"), 8, rec)
	if err == nil || !strings.Contains(err.Error(), "HTTP 503") || rec.errs != 1 || rec.okTotal != 0 {
		t.Errorf("err %v, %d failed, %d confirmed; want HTTP 503, 1, 0", err, rec.errs, rec.okTotal)
	}
}

// TestStreamFlow checks the window: take hands out at most the free lines,
// settle gives one back, and only for a line that waits for its result.
func TestStreamFlow(t *testing.T) {
	f := newStreamFlow(5)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if n := f.take(3, t0); n != 3 {
		t.Fatalf("take(3) = %d, want 3", n)
	}
	if n := f.take(3, t0.Add(time.Second)); n != 2 {
		t.Fatalf("take(3) with 2 free = %d, want 2", n)
	}
	if n := f.take(3, t0); n != 0 {
		t.Fatalf("take with a full window = %d, want 0", n)
	}
	if at, ok := f.settle(4); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Errorf("settle(4) = %v, %v; want the second take's time", at, ok)
	}
	if _, ok := f.settle(4); ok {
		t.Error("line 4 settled twice")
	}
	if _, ok := f.settle(99); ok {
		t.Error("line 99, never written, settled")
	}
	if n := f.unanswered(); n != 4 {
		t.Errorf("unanswered = %d, want 4", n)
	}
	if n := f.take(3, t0); n != 1 {
		t.Errorf("take after one settled = %d, want 1", n)
	}
	if _, ok := f.settle(5); !ok {
		t.Error("line 5 (the next index) not waiting")
	}
}
