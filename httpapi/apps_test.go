package httpapi

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/apps"
	"github.com/publisher-dev/publisher/internal/poll"
)

// appsFile is an auth file of three apps: orders (events, orders.# keys,
// rate 0.001/s with a burst of 3: the bucket never refills within a test),
// billing (every exchange, no rate) and idle (no exchanges: nowhere).
func appsFile(t *testing.T, extra string) *apps.Set {
	t.Helper()
	sum := func(tok string) string { d := sha256.Sum256([]byte(tok)); return hex.EncodeToString(d[:]) }
	doc := `apps:
  - {name: orders, token_sha256: "` + sum("tok-orders") + `", exchanges: [events, amq.default], routing_keys: ["orders.#"], rate: 0.001, burst: 3}
  - {name: billing, token_sha256: "` + sum("tok-billing") + `", exchanges: ["*"]}
  - {name: idle, token_sha256: "` + sum("tok-idle") + `"}
` + extra
	s, err := apps.Parse([]byte(doc), func(string) ([]byte, error) { return nil, io.EOF })
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// appCounts records OnMessage and OnRateWait.
type appCounts struct {
	mu    sync.Mutex
	codes map[string][]int
	wait  map[string]time.Duration
}

func (c *appCounts) message(app string, code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.codes == nil {
		c.codes = map[string][]int{}
	}
	c.codes[app] = append(c.codes[app], code)
}

func (c *appCounts) rateWait(app string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wait == nil {
		c.wait = map[string]time.Duration{}
	}
	c.wait[app] += d
}

func (c *appCounts) of(app string) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.codes[app]...)
}

func (c *appCounts) waited(app string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wait[app]
}

func appsHandler(pub *fakePublisher, set *atomic.Pointer[apps.Set], counts *appCounts, rec *codeRecorder) http.Handler {
	return testHandler(pub, rec, func(c *Config) {
		c.AuthToken = ""
		c.Apps = set.Load
		c.AllowedExchanges = []string{"events", "audit", "amq.default"}
		c.OnMessage = counts.message
		c.OnRateWait = counts.rateWait
		c.MaxBodyBytes = 1024
	})
}

func postAs(h http.Handler, token, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// A single publish: 401 without an app's token, 403 out of the app's scope
// (after the global allow-list), 429 with Retry-After over its rate with
// nothing published; each message counted for its app.
func TestAppsSinglePublish(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	var set atomic.Pointer[apps.Set]
	set.Store(appsFile(t, ""))
	counts := &appCounts{}
	rec := &codeRecorder{}
	h := appsHandler(pub, &set, counts, rec)

	cases := []struct {
		token, path string
		code        int
		text        string
	}{
		{"", "/v1/publish/events/orders.created", 401, "missing or wrong bearer token"},
		{"tok-nobody", "/v1/publish/events/orders.created", 401, "missing or wrong bearer token"},
		{"tok-orders", "/v1/publish/events/orders.created", 200, ""},
		{"tok-orders", "/v1/publish/amq.default/orders", 200, ""},
		{"tok-orders", "/v1/publish/audit/orders.created", 403, "exchange not in the scope of app orders"},
		{"tok-orders", "/v1/publish/events/billing.paid", 403, "routing key not in the scope of app orders"},
		{"tok-orders", "/v1/publish/events/", 403, "routing key not in the scope of app orders"},
		{"tok-billing", "/v1/publish/other/x", 403, "exchange not allowed"}, // the global allow-list, for every app
		{"tok-billing", "/v1/publish/audit/anything.at.all", 200, ""},
		{"tok-idle", "/v1/publish/events/orders.created", 403, "exchange not in the scope of app idle"},
		{"tok-orders", "/v1/publish/events/orders.paid", 200, ""}, // the third of a burst of 3
		{"tok-orders", "/v1/publish/events/orders.paid", 429, "over the rate of app orders; nothing was published"},
	}
	for i, c := range cases {
		r := postAs(h, c.token, c.path, "x")
		if r.Code != c.code || (c.text != "" && !strings.Contains(r.Body.String(), c.text)) {
			t.Errorf("case %d: %s as %q: %d %s, want %d %q", i, c.path, c.token, r.Code, r.Body, c.code, c.text)
		}
		if c.code == 401 && r.Header().Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("case %d: 401 without WWW-Authenticate", i)
		}
		if c.code == 429 {
			// 1 token at 0.001/s: 1000 s.
			if ra := r.Header().Get("Retry-After"); ra != "1000" {
				t.Errorf("case %d: Retry-After %q, want 1000", i, ra)
			}
		}
	}
	if n := len(pub.received()); n != 4 {
		t.Errorf("published %d messages, want 4", n)
	}
	for app, want := range map[string][]int{"orders": {200, 200, 403, 403, 403, 200, 429}, "billing": {403, 200}, "idle": {403}} {
		if got := counts.of(app); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("OnMessage of %s: %v, want %v", app, got, want)
		}
	}
	if got := rec.get(); len(got) != len(cases) || got[len(got)-1] != 429 || got[0] != 401 {
		t.Errorf("OnResponse: %v", got)
	}

	// Without a file: no token needed, every request is anonymous, with the
	// global allow-list.
	open := testHandler(pub, nil, func(c *Config) {
		c.AuthToken = ""
		c.OnMessage = counts.message
		c.AllowedExchanges = []string{"events"}
	})
	if r := postAs(open, "", "/v1/publish/events/x", "x"); r.Code != 200 {
		t.Errorf("anonymous: %d %s", r.Code, r.Body)
	}
	if r := postAs(open, "", "/v1/publish/audit/x", "x"); r.Code != 403 || !strings.Contains(r.Body.String(), "exchange not allowed") {
		t.Errorf("anonymous outside the allow-list: %d %s", r.Code, r.Body)
	}
	if got := counts.of(apps.Anonymous); fmt.Sprint(got) != "[200 403]" {
		t.Errorf("OnMessage of anonymous: %v", got)
	}
	// PUBLISHER_AUTH_TOKEN: app default.
	single := testHandler(pub, nil, func(c *Config) { c.OnMessage = counts.message })
	if r := postAs(single, testToken, "/v1/publish/events/x", "x"); r.Code != 200 {
		t.Errorf("default: %d %s", r.Code, r.Body)
	}
	if r := postAs(single, "tok-orders", "/v1/publish/events/x", "x"); r.Code != 401 {
		t.Errorf("default with another token: %d %s", r.Code, r.Body)
	}
	if got := counts.of(apps.Default); fmt.Sprint(got) != "[200]" {
		t.Errorf("OnMessage of default: %v", got)
	}
}

