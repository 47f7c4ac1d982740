package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// printReport prints rep as text on stdout: the header, the tables, what
// the service modes add, the memory measurement and the notes.
func printReport(rep *report) error {
	w := os.Stdout
	writeHeader(w, rep)
	writeSearch(w, rep.BestSearch)
	if err := writeTable(w, rep.Results); err != nil {
		return err
	}
	writeRoundRatios(w, rep.Ratios)
	fmt.Fprintln(w)
	writeServiceCPU(w, rep.Results)
	for _, r := range rep.Results {
		if s := r.Split; s != nil {
			fmt.Fprintf(w, "%s latency: mean %.2f ms per answer; %.2f ms of it inside the service's Publish (mailbox, broker, confirm), %.2f ms the HTTP hop both ways\n",
				r.Label, s.ClientMeanMs, s.PublishMeanMs, s.HTTPMeanMs)
		}
	}
	for _, r := range rep.Results {
		if sp := r.Spool; sp != nil {
			writeSpoolSummary(w, r)
		}
	}
	writeMemory(w, rep.Memory)
	if len(rep.Notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range rep.Notes {
			fmt.Fprintln(w, "  -", n)
		}
	}
	return nil
}

// writeHeader prints the machine and the parameters.
func writeHeader(w io.Writer, rep *report) {
	fmt.Fprintf(w, "machine: %s cpus (%s), %s RAM; broker RabbitMQ %s on Erlang %s, same machine\n",
		rep.Machine["cpus"], rep.Machine["cpu"], rep.Machine["memory"], orDash(rep.Machine["rabbitmq"]), orDash(rep.Machine["erlang"]))
	fmt.Fprintf(w, "params: c=%v size=%vB persistent=%v duration=%v x %v round(s) warmup=%v queue=%v (durable)\n",
		rep.Params["c"], rep.Params["size"], rep.Params["persistent"], rep.Params["duration"], rep.Params["rounds"], rep.Params["warmup"], rep.Params["queue"])
	fmt.Fprintf(w, "service: GOMAXPROCS=%v, PUBLISHER_CHANNELS=%v; HTTP client of the HTTP modes: %v\n\n",
		rep.Params["service_gomaxprocs"], channelsLabel(rep.Params["service_channels"]), rep.Params["http_client"])
}

// writeServiceCPU prints the service's CPU per message of each mode that
// measured it.
func writeServiceCPU(w io.Writer, results []*modeResult) {
	for _, r := range results {
		if r.ServiceCPUCores == nil {
			continue
		}
		if r.Spool != nil {
			fmt.Fprintf(w, "%s, service CPU: %.1f µs per accepted message, load and drain (%.2f cores busy meanwhile)\n",
				r.Label, *r.ServiceCPUPerMsg*1e6, *r.ServiceCPUCores)
		} else {
			fmt.Fprintf(w, "%s, service CPU: %.1f µs per confirmed message (%.2f cores busy during its mode)\n",
				r.Label, *r.ServiceCPUPerMsg*1e6, *r.ServiceCPUCores)
		}
	}
}

// writeMemory prints the memory measurement (nil: none).
func writeMemory(w io.Writer, m *memResult) {
	switch {
	case m == nil:
	case m.Skipped != "":
		fmt.Fprintf(w, "\nservice memory: not measured: %s\n", m.Skipped)
	default:
		fmt.Fprintf(w, "\nservice memory: RSS %s idle, %s holding %.0f messages (buffered+inflight; target %d), peak %s; Go heap in use %s, %.0f goroutines\n",
			fmtBytes(m.RSSIdleBytes), fmtBytes(m.RSSHeldBytes), m.Held, m.Messages, fmtBytes(m.RSSPeakBytes),
			fmtBytes(int64(m.HeapInuseBytes)), m.Goroutines)
		fmt.Fprintf(w, "  after the alarm was cleared: %d confirmed, %d failed, drained in %.1fs\n", m.Confirmed, m.Failed, m.DrainSeconds)
		if m.FailedSample != "" {
			fmt.Fprintf(w, "  a failure: %s\n", m.FailedSample)
		}
	}
}

// writeTable prints the results table, the ratios and the CPU table.
func writeTable(w io.Writer, results []*modeResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "mode\tconc\tmsgs/s\tmean ms\tp50 ms\tp99 ms\terrors\tdrain s\te2e msgs/s\tload 1m\t\n")
	for _, r := range results {
		drain, e2e := "-", "-"
		if sp := r.Spool; sp != nil {
			drain = strconv.FormatFloat(sp.DrainSeconds, 'f', 2, 64)
			e2e = fmtRate(sp.EndToEndRate)
			if !sp.Drained {
				drain, e2e = ">"+drain, "<"+e2e
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t\n", r.Label, r.Conc, fmtRate(r.Rate), fmtMs(r.Mean), fmtMs(r.P50), fmtMs(r.P99), r.Errors, drain, e2e, fmtLoads(r.LoadAvg))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		if r.Mode == modeBatch || r.Mode == modeStream || r.Mode == modeBatchKeyed {
			fmt.Fprintf(w, "%s: msgs/s counts messages, the latency columns are per %s (%d samples)\n", r.Label, r.LatencyOf, r.Samples)
		}
	}
	fmt.Fprintln(w)
	for _, r := range ratios(rates(results)) {
		if r.Valid {
			fmt.Fprintf(w, "%-32s %6.2f\n", r.Name, r.Value)
		} else {
			fmt.Fprintf(w, "%-32s %6s\n", r.Name, "n/a")
		}
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "CPU µs per confirmed msg\tservice\tpubbench\tbroker\t\n")
	for _, r := range results {
		label := r.Label
		if r.Spool != nil {
			label += " (per accepted msg, load+drain)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", label, fmtCPU(r.ServiceCPUPerMsg), fmtCPU(r.BenchCPUPerMsg), fmtCPU(r.BrokerCPUPerMsg))
	}
	return tw.Flush()
}

