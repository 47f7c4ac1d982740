package httpapi

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/relay"
)

type batchAnswer struct {
	Results []struct {
		Index     *int   `json:"index"`
		MessageID string `json:"message_id"`
		Status    int    `json:"status"`
		Outcome   string `json:"outcome"`
		Error     string `json:"error"`
	} `json:"results"`
	Error string `json:"error"`
}

// serveBatchRequest posts body to /v1/batch with the test token, a JSON
// content type and hdr, and returns the recorded answer.
func serveBatchRequest(h http.Handler, body string, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/batch", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func postBatch(t *testing.T, h http.Handler, body string, hdr map[string]string) (int, batchAnswer, string) {
	t.Helper()
	rec := serveBatchRequest(h, body, hdr)
	var a batchAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatalf("answer %d is not JSON: %q", rec.Code, rec.Body)
	}
	return rec.Code, a, rec.Body.String()
}

// A batch mixing good messages with each kind of bad entry gets one result
// per entry, in order, with the single publish's status for each; only the
// good ones are published, with the defaults and fields given.
func TestBatchPerEntryResults(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	var batches []int
	h := testHandler(pub, nil, func(c *Config) {
		c.AllowedExchanges = []string{"amq.default", "events"}
		c.OnBatch = func(n int) { batches = append(batches, n) }
	})
	body := `{"messages": [
		{"exchange": "events", "routing_key": "orders.created", "message_id": "ok-1", "body": "hello",
		 "content_type": "text/plain", "priority": 3, "expiration_ms": 60000, "headers": {"tenant": "acme", "n": 7, "f": 1.5, "b": true}},
		{"exchange": "secret", "message_id": "forbidden"},
		{"exchange": "events", "message_id": "bad-priority", "priority": 300},
		{"routing_key": "q", "message_id": "no-exchange"},
		{"exchange": "events", "message_id": "too-big", "body": "0123456789abcdefXYZ"},
		{"exchange": "events", "message_id": "both", "body": "a", "body_base64": "YQ=="},
		{"exchange": "events", "message_id": "typo", "routnig_key": "x"},
		{"exchange": "amq.default", "routing_key": "q", "body_base64": "AAEC/w==", "persistent": false, "mandatory": false}
	]}`
	code, a, raw := postBatch(t, h, body, nil)
	if code != http.StatusMultiStatus {
		t.Fatalf("status %d, want 207: %s", code, raw)
	}
	want := []struct {
		id     string
		status int
		text   string
	}{
		{"ok-1", 200, ""}, {"forbidden", 403, "not allowed"}, {"bad-priority", 400, "priority"},
		{"no-exchange", 400, "exchange is required"}, {"too-big", 413, "larger than 16"}, {"both", 400, "not both"},
		{"typo", 400, "routnig_key"}, {generated, 200, ""},
	}
	if len(a.Results) != len(want) {
		t.Fatalf("%d results for %d entries: %s", len(a.Results), len(want), raw)
	}
	for i, w := range want {
		r := a.Results[i]
		if r.Status != w.status || !strings.Contains(r.Error, w.text) || (w.id != generated && r.MessageID != w.id) || r.MessageID == "" {
			t.Errorf("result %d = %+v, want %d %q for %s", i, r, w.status, w.text, w.id)
		}
		if (r.Status == 200) != (r.Outcome == "confirmed") {
			t.Errorf("result %d: status %d with outcome %q", i, r.Status, r.Outcome)
		}
	}
	got := pub.received()
	if len(got) != 2 {
		t.Fatalf("published %d messages, want the 2 good ones", len(got))
	}
	m := got[0]
	if m.Exchange != "events" || m.RoutingKey != "orders.created" || string(m.Body) != "hello" || m.Priority != 3 ||
		m.Expiration != "60000" || !m.Persistent || !m.Mandatory || m.ContentType != "text/plain" ||
		m.Headers["tenant"] != "acme" || m.Headers["n"] != int64(7) || m.Headers["f"] != 1.5 || m.Headers["b"] != true {
		t.Errorf("first message published as %+v", m)
	}
	if m := got[1]; m.Exchange != "" || string(m.Body) != "\x00\x01\x02\xff" || m.Persistent || m.Mandatory {
		t.Errorf("second message published as %+v", m)
	}
	if len(batches) != 1 || batches[0] != 8 {
		t.Errorf("OnBatch saw %v, want [8]", batches)
	}
}