// A batch: an entry out of the app's scope gets its own 403; the entries
// that would be published are taken from the bucket all or none: over the
// rate the whole batch is 429 with Retry-After and nothing is published,
// more than the burst at once is 413.
func TestAppsBatch(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	var set atomic.Pointer[apps.Set]
	set.Store(appsFile(t, ""))
	counts := &appCounts{}
	h := appsHandler(pub, &set, counts, nil)
	batch := func(token string, entries ...string) *httptest.ResponseRecorder {
		return postAs(h, token, "/v1/batch", `{"messages": [`+strings.Join(entries, ",")+`]}`)
	}
	entry := func(id, exchange, key string) string {
		return fmt.Sprintf(`{"message_id": %q, "exchange": %q, "routing_key": %q, "body": "x"}`, id, exchange, key)
	}

	r := batch("tok-orders", entry("a", "events", "orders.created"), entry("b", "audit", "orders.created"),
		entry("c", "events", "billing.paid"), entry("d", "other", "orders.x"), entry("e", "events", "orders.paid"),
		`{"message_id": "f", "exchange": "events", "routing_key": "orders.x", "priority": "high"}`)
	var a batchAnswer
	if err := json.Unmarshal(r.Body.Bytes(), &a); err != nil || r.Code != 207 || len(a.Results) != 6 {
		t.Fatalf("mixed batch: %d %s", r.Code, r.Body)
	}
	want := []struct {
		code int
		text string
	}{{200, ""}, {403, "exchange not in the scope of app orders"}, {403, "routing key not in the scope of app orders"},
		{403, "exchange not allowed"}, {200, ""}, {400, "malformed message object"}}
	for i, w := range want {
		if got := a.Results[i]; got.Status != w.code || !strings.Contains(got.Error, w.text) {
			t.Errorf("result %d: %+v, want %d %q", i, got, w.code, w.text)
		}
	}
	if n := len(pub.received()); n != 2 {
		t.Fatalf("published %d, want 2", n)
	}
	// 1 token left of 3: a batch of 2 to publish (and one 403, which costs
	// nothing) is refused whole, nothing published.
	r = batch("tok-orders", entry("g", "events", "orders.a"), entry("h", "events", "orders.b"), entry("i", "audit", "x"))
	if r.Code != 429 || r.Header().Get("Retry-After") != "1000" || !strings.Contains(r.Body.String(), "nothing was published") {
		t.Fatalf("batch over the rate: %d %q %s", r.Code, r.Header().Get("Retry-After"), r.Body)
	}
	if n := len(pub.received()); n != 2 {
		t.Fatalf("a refused batch published: %d", n)
	}
	// More than the burst at once: it could never pass.
	r = batch("tok-orders", entry("j", "events", "orders.a"), entry("k", "events", "orders.a"), entry("l", "events", "orders.a"), entry("m", "events", "orders.a"))
	if r.Code != 413 || !strings.Contains(r.Body.String(), "more than the burst of app orders (3)") {
		t.Fatalf("batch over the burst: %d %s", r.Code, r.Body)
	}
	// The last token still takes a batch of one.
	if r = batch("tok-orders", entry("n", "events", "orders.a"), entry("o", "audit", "x")); r.Code != 207 {
		t.Fatalf("last token: %d %s", r.Code, r.Body)
	}
	if got := counts.of("orders"); fmt.Sprint(got) != fmt.Sprint([]int{200, 403, 403, 403, 200, 400, 429, 429, 429, 413, 413, 413, 413, 200, 403}) {
		t.Errorf("OnMessage of orders: %v", got)
	}

	// A CloudEvents batch goes through the same scope.
	ce := `[{"specversion":"1.0","id":"ce-1","source":"/s","type":"orders.created"},{"specversion":"1.0","id":"ce-2","source":"/s","type":"billing.paid"}]`
	req := httptest.NewRequest(http.MethodPost, "/v1/batch?exchange=events", strings.NewReader(ce))
	req.Header.Set("Authorization", "Bearer tok-billing")
	req.Header.Set("Content-Type", "application/cloudevents-batch+json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("CloudEvents batch of billing: %d %s", rec.Code, rec.Body)
	}
	set.Store(appsFile(t, "")) // orders' bucket full again (a new Set without a Registry)
	req = httptest.NewRequest(http.MethodPost, "/v1/batch?exchange=events", strings.NewReader(ce))
	req.Header.Set("Authorization", "Bearer tok-orders")
	req.Header.Set("Content-Type", "application/cloudevents-batch+json")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 207 || !strings.Contains(rec.Body.String(), `"message_id":"ce-1","status":200`) ||
		!strings.Contains(rec.Body.String(), `"message_id":"ce-2","status":403,"error":"routing key not in the scope of app orders"`) {
		t.Fatalf("CloudEvents batch of orders: %d %s", rec.Code, rec.Body)
	}
}

