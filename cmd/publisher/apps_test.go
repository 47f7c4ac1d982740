package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/poll"
)

// newToken is a random bearer token, in base64's alphabet so it can never be
// an app's name (which the logs may show).
func newToken(t *testing.T) string {
	t.Helper()
	return "tok/" + rand.Text() + "+="
}

func sha256Hex(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// publishAs publishes to the default exchange with routing key (queue) key as
// the app of token ("" for none).
func (p *proc) publishAs(t *testing.T, token, key, id string) publishResult {
	t.Helper()
	hdr := map[string]string{"X-Message-Id": id}
	if token != "" {
		hdr["Authorization"] = "Bearer " + token
	}
	r, err := p.publish("amq.default", key, []byte(id), hdr)
	if err != nil {
		t.Fatalf("publish %s: %v", id, err)
	}
	return r
}

// checkNoSecrets fails t when the service's output holds any of secrets.
func checkNoSecrets(t *testing.T, p *proc, secrets ...string) {
	t.Helper()
	out := p.Logs()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the service's output holds a token or a digest (%d bytes long)", len(s))
		}
	}
}

// retryAfterWithin checks a 429's Retry-After: whole seconds, from 1 to
// most.
func retryAfterWithin(t *testing.T, what, v string, most int) {
	t.Helper()
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		t.Errorf("%s: Retry-After %q, want whole seconds from 1 to %d", what, v, most)
	}
}

// The real binary with PUBLISHER_AUTH_FILE against the broker: per-app 401,
// 403 (single and per batch entry), 429 with Retry-After (single and a whole
// batch, nothing published); exactly the messages answered 200 reach the
// queue; the per-app series count them; no token or digest in the output.
func TestAppsAgainstTheBinary(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	in := brokertest.TempQueue(t, amqpURL, "apps-in")
	out := brokertest.TempQueue(t, amqpURL, "apps-out")
	dir := t.TempDir()
	ordersTok, readerTok := newToken(t), newToken(t)
	writeFile(t, filepath.Join(dir, "reader.token"), readerTok+"\n")
	auth := filepath.Join(dir, "apps.yaml")
	// orders: the default exchange, routing key in only, 4 messages then
	// 0.01/s (no refill worth a message within the test).
	writeFile(t, auth, fmt.Sprintf(`apps:
  - name: orders
    token_sha256: "%s"
    exchanges: [amq.default]
    routing_keys: ["%s"]
    rate: 0.01
    burst: 4
  - name: reader
    token_file: reader.token
`, sha256Hex(ordersTok), in))
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL, "PUBLISHER_AUTH_FILE": auth})
	p.waitReady()

	for _, c := range []struct {
		token, key, id string
		code           int
		text           string
	}{
		{"", in, "none", 401, "missing or wrong bearer token"},
		{"wrong", in, "wrong", 401, "missing or wrong bearer token"},
		{ordersTok, in, "s-1", 200, ""},
		{ordersTok, out, "s-out", 403, "routing key not in the scope of app orders"},
		{readerTok, in, "r-1", 403, "exchange not in the scope of app reader"},
	} {
		if r := p.publishAs(t, c.token, c.key, c.id); r.code != c.code || !strings.Contains(r.errText, c.text) {
			t.Errorf("%s: %d %q, want %d %q", c.id, r.code, r.errText, c.code, c.text)
		}
	}

	batch := func(entries ...[2]string) (int, []entryResult, string) {
		var b strings.Builder
		b.WriteString(`{"messages": [`)
		for i, e := range entries {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"exchange": "amq.default", "routing_key": %q, "message_id": %q, "body": "x"}`, e[0], e[1])
		}
		b.WriteString("]}")
		req, _ := http.NewRequest(http.MethodPost, p.api+"/v1/batch", strings.NewReader(b.String()))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+ordersTok)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var res []entryResult
		if resp.StatusCode != 429 && resp.StatusCode != 413 {
			var a struct {
				Results []entryResult `json:"results"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
				t.Fatalf("batch answer %d: %v", resp.StatusCode, err)
			}
			res = a.Results
		}
		return resp.StatusCode, res, resp.Header.Get("Retry-After")
	}
	// A batch: the entry out of scope gets its own 403, the others are published.
	code, res, _ := batch([2]string{in, "b-1"}, [2]string{out, "b-2"}, [2]string{in, "b-3"})
	if code != 207 || len(res) != 3 || res[0].Status != 200 || res[1].Status != 403 || res[2].Status != 200 ||
		!strings.Contains(res[1].Error, "routing key not in the scope of app orders") {
		t.Fatalf("batch with an entry out of scope: %d %+v", code, res)
	}
	// 1 token left: a batch of 2 is refused whole, nothing published.
	code, _, ra := batch([2]string{in, "b-4"}, [2]string{in, "b-5"})
	if code != 429 {
		t.Fatalf("batch over the rate: %d, want 429", code)
	}
	retryAfterWithin(t, "batch over the rate", ra, 100)
	// More than the burst: 413.
	if code, _, _ := batch([2]string{in, "b-6"}, [2]string{in, "b-7"}, [2]string{in, "b-8"}, [2]string{in, "b-9"}, [2]string{in, "b-10"}); code != 413 {
		t.Fatalf("batch over the burst: %d, want 413", code)
	}
	if r := p.publishAs(t, ordersTok, in, "s-2"); r.code != 200 {
		t.Fatalf("the last token: %+v", r)
	}
	r := p.publishAs(t, ordersTok, in, "s-3")
	if r.code != 429 || !strings.Contains(r.errText, "over the rate of app orders; nothing was published") || r.id != "s-3" {
		t.Fatalf("over the rate: %+v", r)
	}
	retryAfterWithin(t, "single over the rate", r.retryAfter, 100)

	got := brokertest.Drain(t, amqpURL, in)
	want := map[string]int{"s-1": 1, "b-1": 1, "b-3": 1, "s-2": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("queue %s holds %v, want %v", in, got, want)
	}
	if n := brokertest.Purge(t, amqpURL, out); n != 0 {
		t.Errorf("%d messages out of scope reached %s", n, out)
	}

	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{`app="orders"`, `code="200"`}, 4},
		{[]string{`app="orders"`, `code="403"`}, 2},
		{[]string{`app="orders"`, `code="429"`}, 3}, // the batch's 2, the single
		{[]string{`app="orders"`, `code="413"`}, 5},
		{[]string{`app="reader"`, `code="403"`}, 1},
		{[]string{`app="reader"`, `code="200"`}, 0},
	} {
		if v := p.metric("publisher_app_messages_total", c.labels...); v != c.want {
			t.Errorf("publisher_app_messages_total%v = %v, want %v", c.labels, v, c.want)
		}
	}
	if v := p.metric("publisher_http_requests_total", `code="429"`); v != 2 {
		t.Errorf("publisher_http_requests_total{code=429} = %v, want 2", v)
	}
	if v := p.metric("publisher_http_requests_total", `code="401"`); v != 2 {
		t.Errorf("publisher_http_requests_total{code=401} = %v, want 2", v)
	}
	checkNoSecrets(t, p, ordersTok, readerTok, sha256Hex(ordersTok), sha256Hex(readerTok))
}