func TestBatchStatus(t *testing.T) {
	checkLeaks(t)
	one := `{"messages": [{"exchange": "amq.default", "routing_key": "q"}, {"exchange": "amq.default", "routing_key": "q"}]}`
	for _, tt := range []struct {
		name string
		pub  *fakePublisher
		want int
	}{
		{"all confirmed", &fakePublisher{}, 200},
		{"all spooled", &fakePublisher{spool: true}, 202},
		{"a failure", &fakePublisher{err: publisher.ErrNacked}, 207},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, a, raw := postBatch(t, testHandler(tt.pub, nil, nil), one, nil)
			if code != tt.want || len(a.Results) != 2 {
				t.Fatalf("status %d, want %d: %s", code, tt.want, raw)
			}
		})
	}
	code, a, _ := postBatch(t, testHandler(&fakePublisher{}, nil, nil), `{"messages": []}`, nil)
	if code != 200 || len(a.Results) != 0 {
		t.Fatalf("empty batch: %d %+v", code, a)
	}
}

// A body that is not a batch is refused whole, naming where; nothing is
// published.
func TestBatchRefusedWhole(t *testing.T) {
	checkLeaks(t)
	for _, tt := range []struct {
		name, body string
		hdr        map[string]string
		want       int
		text       string
	}{
		{"not JSON", `{"messages": [`, nil, 400, "byte"},
		{"no messages", `{"message": []}`, nil, 400, `{"messages"`},
		{"an entry not an object", `{"messages": [{"exchange": "amq.default"}, 42]}`, nil, 400, "messages[1]"},
		{"too many", `{"messages": [` + strings.Repeat(`{"exchange":"amq.default"},`, 3) + `{"exchange":"amq.default"}]}`, nil, 413, "more than 3"},
		{"too large", `{"messages": [{"exchange": "amq.default", "body": "` + strings.Repeat("x", 200) + `"}]}`, nil, 413, "larger than"},
		{"wrong type", `{"messages": []}`, map[string]string{"Content-Type": "text/plain"}, 415, "application/json"},
		{"no token", `{"messages": []}`, map[string]string{"Authorization": ""}, 401, "token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{}
			h := testHandler(pub, nil, func(c *Config) { c.MaxBatchMessages = 3; c.MaxBatchBytes = 128 })
			code, a, raw := postBatch(t, h, tt.body, tt.hdr)
			if code != tt.want || !strings.Contains(a.Error, tt.text) {
				t.Fatalf("%d %s, want %d naming %q", code, raw, tt.want, tt.text)
			}
			if len(pub.received()) != 0 {
				t.Fatal("published from a refused batch")
			}
		})
	}
}

// Messages not confirmed within the confirm timeout are given up: the answer
// comes at the deadline with what giving up says (here: not published).
func TestBatchDeadline(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{hold: true}
	h := testHandler(pub, nil, func(c *Config) { c.ConfirmTimeout = 50 * time.Millisecond })
	code, a, raw := postBatch(t, h, `{"messages": [{"exchange": "amq.default", "message_id": "slow"}]}`, nil)
	if code != 207 || len(a.Results) != 1 || a.Results[0].Status != 504 || !strings.Contains(a.Results[0].Error, "not published") {
		t.Fatalf("%d %s, want 207 with a 504 not published", code, raw)
	}
	pub.mu.Lock()
	late := pub.held[0]
	pub.mu.Unlock()
	late(relay.Confirmed, nil) // a late confirm changes nothing (and does not block)
}

// streamServer serves the handler on a real server (full duplex needs one).
func streamServer(t *testing.T, pub *fakePublisher, edit func(*Config)) string {
	t.Helper()
	srv := httptest.NewServer(testHandler(pub, nil, edit))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1/stream"
}

// postStream posts an authorized NDJSON stream of body to url.
func postStream(t *testing.T, url string, body io.Reader) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, body)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

type streamResult struct {
	Index     int    `json:"index"`
	MessageID string `json:"message_id"`
	Status    int    `json:"status"`
	Outcome   string `json:"outcome"`
	Error     string `json:"error"`
}

