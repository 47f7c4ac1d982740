package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/poll"
)

type entryResult struct {
	Index     int    `json:"index"`
	MessageID string `json:"message_id"`
	Status    int    `json:"status"`
	Outcome   string `json:"outcome"`
	Error     string `json:"error"`
}

// postBatch sends a /v1/batch request and decodes its answer.
func (p *proc) postBatch(body string) (int, []entryResult, error) {
	resp, err := client.Post(p.api+"/v1/batch", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Results []entryResult `json:"results"`
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("reading the answer %d: %w", resp.StatusCode, err)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, out.Results, nil
}

// A batch mixing good messages, an unknown exchange, an unroutable mandatory
// message, a disallowed exchange and a malformed entry gets exactly the
// per-entry results of the single publish, while concurrent single
// publishes see no failure; the good messages and only they are delivered.
func TestBatchAgainstABroker(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-batch")
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":         amqpURL,
		"PUBLISHER_ALLOWED_EXCHANGES": "amq.default,amq.direct,no-such-exchange",
	})
	p.waitReady()
	stop := make(chan struct{})
	res := httpLoad(p, q, 8, nil, stop)
	poll.Within(t, waitLimit, "single publishes running", func() bool { return p.metric("publisher_messages_total", `outcome="confirmed"`) > 50 })
	body := fmt.Sprintf(`{"messages": [
		{"exchange": "amq.default", "routing_key": %[1]q, "message_id": "batch-1", "body": "one"},
		{"exchange": "no-such-exchange", "routing_key": "x", "message_id": "batch-404"},
		{"exchange": "amq.direct", "routing_key": "bound-to-nothing", "message_id": "batch-422"},
		{"exchange": "amq.topic", "routing_key": "x", "message_id": "batch-403"},
		{"exchange": "amq.default", "routing_key": %[1]q, "message_id": "batch-400", "priority": "high"},
		{"exchange": "amq.default", "routing_key": %[1]q, "message_id": "batch-2", "body_base64": "AAE="},
		{"exchange": "amq.default", "routing_key": %[1]q, "message_id": "batch-3", "mandatory": false}
	]}`, q)
	for round := range 5 {
		code, results, err := p.postBatch(body)
		if err != nil {
			t.Fatal(err)
		}
		want := []int{200, 404, 422, 403, 400, 200, 200}
		if code != http.StatusMultiStatus || len(results) != len(want) {
			t.Fatalf("round %d: %d %+v, want 207 with %d results", round, code, results, len(want))
		}
		for i, w := range want {
			if results[i].Status != w {
				t.Errorf("round %d: entry %d = %+v, want %d", round, i, results[i], w)
			}
		}
	}
	close(stop)
	r := <-res
	for c := range r.Outcomes {
		if c != "200" {
			t.Fatalf("concurrent single publishes answered %v, want only 200", r.Outcomes)
		}
	}
	got := brokertest.Drain(t, amqpURL, q)
	for _, id := range []string{"batch-1", "batch-2", "batch-3"} {
		if got[id] != 5 {
			t.Errorf("%s delivered %d times, want 5 (one per round)", id, got[id])
		}
	}
	for _, id := range []string{"batch-404", "batch-422", "batch-403", "batch-400"} {
		if got[id] != 0 {
			t.Errorf("%s was delivered", id)
		}
	}
	for _, id := range r.Acked {
		if got[id] == 0 {
			t.Fatalf("single publish %s acknowledged but missing", id)
		}
	}
	if n := p.metric("publisher_batch_messages_count"); n != 5 {
		t.Errorf("publisher_batch_messages_count = %v, want 5", n)
	}
}

// streamClient is one /v1/stream request, full duplex: Send writes lines,
// the results are read as they come.
type streamClient struct {
	t       *testing.T
	pw      *io.PipeWriter
	resp    *http.Response
	results chan entryResult
	sent    atomic.Int64
	done    chan struct{} // closed when the answer ended
	err     error         // set before done is closed
}

