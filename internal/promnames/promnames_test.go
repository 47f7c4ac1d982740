package promnames

import (
	"reflect"
	"strings"
	"testing"
)

func TestFromPromQL(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`up{job="publisher"} == 0`, []string{"up"}},
		{`publisher_ready{job=~"pub.*", instance!="x"} == bool 0`, []string{"publisher_ready"}},
		{`sum by (job, instance) (rate(publisher_messages_total{outcome!="confirmed"}[5m]))
		  / sum by (job, instance) (rate(publisher_messages_total[5m])) > 0.01`,
			[]string{"publisher_messages_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(publisher_publish_duration_seconds_bucket[$__rate_interval])))`,
			[]string{"publisher_publish_duration_seconds_bucket"}},
		{`sum(rate(a_total[5m])) without (instance) / on(job) group_left(version) b_info`,
			[]string{"a_total", "b_info"}},
		{`a * ignoring(x) group_right c`, []string{"a", "c"}},
		{`max_over_time(rate(x_total[5m])[30m:1m]) offset 1h`, []string{"x_total"}},
		{`x @ start() + y @ 1609746000 - z offset -5m`, []string{"x", "y", "z"}},
		{`label_replace(up, "dst", "$1", "src", "(.*)")`, []string{"up"}},
		{`count_values("version", build_info)`, []string{"build_info"}},
		{`topk(5, a) or bottomk(3, b) unless c and d`, []string{"a", "b", "c", "d"}},
		{`quantile(0.9, a) + avg(b) + stddev(c) + stdvar(d) + group(e) + min(f) + max(g) + count(h)`,
			[]string{"a", "b", "c", "d", "e", "f", "g", "h"}},
		{`{__name__="from_matcher", job="x"}`, []string{"from_matcher"}},
		{`{__name__=~"regex_.*"}`, nil},
		{`{"utf8.metric", job="x"}`, []string{"utf8.metric"}},
		{`1 + 2.5e-3 * 0x1F - .5 + Inf - NaN`, nil},
		{`0x1e-hexminus`, []string{"hexminus"}},
		{`vector(1)`, nil},
		{`atan2(a, b) > bool 1`, []string{"a", "b"}},
		{`rate(x[1h30m]) # comment with metric_name_in_comment`, []string{"x"}},
		{`a{l='single \' quote'} + b{l=` + "`raw`" + `}`, []string{"a", "b"}},
		{`rate (spaced_call [5m])`, []string{"spaced_call"}},
		{`ns:recorded:rate5m > 1`, []string{"ns:recorded:rate5m"}},
		{`x + x + x`, []string{"x"}},
		{`increase(publisher_supervision_restarts_total[10m]) > 5`, []string{"publisher_supervision_restarts_total"}},
	}
	for _, tt := range tests {
		got, err := FromPromQL(tt.expr)
		if err != nil {
			t.Errorf("FromPromQL(%q): %v", tt.expr, err)
			continue
		}
		if len(got) == 0 && len(tt.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("FromPromQL(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

func TestFromPromQLErrors(t *testing.T) {
	for _, expr := range []string{
		``,
		`   `,
		`rate(x[5m]`,
		`x)`,
		`x{job="a"`,
		`x{job}`,
		`x{job=a}`,
		`x{job="a}`,
		`x[5m`,
		`x}`,
		`x]`,
		`sum by (job x`,
		`x ; y`,
		`x $y`,
	} {
		if got, err := FromPromQL(expr); err == nil {
			t.Errorf("FromPromQL(%q) = %q, want an error", expr, got)
		}
	}
}

func TestBaseName(t *testing.T) {
	for in, want := range map[string]string{
		"publisher_publish_duration_seconds_bucket": "publisher_publish_duration_seconds",
		"publisher_publish_duration_seconds_sum":    "publisher_publish_duration_seconds",
		"publisher_publish_duration_seconds_count":  "publisher_publish_duration_seconds",
		"publisher_messages_total":                  "publisher_messages_total",
		"up":                                        "up",
		"_count":                                    "_count",
	} {
		if got := BaseName(in); got != want {
			t.Errorf("BaseName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFromDashboard(t *testing.T) {
	dash := `{
	  "panels": [
	    {"type": "timeseries", "targets": [{"expr": "sum by (outcome) (rate(publisher_messages_total[$__rate_interval]))"}]},
	    {"type": "row", "collapsed": true, "panels": [
	      {"targets": [{"expr": "publisher_ready{instance=~\"$instance\"}"}, {"expr": ""}]}
	    ]},
	    {"type": "text", "options": {"content": "expr is only a field name here"}}
	  ],
	  "templating": {"list": [{"query": "label_values(ignored_metric, instance)"}]}
	}`
	got, err := FromDashboard([]byte(dash))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"publisher_messages_total", "publisher_ready"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FromDashboard = %q, want %q", got, want)
	}

	if _, err := FromDashboard([]byte(`{"panels": [`)); err == nil {
		t.Error("invalid JSON: want an error")
	}
	_, err = FromDashboard([]byte(`{"panels": [{"targets": [{"expr": "rate(x[5m]"}]}]}`))
	if err == nil || !strings.Contains(err.Error(), "panels[0].targets[0]") {
		t.Errorf("bad expr: want an error naming its path, got %v", err)
	}
}

func TestFromRules(t *testing.T) {
	rules := `
groups:
  - name: example
    rules:
      - record: job:publisher_messages:rate5m
        expr: sum by (job) (rate(publisher_messages_total[5m]))
      - alert: Failing
        expr: job:publisher_messages:rate5m > 1 and on(job) publisher_ready == 1
        for: 5m
        labels: {severity: warning}
      - alert: AlwaysFiring
        expr: 1
`
	got, err := FromRules([]byte(rules))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"publisher_messages_total", "publisher_ready"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FromRules = %q, want %q", got, want)
	}

	for name, doc := range map[string]string{
		"no groups":   "rule_files: [rules.yml]\n",
		"bad yaml":    "groups: [\n",
		"bad expr":    "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x[5m]\n",
		"object expr": "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: {a: b}\n",
	} {
		if _, err := FromRules([]byte(doc)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}