// postStreamAs opens a stream as token, its body written through the
// returned pipe.
func postStreamAs(t *testing.T, url, token string) (*io.PipeWriter, *bufio.Reader, func()) {
	t.Helper()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, url, pr)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	return pw, bufio.NewReader(resp.Body), func() { pw.Close(); resp.Body.Close() }
}

func readResult(t *testing.T, rd *bufio.Reader) streamResult {
	t.Helper()
	line, err := rd.ReadString('\n')
	if err != nil {
		t.Fatalf("reading a result: %v", err)
	}
	var r streamResult
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("result %q: %v", line, err)
	}
	return r
}

// A stream over its app's rate slows down to it (no 429): 6 lines at 20/s
// with a burst of 1 take at least 5 × 50 ms; a line out of scope gets its
// own 403 and costs no token.
func TestAppsStreamSlowsDown(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	var set atomic.Pointer[apps.Set]
	set.Store(appsFile(t, `  - {name: fast, token_sha256: "`+func() string { d := sha256.Sum256([]byte("tok-fast")); return hex.EncodeToString(d[:]) }()+`", exchanges: [events], rate: 20, burst: 1}`+"\n"))
	counts := &appCounts{}
	srv := httptest.NewServer(appsHandler(pub, &set, counts, nil))
	t.Cleanup(srv.Close)

	var body strings.Builder
	for i := range 6 {
		fmt.Fprintf(&body, `{"exchange": "events", "routing_key": "k", "message_id": "s-%d"}`+"\n", i)
		if i == 2 {
			body.WriteString(`{"exchange": "audit", "routing_key": "k", "message_id": "out"}` + "\n")
		}
	}
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/stream", strings.NewReader(body.String()))
	req.Header.Set("Authorization", "Bearer tok-fast")
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var r streamResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		got[r.MessageID] = r.Status
	}
	elapsed := time.Since(start)
	for i := range 6 {
		if got[fmt.Sprint("s-", i)] != 200 {
			t.Errorf("s-%d: %d, want 200", i, got[fmt.Sprint("s-", i)])
		}
	}
	if got["out"] != 403 || len(got) != 7 {
		t.Errorf("results %v", got)
	}
	// The first line takes the burst's token; each of the 5 others waits
	// 50 ms after the one before: timers never fire early.
	if elapsed < 250*time.Millisecond {
		t.Errorf("6 lines at 20/s (burst 1) took %v, want at least 250ms", elapsed)
	}
	// The waits are each counted from the moment the line was read: their
	// sum is 250ms less the time spent reading.
	if w := counts.waited("fast"); w <= 0 || w > elapsed {
		t.Errorf("OnRateWait summed %v, want more than 0 and at most the %v the stream took", w, elapsed)
	}
	t.Logf("6 lines at 20/s took %v; the stream waited %v for the rate", elapsed, counts.waited("fast"))
}

