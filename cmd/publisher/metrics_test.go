package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/internal/promtext"
)

// specMetrics are metric names docs/operations.md's Metrics table documents (and
// Go's and the process's collectors).
var specMetrics = []string{
	"publisher_messages_total", "publisher_publish_duration_seconds", "publisher_inflight_messages",
	"publisher_buffered_messages", "publisher_republished_total", "publisher_connection_up",
	"publisher_connection_blocked", "publisher_supervision_restarts_total",
	"publisher_supervision_escalations_total", "publisher_supervision_failures_total",
	"go_goroutines", "process_resident_memory_bytes",
}

// exposed returns the metric family names in a /metrics body.
func exposed(body string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			names[strings.Fields(rest)[0]] = true
		}
	}
	return names
}

// The real service against a private broker, scraped: every metric of
// specMetrics exists and moves as it should.
func TestMetricsExistAndMove(t *testing.T) {
	node := brokertest.Start(t, brokertest.Options{})
	amqpURL := node.URL()
	q := brokertest.TempQueue(t, amqpURL, "svc-metrics")
	proxy := faultproxy.ForURL(t, amqpURL)
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":    proxy.AMQPURL(),
		"PUBLISHER_MAX_RESTARTS": "1000",
		"PUBLISHER_BACKOFF_MIN":  "10ms",
		"PUBLISHER_BACKOFF_MAX":  "100ms",
	})
	p.waitReady()
	_, body := p.mustGet("/metrics")
	names := exposed(body)
	for _, m := range specMetrics {
		if !names[m] {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if p.metric("publisher_connection_up") != 1 || p.metric("publisher_ready") != 1 {
		t.Fatal("connection_up/ready not 1 while connected")
	}

	before := p.metric("publisher_messages_total", `outcome="confirmed"`)
	for range 5 {
		if r, err := p.publish("amq.default", q, []byte("m"), nil); err != nil || r.code != 200 {
			t.Fatalf("publish: %+v %v", r, err)
		}
	}
	if got := p.metric("publisher_messages_total", `outcome="confirmed"`); got != before+5 {
		t.Fatalf("confirmed went %v -> %v after 5 publishes", before, got)
	}
	if p.metric("publisher_publish_duration_seconds_count") < 5 {
		t.Fatal("duration histogram did not count the publishes")
	}

	// Cut the connection and keep it down: connection_up drops, restarts rise.
	restarts := p.metric("publisher_supervision_restarts_total", `child="publisher"`)
	proxy.SetRefuse(true)
	proxy.CutAll()
	poll.Within(t, waitLimit, "connection_up 0", func() bool { return p.metric("publisher_connection_up") == 0 })
	poll.Within(t, waitLimit, "restarts rise", func() bool {
		return p.metric("publisher_supervision_restarts_total", `child="publisher"`) > restarts
	})
	if p.metric("publisher_ready") != 0 {
		t.Fatal("publisher_ready 1 while disconnected")
	}
	proxy.SetRefuse(false)
	poll.Within(t, waitLimit, "connection_up back to 1", func() bool { return p.metric("publisher_connection_up") == 1 })
	if p.metric("publisher_supervision_failures_total", `child="publisher"`) == 0 {
		t.Fatal("failures did not rise")
	}
}

// The series deploy/prometheus/rules_test.yml writes by hand are series the
// service exposes: the same name, and the same labels but job and instance
// (which a scrape adds) and le (the test's own buckets: histogram_quantile
// takes any). Every alert of rules.yml is tested there both firing and quiet
// (deploy's TestAlertRules; promtool test rules runs them), so an alert whose
// expression names a metric or a label value the service does not have
// cannot fire in promtool's test: together they check the rules' names
// against the real /metrics, with Prometheus's own parser and evaluator.
func TestRuleTestsUseExposedSeries(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	// With a spool, so its metrics exist too.
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL, "PUBLISHER_SPOOL_DIR": t.TempDir()})
	p.waitReady()
	exposed, err := p.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var rt struct {
		Tests []struct {
			Name        string `json:"name"`
			InputSeries []struct {
				Series string `json:"series"`
			} `json:"input_series"`
		} `json:"tests"`
	}
	file := filepath.Join("..", "..", "deploy", "prometheus", "rules_test.yml")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rt); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	checked := 0
	for _, tc := range rt.Tests {
		for _, in := range tc.InputSeries {
			// The series notation is the text format's sample line without
			// its value: the text format's parser reads it.
			parsed, err := promtext.Parse(strings.NewReader(in.Series + " 0\n"))
			if err != nil || len(parsed) != 1 {
				t.Errorf("%s: test %q: series %q: %v", file, tc.Name, in.Series, err)
				continue
			}
			m := parsed[0].Metric
			name := string(m[model.MetricNameLabel])
			if name == "up" {
				continue // Prometheus's own scrape-health series
			}
			if onlyWithClientCert[name] {
				continue
			}
			var labels []string
			for k, v := range m {
				switch k {
				case model.MetricNameLabel, model.JobLabel, model.InstanceLabel, model.BucketLabel:
				default:
					labels = append(labels, string(k)+"="+strconv.Quote(string(v)))
				}
			}
			if _, found := exposed.Sum(name, labels...); !found {
				t.Errorf("%s: test %q uses %s, which the service does not expose (no %s{%s} on /metrics)", file, tc.Name, in.Series, name, strings.Join(labels, ","))
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatalf("%s: no input series", file)
	}
	t.Logf("%d input series of %s checked against /metrics", checked, file)
}

// onlyWithClientCert are the series the service exposes only when it
// presents a client certificate to the broker (PUBLISHER_AMQP_TLS_CERT_FILE):
// absent from these tests' plain-AMQP binary, checked on a binary with a
// client certificate by TestTLSBroker (tls_test.go).
var onlyWithClientCert = map[string]bool{"publisher_tls_client_cert_expiry_timestamp_seconds": true}

// needsClientCert reports whether a PromQL expression reads a series of
// onlyWithClientCert.
func needsClientCert(expr string) bool {
	for name := range onlyWithClientCert {
		if strings.Contains(expr, name) {
			return true
		}
	}
	return false
}

// grafanaVariables rewrites the dashboard's variables as one of its queries
// sees them here: $instance at its "All" value, $__rate_interval a window
// that holds many of this test's one-second scrapes.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "1m", "$instance", ".*")

// labelValuesQuery is a Grafana variable's query label_values(selector, label).
var labelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// A real Prometheus server (Debian's package) scrapes the running service
// (with a spool, so every metric exists) and loads deploy/prometheus/rules.yml:
// the series read back through its HTTP API; every expression of the Grafana
// dashboard, evaluated by Prometheus, returns data (a misspelled metric or
// label, or a broken query, returns none or an error: that panel would show
// "No data"), and so does its instance variable's query; every alert rule
// evaluates without error against the real series.
func TestDashboardAndRulesAgainstPrometheus(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus not installed (scripts/ensure-deps.sh installs it)")
		}
		t.Skip("prometheus not installed")
	}
	amqpURL := brokertest.SharedURL(t)
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL, "PUBLISHER_SPOOL_DIR": t.TempDir()})
	p.waitReady()
	rules, err := filepath.Abs(filepath.Join("..", "..", "deploy", "prometheus", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	prom := startPrometheus(t, promBin, strings.TrimPrefix(p.admin, "http://"), rules)

	// Three scrapes: every rate() over 1m has two samples or more.
	poll.Within(t, waitLimit, "prometheus to have scraped the service three times", func() bool {
		v, err := prom.query(`count_over_time(up{job="publisher"}[1m]) >= 3`)
		if err != nil {
			t.Fatal(err)
		}
		return len(v) == 1
	})
	v, err := prom.query(`publisher_connection_up{job="publisher"}`)
	if err != nil || len(v) != 1 || v[0].Value[1] != "1" {
		t.Fatalf("publisher_connection_up through Prometheus: %+v %v, want one series at 1", v, err)
	}

	t.Run("dashboard", func(t *testing.T) {
		file := filepath.Join("..", "..", "deploy", "grafana", "dashboards", "publisher.json")
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var dash struct {
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Query struct {
						Query string `json:"query"`
					} `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &dash); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		exprs, err := dashboardExprs(b)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(exprs) == 0 {
			t.Fatalf("%s: no expressions", file)
		}
		for _, e := range exprs {
			q := grafanaVariables.Replace(e)
			if strings.Contains(q, "$") {
				t.Errorf("%q: a Grafana variable this test does not know", e)
				continue
			}
			v, err := prom.query(q)
			switch {
			case err != nil:
				t.Errorf("%q: %v", e, err)
			case len(v) == 0 && !needsClientCert(e):
				t.Errorf("%q returns no data against the service's real series", e)
			}
		}
		for _, tv := range dash.Templating.List {
			m := labelValuesQuery.FindStringSubmatch(tv.Query.Query)
			if m == nil {
				t.Errorf("variable %s: query %q is not label_values(selector, label)", tv.Name, tv.Query.Query)
				continue
			}
			series, err := prom.series(m[1])
			if err != nil {
				t.Errorf("variable %s: %v", tv.Name, err)
				continue
			}
			n := 0
			for _, s := range series {
				if s[m[2]] != "" {
					n++
				}
			}
			if n == 0 {
				t.Errorf("variable %s: %q yields no value of %s", tv.Name, tv.Query.Query, m[2])
			}
		}
		t.Logf("%d dashboard expressions evaluated", len(exprs))
	})

	t.Run("rules", func(t *testing.T) {
		var rf struct {
			Groups []struct {
				Rules []struct {
					Alert string `json:"alert"`
				} `json:"rules"`
			} `json:"groups"`
		}
		b, err := os.ReadFile(rules)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &rf); err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, g := range rf.Groups {
			want += len(g.Rules)
		}
		var loaded []promRule
		poll.Within(t, waitLimit, "every rule evaluated once", func() bool {
			loaded, err = prom.rules()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range loaded {
				if r.Health == "unknown" {
					return false
				}
			}
			return len(loaded) > 0
		})
		if len(loaded) != want {
			t.Errorf("Prometheus loaded %d rules, rules.yml has %d", len(loaded), want)
		}
		for _, r := range loaded {
			if r.Health != "ok" {
				t.Errorf("rule %s: health %s: %s", r.Name, r.Health, r.LastError)
			}
		}
	})
}

// dashboardExprs returns every non-empty "expr" string of a Grafana
// dashboard, wherever it is (panels, rows, targets).
func dashboardExprs(dashboard []byte) ([]string, error) {
	var doc any
	if err := json.Unmarshal(dashboard, &doc); err != nil {
		return nil, err
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if s, ok := c.(string); ok && k == "expr" && strings.TrimSpace(s) != "" {
					exprs = append(exprs, s)
					continue
				}
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(doc)
	slices.Sort(exprs)
	return exprs, nil
}

// prometheusServer is a Prometheus process of a test.
type prometheusServer struct {
	base string // http://127.0.0.1:port
}

// startPrometheus starts Prometheus scraping target (host:port) every second
// as job "publisher", evaluating ruleFile every second. It is killed when the
// test ends (its log is shown when the test failed).
func startPrometheus(t *testing.T, bin, target, ruleFile string) *prometheusServer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [%q]\n"+
		"scrape_configs:\n  - job_name: publisher\n    static_configs:\n      - targets: [%q]\n", ruleFile, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+listen)
	out, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		out.Close()
		if t.Failed() {
			b, err := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log (%v):\n%s", err, b)
		}
	})
	ps := &prometheusServer{base: "http://" + listen}
	poll.Within(t, waitLimit, "prometheus ready", func() bool {
		resp, err := http.Get(ps.base + "/-/ready")
		if err != nil {
			return false // not listening yet
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return ps
}

// promSample is one series of an instant vector: its labels and [time, "value"].
type promSample struct {
	Metric map[string]string
	Value  []any
}

// promRule is one rule as /api/v1/rules reports it.
type promRule struct {
	Name      string `json:"name"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// api GETs path (with query) from Prometheus's HTTP API and decodes its data
// into data; an error for a transport failure or an answer other than
// status "success" (a query that does not parse is "bad_data").
func (ps *prometheusServer) api(path string, query url.Values, data any) error {
	resp, err := http.Get(ps.base + path + "?" + query.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("%s: HTTP %d: %w", path, resp.StatusCode, err)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	return json.Unmarshal(r.Data, data)
}

// query evaluates expr now and returns its instant vector.
func (ps *prometheusServer) query(expr string) ([]promSample, error) {
	var data struct {
		ResultType string       `json:"resultType"`
		Result     []promSample `json:"result"`
	}
	if err := ps.api("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", data.ResultType)
	}
	return data.Result, nil
}

// series returns the label sets of the series selector matches.
func (ps *prometheusServer) series(selector string) ([]map[string]string, error) {
	var data []map[string]string
	err := ps.api("/api/v1/series", url.Values{"match[]": {selector}}, &data)
	return data, err
}

// rules returns every rule Prometheus loaded.
func (ps *prometheusServer) rules() ([]promRule, error) {
	var data struct {
		Groups []struct {
			Rules []promRule `json:"rules"`
		} `json:"groups"`
	}
	if err := ps.api("/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	var all []promRule
	for _, g := range data.Groups {
		all = append(all, g.Rules...)
	}
	return all, nil
}
