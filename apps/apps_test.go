package apps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/internal/syncbuf"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func digestHex(token string) string {
	d := sha256.Sum256([]byte(token))
	return hex.EncodeToString(d[:])
}

func digestOf(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// noFiles is a readToken for files without token_file.
func noFiles(path string) ([]byte, error) {
	return nil, fmt.Errorf("cannot read %s: %w", path, fs.ErrNotExist)
}

func mustParse(t *testing.T, doc string, files map[string]string) *Set {
	t.Helper()
	s, err := Parse([]byte(doc), func(p string) ([]byte, error) {
		if v, ok := files[p]; ok {
			return []byte(v), nil
		}
		return noFiles(p)
	})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

func TestParse(t *testing.T) {
	doc := `
apps:
  - name: orders
    token_sha256: "` + digestHex("orders-token") + `"
    exchanges: [events, amq.default]
    routing_keys: ["orders.#", "audit.*"]
    rate: 2.5
  - name: billing
    token_file: billing.token
    exchanges: ["*"]
    rate: 10
    burst: 3
  - name: idle
    token_sha256: "` + strings.ToUpper(digestHex("idle-token")) + `"
`
	s := mustParse(t, doc, map[string]string{"billing.token": "  billing-token\n"})
	if got := s.Names(); !equal(got, []string{"orders", "billing", "idle"}) {
		t.Fatalf("names %v", got)
	}
	if !s.Authenticates() || s.Anonymous() != nil {
		t.Fatal("a file's Set must authenticate")
	}
	orders := s.Lookup(digestOf("orders-token"))
	billing := s.Lookup(digestOf("billing-token")) // the file's content, trimmed
	idle := s.Lookup(digestOf("idle-token"))       // upper-case hex is hex
	if orders == nil || orders.Name() != "orders" || billing == nil || billing.Name() != "billing" || idle == nil || idle.Name() != "idle" {
		t.Fatalf("lookup: %v %v %v", orders, billing, idle)
	}
	if s.Lookup(digestOf("  billing-token\n")) != nil || s.Lookup(digestOf("")) != nil {
		t.Fatal("a token that is no app's found an app")
	}
	for _, c := range []struct {
		app      *App
		exchange string
		want     bool
	}{
		{orders, "events", true}, {orders, "", true}, {orders, "amq.default", false}, {orders, "billing", false},
		{billing, "anything", true}, {billing, "", true},
		{idle, "events", false}, {idle, "", false},
	} {
		if got := c.app.AllowsExchange(c.exchange); got != c.want {
			t.Errorf("%s may publish to %q: %v, want %v", c.app.Name(), c.exchange, got, c.want)
		}
	}
	for _, c := range []struct {
		key  string
		want bool
	}{{"orders", true}, {"orders.created.eu", true}, {"audit.x", true}, {"audit", false}, {"audit.x.y", false}, {"billing.x", false}, {"", false}} {
		if got := orders.AllowsRoutingKey(c.key); got != c.want {
			t.Errorf("orders may use routing key %q: %v, want %v", c.key, got, c.want)
		}
	}
	if !billing.AllowsRoutingKey("") || !billing.AllowsRoutingKey("x.y") {
		t.Error("an app without routing_keys must take every routing key")
	}
	// Rates: burst defaults to the rate rounded up.
	if orders.Rate() != 2.5 || orders.Burst() != 3 || !orders.Limited() {
		t.Errorf("orders: rate %v burst %v", orders.Rate(), orders.Burst())
	}
	if billing.Rate() != 10 || billing.Burst() != 3 {
		t.Errorf("billing: rate %v burst %v", billing.Rate(), billing.Burst())
	}
	if idle.Limited() || !math.IsInf(idle.Rate(), 1) || idle.Burst() != 0 {
		t.Errorf("idle: limited %v rate %v burst %v", idle.Limited(), idle.Rate(), idle.Burst())
	}
	if w := s.Warnings(); len(w) != 1 || !strings.Contains(w[0], "apps[2] (idle) has no exchanges: it can publish nowhere") {
		t.Errorf("warnings %q", w)
	}

	// The same in JSON.
	js := `{"apps": [{"name": "orders", "token_sha256": "` + digestHex("orders-token") + `", "exchanges": ["events"], "rate": 0.5}]}`
	s = mustParse(t, js, nil)
	if a := s.Lookup(digestOf("orders-token")); a == nil || a.Burst() != 1 || a.Rate() != 0.5 || !a.AllowsExchange("events") {
		t.Fatalf("JSON: %+v", a)
	}
	if w := mustParse(t, "apps: []", nil).Warnings(); len(w) != 1 || !strings.Contains(w[0], "no apps") {
		t.Errorf("empty file warnings %q", w)
	}
	// Without a readToken, a token_file is an error, not a panic.
	if _, err := Parse([]byte("apps: [{name: a, token_file: t}]"), nil); err == nil || !strings.Contains(err.Error(), "apps[0] (a).token_file: cannot read t") {
		t.Errorf("token_file without readToken: %v", err)
	}
}

func equal(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

// Every problem is named: the line of a syntax error, else the app's index
// (and name when it is valid) and the field.
func TestParseErrors(t *testing.T) {
	ok := `token_sha256: "` + digestHex("t") + `"`
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"empty", ``, []string{`want an object with an "apps" list`}},
		{"not an object", `[1, 2]`, []string{`want an object`}},
		{"syntax", "apps:\n  - name: a\n   token: [\n", []string{"line "}},
		{"json syntax", `{"apps": [}`, []string{"not valid: did not find expected node content"}},
		{"duplicate key", "apps:\n  - name: a\n    name: b\n", []string{"line 3: a field given twice"}},
		{"top unknown", "apps: []\nap: 1\n", []string{"an unknown field at the top"}},
		{"apps not a list", "apps: 3\n", []string{`want an "apps" list`}},
		{"app not an object", "apps: [3]\n", []string{"apps[0]: want an object with the fields name,"}},
		{"unknown field", "apps:\n  - {name: a, " + ok + ", tokn: x}\n", []string{"apps[0] (a): an unknown field (the fields are name, token_sha256"}},
		{"no name", "apps:\n  - {" + ok + "}\n", []string{"apps[0]: name is required"}},
		{"bad name", "apps:\n  - {name: 'a b', " + ok + "}\n", []string{"apps[0].name: want 1 to 64 letters"}},
		{"long name", "apps:\n  - {name: " + strings.Repeat("a", 65) + ", " + ok + "}\n", []string{"apps[0].name: want 1 to 64"}},
		{"duplicate name", "apps:\n  - {name: a, " + ok + "}\n  - {name: a, token_sha256: '" + digestHex("u") + "'}\n", []string{"apps[1] (a): the name of apps[0] too"}},
		{"no token", "apps:\n  - {name: a}\n", []string{"apps[0] (a): token_sha256 or token_file is required"}},
		{"both tokens", "apps:\n  - {name: a, " + ok + ", token_file: f}\n", []string{"apps[0] (a): give token_sha256 or token_file, not both"}},
		{"short digest", "apps:\n  - {name: a, token_sha256: 'abc'}\n", []string{"apps[0] (a).token_sha256: want the SHA-256 of the token as 64 hexadecimal digits"}},
		{"digest a number", "apps:\n  - {name: a, token_sha256: 12}\n", []string{"apps[0] (a).token_sha256: want"}},
		{"duplicate token", "apps:\n  - {name: a, " + ok + "}\n  - {name: b, " + ok + "}\n", []string{"apps[1] (b): the token of apps[0] too"}},
		{"token file missing", "apps:\n  - {name: a, token_file: gone}\n", []string{"apps[0] (a).token_file: cannot read gone"}},
		{"token file empty", "apps:\n  - {name: a, token_file: empty}\n", []string{"apps[0] (a).token_file: empty is empty"}},
		{"exchanges not a list", "apps:\n  - {name: a, " + ok + ", exchanges: events}\n", []string{"apps[0] (a).exchanges: want a list"}},
		{"bad exchange", "apps:\n  - {name: a, " + ok + ", exchanges: [ok, 'a b', '']}\n", []string{"apps[0] (a).exchanges[1]: want an exchange name", "apps[0] (a).exchanges[2]: want"}},
		{"yaml 1.1 boolean", "apps:\n  - {name: a, " + ok + ", exchanges: [on]}\n", []string{"apps[0] (a).exchanges[0]: want an exchange name", "in quotes"}},
		{"empty routing_keys", "apps:\n  - {name: a, " + ok + ", routing_keys: []}\n", []string{"apps[0] (a).routing_keys: an empty list"}},
		{"long routing key", "apps:\n  - {name: a, " + ok + ", routing_keys: [" + strings.Repeat("k", 256) + "]}\n", []string{"apps[0] (a).routing_keys[0]: want an AMQP topic pattern of at most 255 bytes"}},
		{"zero rate", "apps:\n  - {name: a, " + ok + ", rate: 0}\n", []string{"apps[0] (a).rate: want a positive number"}},
		{"negative rate", "apps:\n  - {name: a, " + ok + ", rate: -1}\n", []string{"apps[0] (a).rate: want a positive number"}},
		{"rate a string", "apps:\n  - {name: a, " + ok + ", rate: fast}\n", []string{"apps[0] (a).rate: want a positive number"}},
		{"burst without rate", "apps:\n  - {name: a, " + ok + ", burst: 3}\n", []string{"apps[0] (a).burst: given without a rate"}},
		{"fractional burst", "apps:\n  - {name: a, " + ok + ", rate: 1, burst: 1.5}\n", []string{"apps[0] (a).burst: want a whole number"}},
		{"zero burst", "apps:\n  - {name: a, " + ok + ", rate: 1, burst: 0}\n", []string{"apps[0] (a).burst: want a whole number"}},
		{"several", "apps:\n  - {name: a}\n  - {name: b, " + ok + ", rate: 0}\n", []string{"apps[0] (a): token_sha256 or token_file is required", "apps[1] (b).rate"}},
	}
	files := map[string]string{"empty": " \n"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc), func(p string) ([]byte, error) {
				if v, ok := files[p]; ok {
					return []byte(v), nil
				}
				return noFiles(p)
			})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// secret is the token the tests below put everywhere a token could be
// misplaced: no error or log record may ever hold it, nor its digest. An
// app's name is quoted, by design; '/', '+' and '=' (as in a base64 token)
// keep this one from ever being a valid name.
const secret = "Zq8/very+secret=token-7Hk"

func checkNoSecret(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range []string{secret, digestHex(secret), strings.ToUpper(digestHex(secret))} {
		if strings.Contains(text, s) {
			t.Errorf("%s holds the token or its digest: %q", what, text)
		}
	}
}

// A token put where it does not belong, in files broken every way, is never
// quoted by the error.
func TestErrorsNeverQuoteTheFile(t *testing.T) {
	docs := []string{
		"apps:\n  - {name: a, token_sha256: " + secret + "}\n",                              // the token, not its digest
		"apps:\n  - {name: " + secret + "x y, token_sha256: '" + digestHex("t") + "'}\n",    // in an invalid name
		"apps:\n  - {name: a, token_sha256: '" + digestHex("t") + "', " + secret + ": 1}\n", // as a field
		secret + ": 1\napps: []\n",                                                                       // as a top-level field
		"apps:\n  - name: a\n    " + secret + "\n",                                                       // a syntax error around it
		"apps:\n  - {name: a, token_sha256: \"" + secret + "\\q\"}\n",                                    // a bad escape next to it
		"apps:\n  - {name: a, token_sha256: '" + digestHex("t") + "', exchanges: ['" + secret + "!']}\n", // a bad exchange
		"apps:\n  - {name: a, token_sha256: '" + digestHex("t") + "', rate: " + secret + "}\n",           // a bad rate
		"apps:\n  - {name: a, token_sha256: '" + digestHex("t") + "', routing_keys: [" + strings.Repeat(secret, 20) + "]}\n",
		"apps:\n  - {name: a, token_sha256: '" + digestHex(secret) + "'}\n  - {name: b, token_sha256: '" + digestHex(secret) + "'}\n", // a duplicate digest
		"apps:\n  - {name: a, token_file: " + secret + "}\n",                                                                          // a file named like it: the path is named, so this one may be quoted...
		"apps:\n  ? [" + secret + "]\n  : x\n",                                                                                        // a key YAML cannot turn into JSON
		"apps:\n  - &" + secret + " {name: a}\n  - *" + secret + "x\n",                                                                // an unknown anchor
		"{\"apps\": [{\"name\": \"a\", \"token_sha256\": \"" + secret + "}]}",                                                         // unterminated JSON string
		"apps:\n  - {name: a, name: " + secret + "}\n",                                                                                // a duplicate key
	}
	for i, doc := range docs {
		_, err := Parse([]byte(doc), func(p string) ([]byte, error) {
			if p == "tok" {
				return []byte(secret), nil
			}
			return noFiles(p)
		})
		if err == nil {
			t.Errorf("doc %d: no error", i)
			continue
		}
		if strings.Contains(doc, "token_file: "+secret) {
			continue // the path is what the operator wrote as a path; it is named
		}
		checkNoSecret(t, fmt.Sprintf("doc %d's error", i), err.Error())
	}
}

// FuzzParseNeverQuotesTheToken: whatever the file, with the token inserted
// anywhere in it and held by every token file, an error never quotes the
// token.
func FuzzParseNeverQuotesTheToken(f *testing.F) {
	f.Add([]byte("apps:\n  - {name: a, token_sha256: X}\n"), uint(30))
	f.Add([]byte("apps:\n  - name: a\n    token_file: tok\n    exchanges: [X]\n"), uint(60))
	f.Add([]byte(`{"apps":[{"name":"a","rate":X}]}`), uint(25))
	f.Add([]byte("apps: [\n"), uint(7))
	f.Fuzz(func(t *testing.T, doc []byte, at uint) {
		i := int(at % uint(len(doc)+1))
		in := append(append(append([]byte(nil), doc[:i]...), secret...), doc[i:]...)
		_, err := Parse(in, func(p string) ([]byte, error) { return []byte(secret), nil })
		if err != nil && !bytes.Contains(in, []byte("token_file")) {
			checkNoSecret(t, "the error", err.Error())
		}
	})
}

func TestLookup(t *testing.T) {
	var doc strings.Builder
	doc.WriteString("apps:\n")
	for i := range 50 {
		fmt.Fprintf(&doc, "  - {name: app%d, token_sha256: '%s'}\n", i, digestHex(fmt.Sprint("token-", i)))
	}
	s := mustParse(t, doc.String(), nil)
	for _, i := range []int{0, 1, 25, 49} {
		if a := s.Lookup(digestOf(fmt.Sprint("token-", i))); a == nil || a.Name() != fmt.Sprint("app", i) {
			t.Errorf("token-%d: %v", i, a)
		}
	}
	for _, miss := range []string{"", "token-", "token-50", "token-1 "} {
		if a := s.Lookup(digestOf(miss)); a != nil {
			t.Errorf("%q found %s", miss, a.Name())
		}
	}
	d := digestOf("token-49")
	if n := testing.AllocsPerRun(100, func() { s.Lookup(d) }); n != 0 {
		t.Errorf("Lookup allocates %v times", n)
	}
	if s.ByName("app7") == nil || s.ByName("app50") != nil {
		t.Error("ByName")
	}

	single := Single("tok")
	if a := single.Lookup(digestOf("tok")); a == nil || a.Name() != Default || !a.AllowsExchange("x") || !a.AllowsRoutingKey("y") || a.Limited() {
		t.Errorf("Single: %+v", a)
	}
	if single.Lookup(digestOf("tok2")) != nil || !single.Authenticates() {
		t.Error("Single takes another token")
	}
	open := Open()
	if open.Authenticates() || open.Anonymous() == nil || open.Anonymous().Name() != Anonymous || open.Lookup(digestOf("")) != nil {
		t.Errorf("Open: %+v", open)
	}
}

// Take and Reserve on a fake clock: the bucket starts full, refills at the
// rate, a request over what it holds takes nothing and is told how long to
// wait, one over its burst is ErrBurst; reservations queue behind each other.
func TestBuckets(t *testing.T) {
	s := mustParse(t, "apps:\n  - {name: a, token_sha256: '"+digestHex("t")+"', exchanges: ['*'], rate: 2, burst: 4}\n", nil)
	a := s.ByName("a")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if w, err := a.Take(t0, 3); w != 0 || err != nil {
		t.Fatalf("3 of a full bucket of 4: wait %v, %v", w, err)
	}
	if w, err := a.Take(t0, 5); w != 0 || !errors.Is(err, ErrBurst) {
		t.Fatalf("5 over a burst of 4: %v, %v", w, err)
	}
	// 1 left: 3 more need 2 tokens at 2/s: 1s.
	if w, err := a.Take(t0, 3); w != time.Second || err != nil {
		t.Fatalf("3 of 1: wait %v, %v; want 1s", w, err)
	}
	// Nothing was taken by the refusal: the 1 left is still there.
	if w, _ := a.Take(t0, 1); w != 0 {
		t.Fatalf("the last token: wait %v", w)
	}
	if w, _ := a.Take(t0, 1); w != 500*time.Millisecond {
		t.Fatalf("an empty bucket at 2/s: wait %v, want 500ms", w)
	}
	t1 := t0.Add(500 * time.Millisecond)
	if w, _ := a.Take(t1, 1); w != 0 {
		t.Fatalf("after 500ms: wait %v", w)
	}
	// Reservations: each is served after the one before, at the rate.
	for i, want := range []time.Duration{500 * time.Millisecond, time.Second, 1500 * time.Millisecond} {
		if d, _ := a.Reserve(t1); d != want {
			t.Fatalf("reservation %d: delay %v, want %v", i, d, want)
		}
	}
	// A Take behind them waits for them too.
	if w, _ := a.Take(t1, 1); w != 2*time.Second {
		t.Fatalf("a take behind three reservations: %v, want 2s", w)
	}
	d, res := a.Reserve(t1)
	if d != 2*time.Second {
		t.Fatalf("4th reservation: %v", d)
	}
	res.Cancel(t1)
	if d, _ := a.Reserve(t1); d != 2*time.Second {
		t.Fatalf("after a cancel the next reservation waits %v, want the cancelled one's 2s", d)
	}
	// Much later the bucket is full again, never more than its burst.
	t2 := t1.Add(time.Hour)
	if w, _ := a.Take(t2, 4); w != 0 {
		t.Fatalf("a refilled bucket: %v", w)
	}
	if w, _ := a.Take(t2, 1); w == 0 {
		t.Fatal("the bucket held more than its burst")
	}
	// No rate: never waits.
	free := Open().Anonymous()
	if w, err := free.Take(t0, 1<<20); w != 0 || err != nil {
		t.Fatalf("no rate: %v %v", w, err)
	}
	if d, r := free.Reserve(t0); d != 0 {
		t.Fatalf("no rate: delay %v", d)
	} else {
		r.Cancel(t0)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Load refuses a file or a token file over its limit (a path named by
// mistake) rather than reading it without end, and names it without its
// content.
func TestLoadLimits(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.token")
	writeFile(t, big, strings.Repeat(secret, 200)) // 5 KB
	path := filepath.Join(dir, "auth.yaml")
	writeFile(t, path, "apps:\n  - {name: a, token_file: big.token}\n")
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), "apps[0] (a).token_file: cannot read "+big+": larger than a file of this kind can be (4096 bytes at most)") {
		t.Fatalf("Load = %v", err)
	}
	checkNoSecret(t, "the error", err.Error())
	writeFile(t, path, "apps: []\n#"+strings.Repeat("x", 4<<20))
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path+": cannot read it: larger than") {
		t.Fatalf("Load of a 4 MiB file = %v", err)
	}
}

// The Registry under testing/synctest (its poll ticker on the bubble's
// clock): a change of the file or of a token file is in force within one
// poll; an unchanged file is not reloaded; a broken file keeps the Set in
// force and is reported once per version; Reload reloads at once, changed or
// not; buckets are carried over by name; nothing logged holds a token.
func TestRegistry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "auth.yaml")
		tokenPath := filepath.Join(dir, "a.token")
		writeFile(t, tokenPath, secret+"\n")
		v1 := "apps:\n  - {name: a, token_file: a.token, exchanges: [ex1], rate: 0.01, burst: 2}\n"
		writeFile(t, path, v1)
		first, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		var logs syncbuf.Buffer
		type reload struct {
			names []string
			err   error
		}
		var mu sync.Mutex
		var reloads []reload
		r := NewRegistry(path, first, Options{
			PollInterval: time.Second,
			Logger:       slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			OnReload: func(s *Set, err error) {
				mu.Lock()
				defer mu.Unlock()
				var names []string
				if s != nil {
					names = s.Names()
				}
				reloads = append(reloads, reload{names, err})
			},
		})
		took := func() []reload {
			mu.Lock()
			defer mu.Unlock()
			out := reloads
			reloads = nil
			return out
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- r.Serve(ctx) }()
		stopped := false
		defer func() {
			if !stopped {
				cancel()
				<-done
			}
		}()
		app := func() *App { return r.Current().Lookup(digestOf(secret)) }
		if a := app(); a == nil || !a.AllowsExchange("ex1") {
			t.Fatal("the first Set is not in force")
		}
		// Empty the bucket of a: 2 tokens.
		if w, _ := app().Take(time.Now(), 2); w != 0 {
			t.Fatal("a full bucket refused")
		}

		// Unchanged: polled, not reloaded.
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := took(); len(got) != 0 {
			t.Fatalf("an unchanged file was reloaded: %+v", got)
		}

		// A change of scope (and burst): in force within one poll, with a's
		// bucket carried over (still empty: 0.04 tokens came in 4s at 0.01/s).
		writeFile(t, path, "apps:\n  - {name: a, token_file: a.token, exchanges: [ex2], rate: 0.01, burst: 3}\n")
		time.Sleep(time.Second)
		synctest.Wait()
		if got := took(); len(got) != 1 || got[0].err != nil || !equal(got[0].names, []string{"a"}) {
			t.Fatalf("reloads after a change: %+v (%v)", got, got[0].err)
		}
		if a := app(); a == nil || a.AllowsExchange("ex1") || !a.AllowsExchange("ex2") || a.Burst() != 3 {
			t.Fatalf("the new scope is not in force: %+v", a)
		}
		if w, _ := app().Take(time.Now(), 1); w == 0 {
			t.Fatal("the reload refilled the bucket")
		}

		// Broken: the Set in force stays; reported once for this version.
		writeFile(t, path, "apps:\n  - {name: a, token_file: a.token, exchanges: [ex3], rate: 0}\n")
		time.Sleep(5 * time.Second)
		synctest.Wait()
		got := took()
		if len(got) != 1 || got[0].err == nil || !strings.Contains(got[0].err.Error(), "apps[0] (a).rate") {
			t.Fatalf("reloads of a broken file: %+v", got)
		}
		if a := app(); a == nil || !a.AllowsExchange("ex2") {
			t.Fatal("a broken file replaced the Set in force")
		}
		// Reload asks again, and the same error is reported again.
		r.Reload()
		synctest.Wait()
		if got := took(); len(got) != 1 || got[0].err == nil {
			t.Fatalf("an asked reload of a broken file: %+v", got)
		}

		// The token file changes: the old token no longer works, the new one does.
		writeFile(t, path, "apps:\n  - {name: a, token_file: a.token, exchanges: [ex3]}\n")
		writeFile(t, tokenPath, "new-"+secret)
		time.Sleep(time.Second)
		synctest.Wait()
		if got := took(); len(got) != 1 || got[0].err != nil {
			t.Fatalf("reload after a fix: %+v", got)
		}
		if app() != nil {
			t.Fatal("the old token still works")
		}
		if a := r.Current().Lookup(digestOf("new-" + secret)); a == nil || !a.AllowsExchange("ex3") || a.Limited() {
			t.Fatalf("the new token: %+v", a)
		}
		// Asked with nothing changed: reloaded all the same.
		r.Reload()
		synctest.Wait()
		if got := took(); len(got) != 1 || got[0].err != nil {
			t.Fatalf("an asked reload: %+v", got)
		}
		// The file gone: an error, the Set stays.
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := took(); len(got) != 1 || got[0].err == nil || !errors.Is(got[0].err, fs.ErrNotExist) {
			t.Fatalf("a removed file: %+v", got)
		}
		if r.Current().Lookup(digestOf("new-"+secret)) == nil {
			t.Fatal("a removed file emptied the Set")
		}

		cancel()
		stopped = true
		if err := <-done; err != nil {
			t.Fatalf("Serve: %v", err)
		}
		out := logs.String()
		for _, want := range []string{"auth file reloaded", "auth file not reloaded: the apps in force stay as they were", "apps[0] (a).rate"} {
			if !strings.Contains(out, want) {
				t.Errorf("the log lacks %q:\n%s", want, out)
			}
		}
		checkNoSecret(t, "the log", out)
	})
}