// A stream reads the apps in force for each line: after a reload, its next
// lines follow the new scope, and a token no longer an app's gets 401 per
// line.
func TestAppsStreamFollowsAReload(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	var set atomic.Pointer[apps.Set]
	set.Store(appsFile(t, ""))
	counts := &appCounts{}
	srv := httptest.NewServer(appsHandler(pub, &set, counts, nil))
	t.Cleanup(srv.Close)
	pw, rd, closeStream := postStreamAs(t, srv.URL+"/v1/stream", "tok-billing")
	defer closeStream()
	line := func(id, exchange string) {
		fmt.Fprintf(pw, `{"exchange": %q, "routing_key": "k", "message_id": %q}`+"\n", exchange, id)
	}
	line("1", "audit")
	if r := readResult(t, rd); r.Status != 200 {
		t.Fatalf("before the reload: %+v", r)
	}
	// billing narrowed to events.
	sum := sha256.Sum256([]byte("tok-billing"))
	narrowed, err := apps.Parse([]byte(`apps: [{name: billing, token_sha256: "`+hex.EncodeToString(sum[:])+`", exchanges: [events]}]`), nil)
	if err != nil {
		t.Fatal(err)
	}
	set.Store(narrowed)
	line("2", "audit")
	if r := readResult(t, rd); r.Status != 403 || !strings.Contains(r.Error, "exchange not in the scope of app billing") {
		t.Fatalf("after narrowing: %+v", r)
	}
	line("3", "events")
	if r := readResult(t, rd); r.Status != 200 {
		t.Fatalf("in the new scope: %+v", r)
	}
	// The token revoked.
	none, err := apps.Parse([]byte("apps: []"), nil)
	if err != nil {
		t.Fatal(err)
	}
	set.Store(none)
	line("4", "events")
	if r := readResult(t, rd); r.Status != 401 || r.MessageID != "4" {
		t.Fatalf("after the token was revoked: %+v", r)
	}
	if n := len(pub.received()); n != 2 {
		t.Fatalf("published %d, want 2", n)
	}
	if got := counts.of("billing"); fmt.Sprint(got) != "[200 403 200 401]" {
		t.Errorf("OnMessage of billing: %v", got)
	}
}

// A stream waiting for its rate ends with its request (a shutdown's drain
// cancels the requests' context, as here): the line waiting is answered 503
// and not published, the handler returns (goleak), the token is given back.
// (A client that merely goes away is noticed once the wait is over: a
// stream that does not read its request cannot see it closed.)
func TestAppsStreamWaitEndsWithTheRequest(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	var set atomic.Pointer[apps.Set]
	set.Store(appsFile(t, ""))
	base, cancelRequests := context.WithCancel(context.Background())
	defer cancelRequests()
	srv := httptest.NewUnstartedServer(appsHandler(pub, &set, &appCounts{}, nil))
	srv.Config.BaseContext = func(net.Listener) context.Context { return base }
	srv.Start()
	t.Cleanup(srv.Close)
	pw, rd, closeStream := postStreamAs(t, srv.URL+"/v1/stream", "tok-orders")
	defer closeStream()
	for i := range 4 { // a burst of 3 at 0.001/s: the 4th waits 1000 s
		fmt.Fprintf(pw, `{"exchange": "events", "routing_key": "orders.x", "message_id": "w-%d"}`+"\n", i)
	}
	for range 3 {
		if r := readResult(t, rd); r.Status != 200 {
			t.Fatalf("within the burst: %+v", r)
		}
	}
	// The 4th line waits once its token is reserved: the bucket then owes
	// one, and a request for one more would wait for two (2000 s).
	orders := set.Load().ByName("orders")
	poll.Within(t, 5*time.Second, "the 4th line waiting for its token", func() bool {
		w, _ := orders.Take(time.Now(), 1)
		return w > 1500*time.Second
	})
	cancelRequests()
	r := readResult(t, rd)
	if r.Status != 503 || r.MessageID != "w-3" || !strings.Contains(r.Error, "not published") {
		t.Fatalf("the line waiting: %+v", r)
	}
	if _, err := rd.ReadString('\n'); err != io.EOF {
		t.Fatalf("after the last result: %v, want EOF", err)
	}
	if n := len(pub.received()); n != 3 {
		t.Fatalf("published %d, want 3", n)
	}
	// The cancelled reservation gave its token back: the next request
	// waits for one token (1000 s), not two.
	h := appsHandler(pub, &set, &appCounts{}, nil)
	rec := postAs(h, "tok-orders", "/v1/publish/events/orders.x", "x")
	if ra, err := strconv.Atoi(rec.Header().Get("Retry-After")); rec.Code != 429 || err != nil || ra > 1000 || ra < 900 {
		t.Fatalf("after the stream: %d Retry-After %q, want 429 after at most 1000 s (one token at 0.001/s; two would be 2000)", rec.Code, rec.Header().Get("Retry-After"))
	}
}