// A scope changed without a restart: on SIGHUP, and when the file changes
// (no signal); a broken file keeps the apps in force, is logged and counted;
// SIGHUP reloads an unchanged file too. No token in the output.
func TestAppsReloadWithoutARestart(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q1 := brokertest.TempQueue(t, amqpURL, "apps-q1")
	q2 := brokertest.TempQueue(t, amqpURL, "apps-q2")
	dir := t.TempDir()
	tok := newToken(t)
	writeFile(t, filepath.Join(dir, "a.token"), tok)
	auth := filepath.Join(dir, "apps.yaml")
	scope := func(key string) string {
		return fmt.Sprintf("apps:\n  - {name: a, token_file: a.token, exchanges: [amq.default], routing_keys: [%q]}\n", key)
	}
	writeFile(t, auth, scope(q1))
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL, "PUBLISHER_AUTH_FILE": auth})
	p.waitReady()
	if r := p.publishAs(t, tok, q1, "m-1"); r.code != 200 {
		t.Fatalf("q1 in scope: %+v", r)
	}
	if r := p.publishAs(t, tok, q2, "m-2"); r.code != 403 {
		t.Fatalf("q2 out of scope: %+v", r)
	}
	reloads := func(result string) float64 { return p.metric("publisher_config_reloads_total", `result="`+result+`"`) }
	inScope := func(key string) func() bool {
		return func() bool { return p.publishAs(t, tok, key, "probe").code == 200 }
	}

	// SIGHUP, the file unchanged: reloaded all the same (asked).
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, waitLimit, "a reload on SIGHUP", func() bool { return reloads("success") == 1 })
	if !strings.Contains(p.Logs(), `"trigger":"request"`) {
		t.Fatal("no reload record with trigger request after SIGHUP")
	}

	// A change and SIGHUP: in force without a restart.
	writeFile(t, auth, scope(q2))
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, waitLimit, "q2 in scope after SIGHUP", inScope(q2))
	if r := p.publishAs(t, tok, q1, "m-3"); r.code != 403 {
		t.Fatalf("q1 after the reload: %+v", r)
	}

	// A change alone (no signal): seen by the poll of the file.
	before := reloads("success")
	writeFile(t, auth, scope(q1))
	poll.Within(t, waitLimit, "q1 in scope again, without a signal", inScope(q1))
	if reloads("success") != before+1 {
		t.Fatalf("reloads %v after one change, want %v", reloads("success"), before+1)
	}
	if !strings.Contains(p.Logs(), `"trigger":"change"`) {
		t.Fatal("no reload record with trigger change")
	}

	// A broken file: the apps in force stay, the error is logged and counted.
	writeFile(t, auth, "apps:\n  - {name: a, token_sha256: \""+tok+"\", exchanges: [amq.default]}\n") // the token where its digest goes
	poll.Within(t, waitLimit, "the failed reload counted", func() bool { return reloads("error") == 1 })
	if v := p.metric("publisher_config_last_reload_successful"); v != 0 {
		t.Fatalf("publisher_config_last_reload_successful %v after a failed reload", v)
	}
	if r := p.publishAs(t, tok, q1, "m-4"); r.code != 200 {
		t.Fatalf("after a broken file, the apps in force: %+v", r)
	}
	if r := p.publishAs(t, tok, q2, "m-5"); r.code != 403 {
		t.Fatalf("after a broken file, the scope in force: %+v", r)
	}
	logs := p.Logs()
	if !strings.Contains(logs, "auth file not reloaded: the apps in force stay as they were") || !strings.Contains(logs, "apps[0] (a).token_sha256") {
		t.Fatalf("the failed reload is not logged with its reason")
	}
	// Fixed: in force again, the gauge back to 1.
	writeFile(t, auth, scope(q2))
	poll.Within(t, waitLimit, "q2 in scope after the fix", inScope(q2))
	if v := p.metric("publisher_config_last_reload_successful"); v != 1 {
		t.Fatalf("publisher_config_last_reload_successful %v after a good reload", v)
	}
	if code, err := p.Stop(waitLimit); err != nil || code != 0 {
		t.Fatalf("stop: exit %d, %v", code, err)
	}
	checkNoSecrets(t, p, tok, sha256Hex(tok))
}

