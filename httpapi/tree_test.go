package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/supervision"
)

var treeNow = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

// fakeTree is root > broker > publisher (restarting after 3 restarts, its
// last failure holding markup and a password) + http.
func fakeTree() supervision.SupervisorInfo {
	errDial := errors.New(`dial amqp://app:s3cret@rabbit:5672/: <script>alert("x")</script> connection refused`)
	return supervision.SupervisorInfo{Name: "root", Serving: true, Children: []supervision.ChildInfo{
		{Name: "broker", State: supervision.ChildRunning, Supervisor: &supervision.SupervisorInfo{
			Name: "broker", Serving: true, Children: []supervision.ChildInfo{{
				Name:  "publisher",
				State: supervision.ChildRestarting,
				Stats: supervision.ChildRestartStats{
					Failures: 2, TotalRestarts: 3,
					FirstFailure: treeNow.Add(-4 * time.Second), LastFailure: treeNow.Add(-1500 * time.Millisecond),
					LastUptime: 250 * time.Millisecond,
				},
				LastError:   errDial,
				NextRestart: treeNow.Add(1200 * time.Millisecond),
			}},
		}},
		{Name: "http", State: supervision.ChildRunning},
	}}
}

func redactTest(err error) string { return strings.ReplaceAll(err.Error(), "s3cret", "xxxxx") }

func fakeReady() (bool, map[string]any) {
	return false, map[string]any{"connected": false, "blocked": false, "given_up": true, "ready": "ignored"}
}

func treeRequest(t *testing.T, h http.Handler, method, accept string) (int, http.Header, string) {
	t.Helper()
	r := httptest.NewRequest(method, "/debug/supervision", nil)
	if accept != "" {
		r.Header.Set("Accept", accept)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Body)
	return w.Code, w.Header(), string(b)
}

func TestTreeJSON(t *testing.T) {
	checkLeaks(t)
	h := treeHandler{tree: fakeTree, redact: redactTest, ready: fakeReady, now: func() time.Time { return treeNow }}
	code, hdr, body := treeRequest(t, h, http.MethodGet, "application/json")
	if code != 200 || hdr.Get("Content-Type") != "application/json" || hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %v", code, hdr)
	}
	if strings.Contains(body, "s3cret") {
		t.Fatalf("the password reached the answer: %s", body)
	}
	var ans TreeAnswer
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatal(err)
	}
	if ans.Ready || ans.Service["given_up"] != true || !ans.Time.Equal(treeNow) {
		t.Fatalf("service part: %+v", ans)
	}
	root := ans.Tree
	if root.Name != "root" || root.State != "running" || root.Stats != nil || root.Strategy != "one-for-one" || len(root.Children) != 2 {
		t.Fatalf("root: %+v", root)
	}
	broker := root.Children[0]
	if broker.Name != "broker" || broker.State != "running" || broker.Restart != "permanent" || broker.Strategy != "one-for-one" || len(broker.Children) != 1 {
		t.Fatalf("broker: %+v", broker)
	}
	pub := broker.Children[0]
	wantErr := `dial amqp://app:xxxxx@rabbit:5672/: <script>alert("x")</script> connection refused`
	if pub.State != "restarting" || pub.Strategy != "" || pub.LastError != wantErr || pub.NextRestart == nil ||
		!pub.NextRestart.Equal(treeNow.Add(1200*time.Millisecond)) {
		t.Fatalf("publisher: %+v", pub)
	}
	if st := pub.Stats; st == nil || st.TotalRestarts != 3 || st.FailuresInWindow != 2 || st.LastUptimeSeconds != 0.25 ||
		st.LastFailure == nil || !st.LastFailure.Equal(treeNow.Add(-1500*time.Millisecond)) || st.FirstFailure == nil {
		t.Fatalf("publisher stats: %+v", pub.Stats)
	}
	if http := root.Children[1]; http.LastError != "" || http.NextRestart != nil || http.Stats == nil || http.Stats.LastFailure != nil {
		t.Fatalf("http: %+v", http)
	}
	// The raw JSON keys are the contract (docs/operations.md).
	for _, key := range []string{`"failures_in_window":2`, `"total_restarts":3`, `"last_uptime_seconds":0.25`, `"next_restart":"2026-12-04T10:00:01.2Z"`, `"last_error":`, `"restart":"permanent"`} {
		if !strings.Contains(body, key) {
			t.Errorf("no %s in %s", key, body)
		}
	}
}

func TestTreeHTML(t *testing.T) {
	checkLeaks(t)
	h := treeHandler{tree: fakeTree, redact: redactTest, ready: fakeReady, now: func() time.Time { return treeNow }}
	for _, accept := range []string{"", "*/*", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json;q=0.5, text/html"} {
		code, hdr, body := treeRequest(t, h, http.MethodGet, accept)
		if code != 200 || hdr.Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Fatalf("Accept %q: %d %v", accept, code, hdr)
		}
		for _, want := range []string{
			`<meta http-equiv="refresh" content="2">`,
			`Not ready`,
			`<div class="node restarting"><span class="state restarting">restarting</span> <span class="name">publisher</span> <span class="kind">permanent worker</span>`,
			`restarts <b>3</b> · failures in window <b>2</b> · last failure <b>1.5s ago</b> after running 250ms · next restart <b>in 1.2s</b>`,
			`last failure: dial amqp://app:xxxxx@rabbit:5672/: &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; connection refused`,
			`<span class="name">broker</span> <span class="kind">permanent supervisor, one-for-one</span>`,
			`<th>given_up</th><td>true</td>`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("Accept %q: the page lacks %s", accept, want)
			}
		}
		// Self-contained, readable without JavaScript, and no secret.
		for _, banned := range []string{"s3cret", "ignored", "<script", "<link", "src=", "@import", "url("} {
			if strings.Contains(body, banned) {
				t.Errorf("Accept %q: the page holds %q", accept, banned)
			}
		}
	}
	if code, hdr, _ := treeRequest(t, h, http.MethodGet, "application/json, text/html;q=0.9"); code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("JSON preferred: %d %v", code, hdr)
	}
}

func TestTreeRoute(t *testing.T) {
	checkLeaks(t)
	h := NewAdminHandler(AdminConfig{Tree: fakeTree, Ready: fakeReady})
	if code, hdr, body := treeRequest(t, h, http.MethodGet, "application/json"); code != 200 || hdr.Get("Content-Type") != "application/json" ||
		!strings.Contains(body, "s3cret") { // no RedactError: err.Error() as is
		t.Fatalf("%d %v %s", code, hdr, body)
	}
	if code, _, _ := treeRequest(t, h, http.MethodHead, ""); code != 200 {
		t.Fatalf("HEAD: %d", code)
	}
	if code, hdr, _ := treeRequest(t, h, http.MethodPost, ""); code != 405 || hdr.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %d %v", code, hdr)
	}
	if code, _, body := get(t, h, http.MethodGet, "/nope"); code != 404 || !strings.Contains(body, "/debug/supervision") {
		t.Fatalf("404: %d %s", code, body)
	}
	without := NewAdminHandler(AdminConfig{})
	if code, _, _ := treeRequest(t, without, http.MethodGet, ""); code != 404 {
		t.Fatalf("without a tree: %d", code)
	}
}
