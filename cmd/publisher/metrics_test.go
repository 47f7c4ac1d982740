package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/internal/promnames"
)

// specMetrics are the metric names SPEC.md fixes.
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

// The real service against a private broker, scraped: every SPEC metric
// exists and moves as it should.
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

// No dashboard panel or alert rule uses a metric the service does not expose.
func TestDashboardAndRulesUseExposedMetrics(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	// With a spool, so its metrics exist too.
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL, "PUBLISHER_SPOOL_DIR": t.TempDir()})
	p.waitReady()
	_, body := p.mustGet("/metrics")
	names := exposed(body)
	check := func(file string, extract func([]byte) ([]string, error)) {
		b, err := os.ReadFile(filepath.Join("..", "..", file))
		if err != nil {
			t.Fatal(err)
		}
		used, err := extract(b)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(used) == 0 {
			t.Fatalf("%s: no metric names found", file)
		}
		for _, n := range used {
			if n == "up" {
				continue // Prometheus's own scrape-health series
			}
			if !names[promnames.BaseName(n)] && !names[n] {
				t.Errorf("%s uses %s, which /metrics does not expose", file, n)
			}
		}
	}
	check("deploy/grafana/dashboards/publisher.json", promnames.FromDashboard)
	check("deploy/prometheus/rules.yml", promnames.FromRules)
}

// A real Prometheus server (Debian's package) scrapes the running service and
// the series reads back through its HTTP API.
func TestPrometheusScrapesTheService(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus not installed (scripts/ensure-deps.sh installs it)")
		}
		t.Skip("prometheus not installed")
	}
	amqpURL := brokertest.SharedURL(t)
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL})
	p.waitReady()

	dir := t.TempDir()
	target := strings.TrimPrefix(p.admin, "http://")
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: publisher\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	cmd := exec.Command(promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+listen)
	out, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	}()
	query := "http://" + listen + "/api/v1/query?query=" + url.QueryEscape(`publisher_connection_up{job="publisher"}`)
	poll.Within(t, waitLimit, "prometheus to have scraped publisher_connection_up", func() bool {
		resp, err := http.Get(query)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var r struct {
			Status string
			Data   struct {
				Result []struct {
					Value []any
				}
			}
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" || len(r.Data.Result) != 1 {
			return false
		}
		return r.Data.Result[0].Value[1] == "1"
	})
}