// A file that does not load at start is configuration: exit status 2 with
// a line naming PUBLISHER_AUTH_FILE, the file and the line or field, without
// the token; so is PUBLISHER_AUTH_FILE with PUBLISHER_AUTH_TOKEN.
func TestAppsBadFileExits2(t *testing.T) {
	dir := t.TempDir()
	tok := newToken(t)
	wrongPlace := filepath.Join(dir, "wrong-place.yaml")
	writeFile(t, wrongPlace, "apps:\n  - {name: a, token_sha256: \""+tok+"\"}\n")
	syntax := filepath.Join(dir, "syntax.yaml")
	writeFile(t, syntax, "apps:\n  - name: a\n   token_sha256: \""+tok+"\n")
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, "apps:\n  - {name: a, token_sha256: \""+sha256Hex(tok)+"\"}\n")
	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"token in place of its digest", []string{"PUBLISHER_AUTH_FILE=" + wrongPlace},
			"publisher: invalid configuration: PUBLISHER_AUTH_FILE: " + wrongPlace + ": apps[0] (a).token_sha256: want the SHA-256 of the token"},
		{"syntax", []string{"PUBLISHER_AUTH_FILE=" + syntax},
			"publisher: invalid configuration: PUBLISHER_AUTH_FILE: " + syntax + ": line "},
		{"missing", []string{"PUBLISHER_AUTH_FILE=" + filepath.Join(dir, "none.yaml")},
			"publisher: invalid configuration: PUBLISHER_AUTH_FILE: " + filepath.Join(dir, "none.yaml") + ": cannot read it"},
		{"with the token", []string{"PUBLISHER_AUTH_FILE=" + good, "PUBLISHER_AUTH_TOKEN=" + tok},
			"PUBLISHER_AUTH_FILE: set with PUBLISHER_AUTH_TOKEN or PUBLISHER_AUTH_TOKEN_FILE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(binary)
			cmd.Env = append(os.Environ(), append(c.env, "PUBLISHER_LISTEN_ADDR="+freeAddr(t), "PUBLISHER_ADMIN_ADDR="+freeAddr(t))...)
			cmd.WaitDelay = time.Second
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
				t.Fatalf("exit = %v, want status 2; output:\n%s", err, out)
			}
			if !bytes.Contains(out, []byte(c.want)) {
				t.Fatalf("output lacks %q:\n%s", c.want, out)
			}
			if bytes.Contains(out, []byte(tok)) || bytes.Contains(out, []byte(sha256Hex(tok))) {
				t.Fatalf("the output holds the token or its digest")
			}
		})
	}
}