func (p *proc) openStream(t *testing.T, hc *http.Client) *streamClient {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, p.api+"/v1/stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	s := &streamClient{t: t, pw: pw, results: make(chan entryResult, 1<<16), done: make(chan struct{})}
	respc := make(chan error, 1)
	go func() {
		resp, err := hc.Do(req)
		if err != nil {
			respc <- err
			return
		}
		s.resp = resp
		respc <- nil
	}()
	// The answer's headers come at once (before any line is sent).
	select {
	case err := <-respc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer to the stream request")
	}
	t.Cleanup(func() { pw.Close(); s.resp.Body.Close() })
	return s
}

// read reads the result lines into s.results until the answer ends.
func (s *streamClient) read() {
	defer close(s.done)
	defer close(s.results)
	sc := bufio.NewScanner(s.resp.Body)
	for sc.Scan() {
		var r entryResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			s.err = fmt.Errorf("result line %q: %w", sc.Bytes(), err)
			return
		}
		s.results <- r
	}
	s.err = sc.Err()
}

// send writes n message lines to queue, ids prefix-0 ... prefix-(n-1), then
// closes the request body when closeAfter is set.
func (s *streamClient) send(queue, prefix string, n int, closeAfter bool) error {
	var buf bytes.Buffer
	for i := range n {
		fmt.Fprintf(&buf, `{"exchange":"amq.default","routing_key":%q,"message_id":"%s-%d","body":"%0200d"}`+"\n", queue, prefix, i, i)
		if buf.Len() > 32<<10 || i == n-1 {
			if _, err := s.pw.Write(buf.Bytes()); err != nil {
				return err
			}
			s.sent.Store(int64(i + 1))
			buf.Reset()
		}
	}
	if closeAfter {
		return s.pw.Close()
	}
	return nil
}

// A stream of 100,000 messages with the broker connection cut every 500 ms:
// a result line for every input line, and every message answered 2xx is in
// the queue.
func TestStreamWithConnectionCuts(t *testing.T) {
	t.Parallel()
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-stream-cuts")
	proxy := faultproxy.ForURL(t, amqpURL)
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":    proxy.AMQPURL(),
		"PUBLISHER_MAX_RESTARTS": "1000",
		"PUBLISHER_BACKOFF_MIN":  "10ms",
		"PUBLISHER_BACKOFF_MAX":  "100ms",
	})
	p.waitReady()
	const n = 100_000
	s := p.openStream(t, client)
	go s.read()
	cuts := make(chan struct{})
	go func() {
		defer close(cuts)
		for {
			select {
			case <-s.done:
				return
			case <-time.After(500 * time.Millisecond):
				proxy.CutAll()
			}
		}
	}()
	sendErr := make(chan error, 1)
	go func() { sendErr <- s.send(q, "cut", n, true) }()
	seen := make([]bool, n)
	var acked []string
	codes := map[int]int{}
	for r := range s.results {
		if r.Index < 0 || r.Index >= n || seen[r.Index] {
			t.Fatalf("result for line %d twice or out of range: %+v", r.Index, r)
		}
		seen[r.Index] = true
		codes[r.Status]++
		if r.Status == 200 || r.Status == 202 {
			acked = append(acked, r.MessageID)
		}
	}
	<-cuts
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
	for i, ok := range seen {
		if !ok {
			t.Fatalf("no result for line %d", i)
		}
	}
	t.Logf("results by status: %v; publisher restarts %v", codes, p.metric("publisher_supervision_restarts_total", `child="publisher"`))
	if p.metric("publisher_supervision_restarts_total", `child="publisher"`) < 2 {
		t.Error("the connection was never cut")
	}
	brokertest.CheckDelivered(t, amqpURL, q, acked, n)
}

