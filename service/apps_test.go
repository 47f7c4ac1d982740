package service

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/fakeamqp"
	"github.com/publisher-dev/publisher/internal/poll"
)

const appToken = "Zq8/app+token="

func appDigest() string {
	d := sha256.Sum256([]byte(appToken))
	return hex.EncodeToString(d[:])
}

func writeAuthFile(t *testing.T, path, doc string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
}

// PUBLISHER_AUTH_FILE with PUBLISHER_AUTH_TOKEN(_FILE) is a configuration
// error (one or the other); a file that does not load is one too, named by
// the variable, the path and the field, without the token.
func TestAuthFileConfiguration(t *testing.T) {
	checkLeaks(t)
	for _, c := range []Config{
		{AuthFile: "apps.yaml", AuthToken: "s3cret"},
		{AuthFile: "apps.yaml", AuthTokenFile: "token"},
	} {
		err := c.withDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), "PUBLISHER_AUTH_FILE: set with PUBLISHER_AUTH_TOKEN or PUBLISHER_AUTH_TOKEN_FILE") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Validate = %v", err)
		}
	}
	tmp := t.TempDir()
	bad := filepath.Join(tmp, "apps.yaml")
	writeAuthFile(t, bad, "apps:\n  - {name: a, token_sha256: "+appToken+"}\n") // the token, not its digest
	cases := []struct{ path, want string }{
		{filepath.Join(tmp, "missing.yaml"), "PUBLISHER_AUTH_FILE: " + filepath.Join(tmp, "missing.yaml") + ": cannot read it"},
		{bad, "PUBLISHER_AUTH_FILE: " + bad + ": apps[0] (a).token_sha256: want the SHA-256 of the token"},
	}
	for _, tt := range cases {
		c := (Config{AuthFile: tt.path}).withDefaults()
		err := c.prepare()
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), appToken) {
			t.Errorf("prepare = %v, want an error containing %q and not the token", err, tt.want)
		}
		cfg := testConfig()
		cfg.AuthFile = tt.path
		if _, err := newService(cfg, Options{Logger: discard()}, (&fakeamqp.Broker{}).Dial); !errors.Is(err, ErrConfig) {
			t.Errorf("New = %v, want ErrConfig", err)
		}
	}
}

// The service with PUBLISHER_AUTH_FILE: the file's apps are in force, a
// reload asked (SIGHUP's ReloadAuth) changes a scope without a restart, a
// broken file keeps them and is counted as an error, and the series of the
// apps exist from the start.
func TestAuthFileReload(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "apps.yaml")
	writeAuthFile(t, path, `apps: [{name: orders, token_sha256: "`+appDigest()+`", exchanges: [amq.default], routing_keys: [q]}]`)
	cfg := testConfig()
	cfg.AuthFile = path
	b := &fakeamqp.Broker{}
	r := start(t, cfg, b)
	poll.Within(t, 10*time.Second, "ready", func() bool { c, _ := r.get("/readyz"); return c == 200 })
	post := func(key, token string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+r.APIAddr()+"/v1/publish/amq.default/"+key, strings.NewReader("x"))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post("q", appToken); c != 200 {
		t.Fatalf("in scope: %d", c)
	}
	if c := post("q", ""); c != 401 {
		t.Fatalf("without a token: %d", c)
	}
	if c := post("r", appToken); c != 403 {
		t.Fatalf("out of scope: %d", c)
	}
	if v := r.sample(t, "publisher_app_messages_total", `app="orders"`, `code="200"`); v != 1 {
		t.Fatalf("orders' 200s: %v", v)
	}

	writeAuthFile(t, path, `apps: [{name: orders, token_sha256: "`+appDigest()+`", exchanges: [amq.default], routing_keys: [r]}]`)
	r.ReloadAuth()
	poll.Within(t, 10*time.Second, "the reload counted", func() bool {
		return r.sample(t, "publisher_config_reloads_total", `result="success"`) == 1
	})
	if c := post("r", appToken); c != 200 {
		t.Fatalf("in the new scope: %d", c)
	}
	if c := post("q", appToken); c != 403 {
		t.Fatalf("out of the new scope: %d", c)
	}

	writeAuthFile(t, path, `apps: [{name: orders, token_sha256: "`+appDigest()+`", exchanges: [amq.default], routing_keys: []}]`)
	r.ReloadAuth()
	poll.Within(t, 10*time.Second, "the failed reload counted", func() bool {
		return r.sample(t, "publisher_config_reloads_total", `result="error"`) == 1
	})
	if v := r.sample(t, "publisher_config_last_reload_successful"); v != 0 {
		t.Fatalf("publisher_config_last_reload_successful %v after a failed reload", v)
	}
	if c := post("r", appToken); c != 200 {
		t.Fatalf("after a broken file, the apps in force: %d", c)
	}
}

// sample is the value of the one series of name with labels on the
// service's registry; the test fails when there is not exactly one.
func (r *running) sample(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found []float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			have := map[string]bool{}
			for _, l := range m.GetLabel() {
				have[l.GetName()+`="`+l.GetValue()+`"`] = true
			}
			all := true
			for _, l := range labels {
				all = all && have[l]
			}
			if !all {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				found = append(found, m.GetCounter().GetValue())
			case m.GetGauge() != nil:
				found = append(found, m.GetGauge().GetValue())
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d series", name, labels, len(found))
	}
	return found[0]
}