// writeSearch prints the search for mode (c′)'s setting (nothing without
// one).
func writeSearch(w io.Writer, res []searchResult) {
	if len(res) == 0 {
		return
	}
	fmt.Fprintln(w, "search for (c′), the fastest raw pipelined client (channels x window: median msgs/s of the rounds, then each round):")
	for _, r := range res {
		fmt.Fprintf(w, "  %-8s %6.0f  (%s)", r.Setting, r.Median, fmtFloats(r.RoundRates, 0))
		if r.Errors > 0 {
			fmt.Fprintf(w, "  %d errors: not eligible", r.Errors)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

// writeRoundRatios prints each ratio's per-round values and their median
// (the figure to compare on a shared machine).
func writeRoundRatios(w io.Writer, rs []ratio) {
	header := false
	for _, r := range rs {
		if len(r.Rounds) < 2 {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nratios round by round (each round's rates; median first):")
			header = true
		}
		fmt.Fprintf(w, "%-32s %6.2f  (%s)\n", r.Name, r.Median, fmtFloats(r.Rounds, 2))
	}
}

// fmtFloats formats v with prec decimals, space-separated.
func fmtFloats(v []float64, prec int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', prec, 64)
	}
	return strings.Join(s, " ")
}

// fmtLoads formats the load averages of a mode's runs: the only one, or the
// lowest and highest ("-" for none).
func fmtLoads(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	lo, hi := slices.Min(v), slices.Max(v)
	if lo == hi {
		return strconv.FormatFloat(lo, 'f', 2, 64)
	}
	return strconv.FormatFloat(lo, 'f', 2, 64) + "–" + strconv.FormatFloat(hi, 'f', 2, 64)
}

// writeSpoolSummary explains mode spooled's numbers, so nobody takes its
// acceptance rate for a delivery rate.
func writeSpoolSummary(w io.Writer, r *modeResult) {
	sp := r.Spool
	fmt.Fprintf(w, "\n%s: msgs/s counts 202 answers to \"Prefer: respond-async\" (durable on the service's disk, not yet confirmed by the broker).\n", r.Label)
	drained := fmt.Sprintf("drained in %.2fs after the load", sp.DrainSeconds)
	if !sp.Drained {
		drained = fmt.Sprintf("NOT drained %.2fs after the load (-spool-drain-timeout)", sp.DrainSeconds)
	}
	fmt.Fprintf(w, "  %d accepted in %.2fs of load (warm-up included); the spool (peak %.0f messages, %s) %s;\n",
		sp.Accepted, sp.LoadSeconds, sp.PeakSpoolMsgs, fmtBytes(int64(sp.PeakSpoolBytes)), drained)
	fmt.Fprintf(w, "  end to end %s msgs/s = accepted / (load + drain)", fmtRate(sp.EndToEndRate))
	if sp.BrokerConfirmed != nil {
		fmt.Fprintf(w, "; broker confirmed %.0f", *sp.BrokerConfirmed)
	}
	if sp.InQueue != nil {
		fmt.Fprintf(w, "; %d in the queue", *sp.InQueue)
	}
	fmt.Fprintln(w)
	if sp.Fsyncs != nil {
		fmt.Fprintf(w, "  spool group commits: %.0f fdatasyncs, mean %.2f ms, %.1f messages per fdatasync\n",
			*sp.Fsyncs, *sp.FsyncMeanSeconds*1e3, *sp.MsgsPerFsync)
	}
	if sp.SpoolParentTmpfs {
		fmt.Fprintf(w, "  the spool was on a tmpfs (%s): fsync cost nothing\n", sp.SpoolParent)
	}
}

// fmtMs formats a duration as milliseconds with two decimals.
func fmtMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64)
}

// fmtRate formats messages per second without decimals.
func fmtRate(r float64) string { return strconv.FormatFloat(r, 'f', 0, 64) }

// fmtCPU formats CPU seconds per message as microseconds; "-" when unknown.
func fmtCPU(s *float64) string {
	if s == nil {
		return "-"
	}
	return strconv.FormatFloat(*s*1e6, 'f', 1, 64)
}

// fmtBytes formats a byte count as MiB with one decimal.
func fmtBytes(b int64) string {
	return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// gomaxprocsLabel is -service-gomaxprocs as printed: 0 is Go's default.
func gomaxprocsLabel(n int) string {
	if n == 0 {
		return "default (" + strconv.Itoa(runtime.NumCPU()) + ")"
	}
	return strconv.Itoa(n)
}

// channelsLabel is -service-channels as printed: 0 is the service's default.
func channelsLabel(v any) string {
	if n, ok := v.(int); ok && n == 0 {
		return "default"
	}
	return fmt.Sprint(v)
}