// A client that stops reading its results stalls its own stream only (the
// window stops the reading of its request), not other callers; once it reads
// again, the stream completes.
func TestStreamStalledClientStallsOnlyItself(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-stream-stall")
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL, "PUBLISHER_STREAM_WINDOW": "64"})
	p.waitReady()
	// Small socket buffers on the stream's connection, so that a few
	// thousand unread results fill them.
	small := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
			})
		}}).DialContext}}
	s := p.openStream(t, small)
	// Long message ids make long results: 20,000 of them are more than the
	// kernel lets a socket buffer (tcp_wmem's 4 MiB).
	const n = 20_000
	sendErr := make(chan error, 1)
	go func() { sendErr <- s.send(q, "stall-"+strings.Repeat("x", 230), n, true) }()
	// Nobody reads the results: the sending stops by itself. A candidate
	// stall is 500 ms without a line taken (a flowing stream takes thousands
	// in that time); it is confirmed below, after the 50 single publishes.
	var last int64 = -1
	poll.Within(t, waitLimit, "the stream stalled", func() bool {
		cur := s.sent.Load()
		stalled := cur == last && cur > 0
		last = cur
		time.Sleep(500 * time.Millisecond)
		return stalled
	})
	stalledAt := s.sent.Load()
	if stalledAt >= n {
		t.Fatalf("all %d lines were taken while no result was read", stalledAt)
	}
	t.Logf("stalled after %d of %d lines", stalledAt, n)
	// Other callers are not affected.
	for i := range 50 {
		r, err := p.publish("amq.default", q, []byte(fmt.Sprint("single-", i)), nil)
		if err != nil || r.code != 200 {
			t.Fatalf("single publish during the stall: %+v %v", r, err)
		}
	}
	if p.metric("publisher_streams_open") != 1 {
		t.Fatal("publisher_streams_open is not 1 during the stream")
	}
	// Still where it stopped while 50 other messages were confirmed: stalled,
	// not slow.
	if now := s.sent.Load(); now != stalledAt {
		t.Fatalf("the stream moved on from %d to %d lines with no result read: slow, not stalled", stalledAt, now)
	}
	// Reading again: every line gets its result.
	go s.read()
	got := 0
	for r := range s.results {
		if r.Status != 200 {
			t.Fatalf("result %+v", r)
		}
		got++
	}
	if s.err != nil || got != n {
		t.Fatalf("%d results of %d (%v)", got, n, s.err)
	}
	if err := <-sendErr; err != nil {
		t.Fatalf("sending the lines: %v", err)
	}
}

// A stream open across SIGTERM, its client stopping once it is answered 503:
// every line it sent is answered (the results are the lines 0..n-1), the
// process exits in time, and every message answered 2xx is in the queue.
func TestStreamAcrossShutdown(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-stream-shutdown")
	const timeout = 3 * time.Second
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL, "PUBLISHER_SHUTDOWN_TIMEOUT": timeout.String()})
	p.waitReady()
	s := p.openStream(t, client)
	go s.read()
	var wg sync.WaitGroup
	wg.Add(1)
	var refused atomic.Bool // a 503 came back: the service is shutting down
	go func() {             // a slow producer that stops once told the service is going away
		defer wg.Done()
		for i := 0; ; i += 100 {
			if refused.Load() {
				return
			}
			select {
			case <-s.done:
				return
			default:
			}
			if err := s.send(q, fmt.Sprint("sd", i), 100, false); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	poll.Within(t, waitLimit, "lines confirmed", func() bool { return p.metric("publisher_messages_total", `outcome="confirmed"`) > 500 })
	t0 := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var results []entryResult
	for r := range s.results {
		if r.Status == 503 {
			refused.Store(true)
		}
		results = append(results, r)
	}
	if s.err != nil {
		t.Fatalf("the answer did not end cleanly after %d results: %v", len(results), s.err)
	}
	if code := p.wait(timeout + 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	if took := time.Since(t0); took > timeout+2*time.Second {
		t.Errorf("exit %v after SIGTERM, want at most %v", took, timeout+2*time.Second)
	}
	s.pw.CloseWithError(io.ErrClosedPipe)
	wg.Wait()
	seen := make(map[int]bool, len(results))
	var acked []string
	for _, r := range results {
		if seen[r.Index] {
			t.Fatalf("two results for line %d", r.Index)
		}
		seen[r.Index] = true
		switch r.Status {
		case 200, 202:
			acked = append(acked, r.MessageID)
		case 503, 504:
		default:
			t.Errorf("result %+v", r)
		}
	}
	for i := range len(results) {
		if !seen[i] {
			t.Fatalf("line %d of the %d read has no result", i, len(results))
		}
	}
	t.Logf("%d lines answered (%d confirmed) across the shutdown", len(results), len(acked))
	brokertest.CheckDelivered(t, amqpURL, q, acked, 0)
}