// A stream answers one line per input line (malformed ones included), the
// answer ends after the client closed its side, and empty lines are skipped.
func TestStreamAnswersEveryLine(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	url := streamServer(t, pub, nil)
	var lines []string
	for i := range 50 {
		lines = append(lines, fmt.Sprintf(`{"exchange": "amq.default", "routing_key": "q", "message_id": "m-%d", "body": "%d"}`, i, i))
	}
	lines[10] = `{"exchange": "amq.default", "priority": "high"}`
	lines[20] = `not json`
	body := strings.Join(lines, "\n") + "\n\n"
	resp := postStream(t, url, strings.NewReader(body))
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	seen := map[int]streamResult{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var r streamResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("result line %q: %v", sc.Bytes(), err)
		}
		if _, dup := seen[r.Index]; dup {
			t.Fatalf("two results for line %d", r.Index)
		}
		seen[r.Index] = r
	}
	if len(seen) != 50 {
		t.Fatalf("%d results for 50 lines", len(seen))
	}
	for i := range 50 {
		r := seen[i]
		switch i {
		case 10, 20:
			if r.Status != 400 {
				t.Errorf("line %d: %+v, want 400", i, r)
			}
		default:
			if r.Status != 200 || r.Outcome != "confirmed" || r.MessageID != fmt.Sprint("m-", i) {
				t.Errorf("line %d: %+v", i, r)
			}
		}
	}
	if n := len(pub.received()); n != 48 {
		t.Fatalf("published %d, want 48", n)
	}
}

// A stream stops reading beyond its window of unanswered lines, and reads on
// as answers free room.
func TestStreamWindowBackpressure(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{hold: true}
	url := streamServer(t, pub, func(c *Config) { c.StreamWindow = 4 })
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, url, pr)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/x-ndjson")
	respc := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			close(respc)
			return
		}
		respc <- resp
	}()
	var wrote sync.WaitGroup
	wrote.Add(1)
	go func() {
		defer wrote.Done()
		for i := range 10 {
			fmt.Fprintf(pw, `{"exchange": "amq.default", "message_id": "w-%d"}`+"\n", i)
		}
	}()
	poll.Within(t, 5*time.Second, "the window full", func() bool { return len(pub.received()) == 4 })
	time.Sleep(100 * time.Millisecond) // it would have read more by now
	if n := len(pub.received()); n != 4 {
		t.Fatalf("%d messages taken with a window of 4", n)
	}
	resp := <-respc
	if resp == nil {
		return
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	settled := 0
	for settled < 10 {
		poll.Within(t, 5*time.Second, "more taken", func() bool { pub.mu.Lock(); defer pub.mu.Unlock(); return len(pub.held) > settled })
		pub.mu.Lock()
		f := pub.held[settled]
		pub.mu.Unlock()
		f(relay.Confirmed, nil)
		settled++
		if _, err := rd.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	wrote.Wait()
	pw.Close()
	if _, err := rd.ReadString('\n'); err != io.EOF {
		t.Fatalf("after the last result: %v, want EOF", err)
	}
}

// Lines not answered within the confirm timeout are given up, with what
// giving up says (the end of a stream's request across a shutdown is tested
// against the real binary: TestStreamAcrossShutdown).
func TestStreamGivesUp(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{hold: true}
	url := streamServer(t, pub, func(c *Config) { c.ConfirmTimeout = 100 * time.Millisecond })
	body := `{"exchange": "amq.default", "message_id": "late"}` + "\n"
	resp := postStream(t, url, strings.NewReader(body))
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r streamResult
	if err := json.Unmarshal(b, &r); err != nil || r.Status != 504 || r.MessageID != "late" {
		t.Fatalf("result %q, want a 504 for late", b)
	}
}

// A refused stream is answered at once, even to a client that sends nothing
// before it has the answer (the connection is closed after the refusal).
func TestStreamRefusalAnsweredAtOnce(t *testing.T) {
	checkLeaks(t)
	url := streamServer(t, &fakePublisher{}, nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest(http.MethodPost, url, pr) // no token: 401
	req.Header.Set("Content-Type", "application/x-ndjson")
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	select {
	case resp := <-done:
		if resp == nil {
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", resp.StatusCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to a refused stream whose client waits for it")
	}
}
