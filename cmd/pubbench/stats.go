package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK) would
// need cgo).
const clockTicks = 100

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method; 0 for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

// mean returns the arithmetic mean of lat; 0 for an empty slice. In a closed
// loop of C workers it is what the rate follows: rate = C / mean.
func mean(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	return sum / time.Duration(len(lat))
}

// latencySummary sorts lat in place and returns its p50 and p99.
func latencySummary(lat []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(lat)
	return percentile(lat, 50), percentile(lat, 99)
}

// parseProcStatCPU returns utime+stime, in clock ticks, from the content of
// /proc/<pid>/stat. The command name (field 2) is in parentheses and may hold
// spaces and parentheses itself, so the fields are counted from the last ')'.
func parseProcStatCPU(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no ')' after the command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the command name, want at least 13", len(f))
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat: utime: %w", err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat: stime: %w", err)
	}
	return ut + st, nil
}

// ticksToSeconds converts clock ticks to seconds.
func ticksToSeconds(t uint64) float64 { return float64(t) / clockTicks }

// parseVmRSS returns VmRSS in bytes from the content of /proc/<pid>/status.
func parseVmRSS(status string) (int64, error) {
	for line := range strings.Lines(status) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("proc status: unexpected VmRSS line %q", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc status: VmRSS: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("proc status: no VmRSS line (process gone or a kernel thread)")
}

// fmtMs formats a duration as milliseconds with two decimals.
func fmtMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64)
}

// fmtRate formats messages per second without decimals.
func fmtRate(r float64) string { return strconv.FormatFloat(r, 'f', 0, 64) }

// ratio is one "(a)/(b)" line.
type ratio struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Valid bool    `json:"valid"`
}

// rateSpooledE2E is the key of mode spooled's end-to-end rate in the map
// ratios takes.
const rateSpooledE2E = modeSpooled + "_end_to_end"

// rates returns the modes' rates by mode, and mode spooled's end-to-end rate
// under rateSpooledE2E.
func rates(results []*modeResult) map[string]float64 {
	rate := map[string]float64{}
	for _, r := range results {
		rate[r.Mode] = r.Rate
		if r.Spool != nil {
			rate[rateSpooledE2E] = r.Spool.EndToEndRate
		}
	}
	return rate
}

// ratios returns (a)/(b), (a)/(c), (a)/(d), (e)/(a) and (e) end-to-end/(a)
// of the modes' rates; a ratio is invalid when either side is missing or its
// denominator is zero.
func ratios(rate map[string]float64) []ratio {
	out := make([]ratio, 0, 5)
	for _, d := range []struct{ label, num, den string }{
		{"(a)/(b) service/raw", modeService, modeRaw},
		{"(a)/(c) service/pipelined", modeService, modePipelined},
		{"(a)/(d) service/mgmt", modeService, modeMgmt},
		{"(e)/(a) spooled vs synchronous", modeSpooled, modeService},
		{"(e) end-to-end/(a)", rateSpooledE2E, modeService},
	} {
		a, okA := rate[d.num]
		b, okB := rate[d.den]
		r := ratio{Name: d.label}
		if okA && okB && b > 0 {
			r.Value, r.Valid = a/b, true
		}
		out = append(out, r)
	}
	return out
}

// writeTable prints the results table, the ratios and the CPU table.
func writeTable(w io.Writer, results []*modeResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "mode\tconc\tmsgs/s\tmean ms\tp50 ms\tp99 ms\terrors\tdrain s\te2e msgs/s\t\n")
	for _, r := range results {
		drain, e2e := "-", "-"
		if sp := r.Spool; sp != nil {
			drain = strconv.FormatFloat(sp.DrainSeconds, 'f', 2, 64)
			e2e = fmtRate(sp.EndToEndRate)
			if !sp.Drained {
				drain, e2e = ">"+drain, "<"+e2e
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t\n", r.Label, r.Conc, fmtRate(r.Rate), fmtMs(r.Mean), fmtMs(r.P50), fmtMs(r.P99), r.Errors, drain, e2e)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, r := range ratios(rates(results)) {
		if r.Valid {
			fmt.Fprintf(w, "%-31s %6.2f\n", r.Name, r.Value)
		} else {
			fmt.Fprintf(w, "%-31s %6s\n", r.Name, "n/a")
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
