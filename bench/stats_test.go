package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	cases := []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, 7 * time.Millisecond},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 99, 4 * time.Millisecond},
		{ms(hundred...), 50, 50 * time.Millisecond},
		{ms(hundred...), 99, 99 * time.Millisecond},
		{ms(hundred...), 100, 100 * time.Millisecond},
		{ms(hundred...), 0.001, 1 * time.Millisecond},
	}
	for _, c := range cases {
		if got := percentile(c.in, c.p); got != c.want {
			t.Errorf("percentile(%d values, %v) = %v, want %v", len(c.in), c.p, got, c.want)
		}
	}
	p50, p99 := latencySummary(ms(5, 3, 9, 1, 7))
	if p50 != 5*time.Millisecond || p99 != 9*time.Millisecond {
		t.Errorf("latencySummary = %v, %v; want 5ms, 9ms", p50, p99)
	}
}

func TestParseProcStatCPU(t *testing.T) {
	// a command name with spaces and a ')' must not shift the fields
	stat := "4242 (pub lisher) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 350 125 0 0 20 0 9 0 100 0 0"
	got, err := parseProcStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if got != 475 {
		t.Errorf("ticks = %d, want 475", got)
	}
	if s := ticksToSeconds(got); s != 4.75 {
		t.Errorf("seconds = %v, want 4.75", s)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 x 1"} {
		if _, err := parseProcStatCPU(bad); err == nil {
			t.Errorf("parseProcStatCPU(%q): no error", bad)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tpublisher\nVmPeak:\t  900000 kB\nVmRSS:\t   22216 kB\nRssAnon:\t 10000 kB\n"
	got, err := parseVmRSS(status)
	if err != nil {
		t.Fatal(err)
	}
	if got != 22216*1024 {
		t.Errorf("VmRSS = %d, want %d", got, 22216*1024)
	}
	if _, err := parseVmRSS("Name:\tkthreadd\n"); err == nil {
		t.Error("no VmRSS line: no error")
	}
	if _, err := parseVmRSS("VmRSS:\t12 MB\n"); err == nil {
		t.Error("unexpected unit: no error")
	}
}

func TestRatios(t *testing.T) {
	rs := ratios(map[string]float64{modeService: 8000, modeRaw: 4000, modePipelined: 0, modeSpooled: 12000, rateSpooledE2E: 6000, modeBatch: 10000, modeStream: 5000, modeTraced: 7200,
		modeServiceKeyed: 7600, modeBatchKeyed: 9700})
	if len(rs) != 15 {
		t.Fatalf("%d ratios, want 15", len(rs))
	}
	if i, j := rs[10], rs[11]; !i.Valid || i.Value != 0.95 || !j.Valid || j.Value != 0.97 {
		t.Errorf("(i)/(a) = %+v, (j)/(f) = %+v; want 0.95, 0.97", i, j)
	}
	if h := rs[9]; !h.Valid || h.Value != 0.9 {
		t.Errorf("(h)/(a) = %+v, want 0.9", h)
	}
	if !rs[3].Valid || rs[3].Value != 1.5 {
		t.Errorf("(e)/(a) = %+v, want 1.5", rs[3])
	}
	if !rs[4].Valid || rs[4].Value != 0.75 {
		t.Errorf("(e) end-to-end/(a) = %+v, want 0.75", rs[4])
	}
	if rs := ratios(map[string]float64{modeSpooled: 12000}); rs[3].Valid || rs[4].Valid {
		t.Errorf("spooled ratios without mode service are valid: %+v", rs)
	}
	if !rs[0].Valid || rs[0].Value != 2 {
		t.Errorf("(a)/(b) = %+v, want 2", rs[0])
	}
	if rs[1].Valid {
		t.Errorf("(a)/(c) with a zero denominator is valid: %+v", rs[1])
	}
	if rs[2].Valid {
		t.Errorf("(a)/(d) without mgmt is valid: %+v", rs[2])
	}
	if rs[5].Valid || rs[6].Valid {
		t.Errorf("(f)/(c), (g)/(c) with a zero denominator are valid: %+v %+v", rs[5], rs[6])
	}
	if !rs[7].Valid || rs[7].Value != 2.5 || !rs[8].Valid || rs[8].Value != 1.25 {
		t.Errorf("(f)/(b) = %+v, (g)/(b) = %+v; want 2.5, 1.25", rs[7], rs[8])
	}
	rs = ratios(map[string]float64{modePipelined: 20000, modeBatch: 16000, modeStream: 17000})
	if !rs[5].Valid || rs[5].Value != 0.8 || !rs[6].Valid || rs[6].Value != 0.85 {
		t.Errorf("(f)/(c) = %+v, (g)/(c) = %+v; want 0.8, 0.85", rs[5], rs[6])
	}
	rs = ratios(map[string]float64{modePipelined: 10000, modeBest: 20000, modeBatch: 18000, modeStream: 19000})
	if !rs[12].Valid || rs[12].Value != 0.9 || !rs[13].Valid || rs[13].Value != 0.95 || !rs[14].Valid || rs[14].Value != 2 {
		t.Errorf("(f)/(c′) = %+v, (g)/(c′) = %+v, (c′)/(c) = %+v; want 0.9, 0.95, 2", rs[12], rs[13], rs[14])
	}
}

// Ratios round by round pair round k with round k, and their median is
// what a shared machine is compared by.
func TestRoundRatios(t *testing.T) {
	results := []*modeResult{
		{Mode: modeBest, RoundRates: []float64{20000, 10000, 20000}},
		{Mode: modeBatch, RoundRates: []float64{18000, 9000, 16000}},
		{Mode: modeStream, RoundRates: []float64{19000, 11000}}, // a round missing: no per-round values
	}
	rs := ratios(rates([]*modeResult{{Mode: modeBest, Rate: 16000}, {Mode: modeBatch, Rate: 14000}, {Mode: modeStream, Rate: 15000}}))
	setRoundRatios(rs, results)
	f := rs[12]
	if len(f.Rounds) != 3 || f.Rounds[0] != 0.9 || f.Rounds[1] != 0.9 || f.Rounds[2] != 0.8 || f.Median != 0.9 {
		t.Errorf("(f)/(c′) round by round = %+v, want 0.9 0.9 0.8, median 0.9", f)
	}
	if g := rs[13]; len(g.Rounds) != 0 || g.Median != 0 {
		t.Errorf("(g)/(c′) with unequal rounds = %+v, want none", g)
	}
	var buf bytes.Buffer
	writeRoundRatios(&buf, rs)
	if want := "(f)/(c′) batch/best pipelined"; !strings.Contains(buf.String(), want) || !strings.Contains(buf.String(), "0.90  (0.90 0.90 0.80)") {
		t.Errorf("round ratios:\n%s", buf.String())
	}
	if got := median([]float64{3, 1, 2, 10}); got != 2.5 {
		t.Errorf("median of 4 = %v, want 2.5", got)
	}
	if got := median(nil); got != 0 {
		t.Errorf("median of none = %v", got)
	}
}

func TestParsePipeSetting(t *testing.T) {
	p, err := parsePipeSetting(" 2x1024 ")
	if err != nil || p != (pipeSetting{channels: 2, window: 1024}) || p.String() != "2x1024" {
		t.Errorf("2x1024: %+v %v", p, err)
	}
	for _, bad := range []string{"", "2", "x4", "0x10", "2x0", "2x100001", "1001x1", "axb"} {
		if _, err := parsePipeSetting(bad); err == nil {
			t.Errorf("parsePipeSetting(%q): no error", bad)
		}
	}
	list, err := parsePipeSettings("1x512, 16x256,")
	if err != nil || len(list) != 2 || list[1] != (pipeSetting{16, 256}) {
		t.Errorf("list: %+v %v", list, err)
	}
	if list, err := parsePipeSettings(""); err != nil || list != nil {
		t.Errorf("empty list: %+v %v", list, err)
	}
}

func TestWriteSearch(t *testing.T) {
	var buf bytes.Buffer
	writeSearch(&buf, []searchResult{
		{Setting: "1x2048", RoundRates: []float64{21000, 23000}, Median: 22000},
		{Setting: "16x256", RoundRates: []float64{15000, 16000}, Median: 15500, Errors: 2},
	})
	out := buf.String()
	for _, want := range []string{"search for (c′)", "1x2048    22000  (21000 23000)", "16x256    15500  (15000 16000)  2 errors: not eligible"} {
		if !strings.Contains(out, want) {
			t.Errorf("search lacks %q:\n%s", want, out)
		}
	}
	if fmtLoads(nil) != "-" || fmtLoads([]float64{1.5}) != "1.50" || fmtLoads([]float64{2, 0.5, 1}) != "0.50–2.00" {
		t.Errorf("fmtLoads: %q %q %q", fmtLoads(nil), fmtLoads([]float64{1.5}), fmtLoads([]float64{2, 0.5, 1}))
	}
}

func TestWriteTable(t *testing.T) {
	cpu, batchCPU := 0.000125, 0.0000205
	results := []*modeResult{
		{Mode: modeService, Label: modeLabels[modeService], Conc: "64", Rate: 6000.4, Mean: 10660 * time.Microsecond, P50: 10 * time.Millisecond, P99: 45500 * time.Microsecond, ServiceCPUPerMsg: &cpu, LoadAvg: []float64{1.25, 3.5}},
		{Mode: modeRaw, Label: modeLabels[modeRaw], Conc: "64", Rate: 5000, P50: 12 * time.Millisecond, P99: 40 * time.Millisecond, Errors: 3},
		{Mode: modeMgmt, Label: modeLabels[modeMgmt], Conc: "64", Rate: 500, P50: 100 * time.Millisecond, P99: 200 * time.Millisecond},
		{Mode: modeSpooled, Label: modeLabels[modeSpooled], Conc: "64", Rate: 9000, P50: 5 * time.Millisecond, P99: 20 * time.Millisecond, ServiceCPUPerMsg: &cpu,
			Spool: &spoolResult{DrainSeconds: 3.25, Drained: true, EndToEndRate: 5400.4}},
		{Mode: modeBatch, Label: modeLabels[modeBatch], Conc: "8x100", Rate: 10000, P50: 80 * time.Millisecond, P99: 150 * time.Millisecond, ServiceCPUPerMsg: &batchCPU,
			LatencyOf: "request of 100 messages, sent to answer read", Samples: 1000},
		{Mode: modeStream, Label: modeLabels[modeStream], Conc: "4x1024", Rate: 7500, P50: 300 * time.Millisecond, P99: 600 * time.Millisecond,
			LatencyOf: "message, its line written to its result line read", Samples: 75000},
	}
	var buf bytes.Buffer
	if err := writeTable(&buf, results); err != nil {
		t.Fatal(err)
	}
	// compare with runs of blanks collapsed: the alignment is tabwriter's
	var lines []string
	for line := range strings.Lines(buf.String()) {
		lines = append(lines, strings.Join(strings.Fields(line), " "))
	}
	out := strings.Join(lines, "\n")
	for _, want := range []string{
		"mode conc msgs/s mean ms p50 ms p99 ms errors drain s e2e msgs/s load 1m",
		"(a) service HTTP 64 6000 10.66 10.00 45.50 0 - - 1.25–3.50",
		"(b) raw amqp091 64 5000 0.00 12.00 40.00 3 - -",
		"(d) mgmt API 64 500 0.00 100.00 200.00 0 - -",
		"(e) service spooled 64 9000 0.00 5.00 20.00 0 3.25 5400",
		"(a)/(b) service/raw 1.20",
		"(a)/(c) service/pipelined n/a",
		"(a)/(d) service/mgmt 12.00",
		"(e)/(a) spooled vs synchronous 1.50",
		"(e) end-to-end/(a) 0.90",
		"(a) service HTTP 125.0 - -",
		"(e) service spooled (per accepted msg, load+drain) 125.0 - -",
		"(f) service batch 8x100 10000 0.00 80.00 150.00 0 - -",
		"(g) service stream 4x1024 7500 0.00 300.00 600.00 0 - -",
		"(f) service batch: msgs/s counts messages, the latency columns are per request of 100 messages, sent to answer read (1000 samples)",
		"(g) service stream: msgs/s counts messages, the latency columns are per message, its line written to its result line read (75000 samples)",
		"(f)/(b) batch/raw 2.00",
		"(g)/(b) stream/raw 1.50",
		"(f)/(c) batch/pipelined n/a",
		"(f) service batch 20.5 - -",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-c", "8", "-modes", "raw,service", "-duration", "1s"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.c != 8 || len(cfg.modes) != 2 || cfg.modes[0] != modeRaw || cfg.duration != time.Second || !cfg.persistent || cfg.size != 256 {
		t.Errorf("unexpected config %+v", cfg)
	}
	if cfg.batchSize != 100 || cfg.batchConc != 8 || cfg.streams != 4 || cfg.streamWindow != 1024 {
		t.Errorf("batch and stream defaults: %+v", cfg)
	}
	if cfg.best != (pipeSetting{1, 2048}) || len(cfg.bestSearch) != 7 || cfg.bestSearchRounds != 2 {
		t.Errorf("best defaults: %+v %+v", cfg.best, cfg.bestSearch)
	}
	if cfg, err := parseFlags([]string{"-modes", "best", "-best", "4x512", "-best-search", ""}); err != nil || cfg.best != (pipeSetting{4, 512}) || cfg.bestSearch != nil {
		t.Errorf("-best 4x512 without a search: %+v %v", cfg, err)
	}
	cfg, err = parseFlags([]string{"-modes", "batch,stream", "-batch-size", "50", "-batch-c", "2", "-streams", "3", "-stream-window", "64"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.batchSize != 50 || cfg.batchConc != 2 || cfg.streams != 3 || cfg.streamWindow != 64 || len(cfg.modes) != 2 || cfg.modes[1] != modeStream {
		t.Errorf("batch and stream flags: %+v", cfg)
	}
	if _, err := parseFlags([]string{"-modes", "service", "-service-dir", "/nonexistent/dir", "-service-bin", "/bin/true"}); err != nil {
		t.Errorf("-service-bin makes -service-dir unused, got %v", err)
	}
	for _, bad := range [][]string{
		{"-modes", "nope"},
		{"-c", "0"},
		{"-mgmt-url", "http://guest:guest@10.0.0.1:15672"},
		{"-service-env", "FOO"},
		{"-service-env", "=1"},
		{"-http-client", "curl"},
		{"-spool-drain-timeout", "0"},
		{"-batch-size", "0"},
		{"-batch-c", "0"},
		{"-streams", "0"},
		{"-stream-window", "0"},
		{"-best", "2"},
		{"-best-search", "1x1,0x5"},
		{"-best-search-rounds", "0"},
		{"-modes", "spooled", "-spool-parent", "/nonexistent/dir"},
		{"-modes", "service", "-service-dir", "/nonexistent/dir"},
		{"extra"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q): no error", bad)
		}
	}
}

func TestWriteSpoolSummary(t *testing.T) {
	confirmed := 70000.0
	inQueue := int64(70000)
	r := &modeResult{Mode: modeSpooled, Label: modeLabels[modeSpooled], Spool: &spoolResult{
		LoadSeconds: 7, DrainSeconds: 3, Drained: true, Accepted: 70000, EndToEndRate: 7000,
		BrokerConfirmed: &confirmed, InQueue: &inQueue, PeakSpoolMsgs: 20000, PeakSpoolBytes: 8 << 20,
	}}
	var buf bytes.Buffer
	writeSpoolSummary(&buf, r)
	out := buf.String()
	for _, want := range []string{"not yet confirmed by the broker", "70000 accepted in 7.00s", "peak 20000 messages, 8.0 MiB", "drained in 3.00s",
		"end to end 7000 msgs/s", "broker confirmed 70000", "70000 in the queue"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	r.Spool.Drained = false
	buf.Reset()
	writeSpoolSummary(&buf, r)
	if !strings.Contains(buf.String(), "NOT drained") {
		t.Errorf("undrained summary:\n%s", buf.String())
	}
}

func TestNewLatencySplit(t *testing.T) {
	lat := []time.Duration{3 * time.Millisecond, 5 * time.Millisecond}
	if got := mean(lat); got != 4*time.Millisecond {
		t.Fatalf("mean = %v, want 4ms", got)
	}
	if got := mean(nil); got != 0 {
		t.Errorf("mean of nothing = %v, want 0", got)
	}
	s := newLatencySplit(mean(lat), 0.3, 100) // Publish: 3 ms mean
	if s == nil {
		t.Fatal("nil split")
	}
	if math.Abs(s.ClientMeanMs-4) > 1e-9 || math.Abs(s.PublishMeanMs-3) > 1e-9 || math.Abs(s.HTTPMeanMs-1) > 1e-9 {
		t.Errorf("split = %+v, want client 4, publish 3, http 1", *s)
	}
	if newLatencySplit(mean(lat), 0, 0) != nil {
		t.Error("a split without Publish samples")
	}
}
